"""Stage ``base``: the source model, ``data/models/base`` (a Hugging Face model dir with its tokenizer).

``base.source: tiny`` pretrains the tiny Llama of ``base.model`` on the
source-language corpus with the source tokenizer, through the project's
trainer; ``base.source: hf`` loads ``base.model_id`` (safetensors only,
``trust_remote_code`` only when params say so). Its step log is copied to
``data/logs/base/log.jsonl`` for the spike stage. Details:
``reports/base/base.json``; headline: ``reports/metrics/base.json``.
"""

from __future__ import annotations

import time
from typing import Any

from warmstart import fragments
from warmstart.describe import base_model, language
from warmstart.io import write_json
from warmstart.outputs import write_headline
from warmstart.runs import BASE, base_model_dir
from warmstart.stages.contract import SHARED, declared
from warmstart.train.base_model import base_details, base_rows, build_base, plot_training
from warmstart.train.launch import bpb_table, fresh_dir

PARAMS = (
    *SHARED,
    "base.source",
    "base.model_id",
    "base.tokenizer_id",
    "base.trust_remote_code",
    "base.model",
    "base.seq_len",
    "base.micro_batch",
    "base.grad_accum",
    "base.optim",
    "base.checkpoint_every",
    "base.log_every",
    "vocab_swap.eval_bytes",
)


def run(params: Any) -> dict[str, Any]:
    """Build or load the base model; write its details, headline metrics, figure and report fragment."""
    params = declared(params, "base", PARAMS)
    t0 = time.perf_counter()
    b = params.base
    out = fresh_dir(BASE.dir(params))
    model_dir = base_model_dir(params)
    model, tok, log = build_base(params, out, model_dir)
    seq_len = b.seq_len if b.source == "tiny" else min(1024, model.config.max_position_embeddings)
    src, tgt = params.shared.source_lang, params.shared.target_lang
    vb = bpb_table(model, tok, params, seq_len, params.vocab_swap.eval_bytes, split="val")
    details = base_details(model, tok, model_dir, b.source, seq_len, vb, log, t0)
    write_json(params.report_path("base", "base.json"), details)
    description = base_model(params).describe(language(src))  # from the record just written
    fig = params.report_path("figures", "base.png")
    plot_training(log, fig, b.model_id)
    n, rows = details["params"], base_rows(description, details, src, tgt)
    fragments.write_fragment(
        params.shared.reports_dir,
        "base",
        30,
        "Base model",
        paragraphs=[
            f"The source model: {description}. Bits per byte on the held-out val split; the "
            f"{tgt} number is the starting point the study improves on."
        ],
        tables=[fragments.table(rows, "The base model", columns=["quantity", "value"])],
        figures=[{"path": str(fig), "caption": "Base-model pretraining: loss and learning rate against tokens."}],
        numbers={f"val_bpb.{k}": v for k, v in vb.items()} | {"params": n},
        seconds=details["seconds"],
    )
    return write_headline(
        params,
        "base",
        {
            "params": n,
            "vocab_size": len(tok),
            "training_tokens": details["tokens"] or 0,
            f"val_bpb_{src}": vb[src],
            f"val_bpb_{tgt}": vb[tgt],
        },
    )
