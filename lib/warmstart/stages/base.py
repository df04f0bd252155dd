"""Stage ``base``: the source model, ``data/models/base`` (a Hugging Face model dir with its tokenizer).

``base.source: tiny`` pretrains the tiny Llama of ``base.model`` on the
source-language corpus with the source tokenizer, through the project's
trainer; ``base.source: hf`` loads ``base.model_id`` (safetensors only,
``trust_remote_code`` only when params say so). Its step log is copied to
``data/logs/base/log.jsonl`` for the spike stage. Details:
``reports/base/base.json``; headline: ``reports/metrics/base.json``.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

from warmstart import fragments
from warmstart.describe import base_model, language
from warmstart.flops import flops_per_token
from warmstart.io import read_jsonl, write_json, write_jsonl
from warmstart.model import count_params, load_model
from warmstart.outputs import save_figure, write_headline
from warmstart.runs import BASE, base_model_dir
from warmstart.stages.contract import declared
from warmstart.train.checkpoint import export_checkpoint, list_checkpoints
from warmstart.train.launch import base_train_config, bpb_table, fresh_dir, launch, summarize_log

PARAMS = (
    "shared.seed",
    "shared.source_lang",
    "shared.target_lang",
    "shared.data_dir",
    "shared.reports_dir",
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


def plot(log: list[dict], path, model_id: str | None) -> None:
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    if log:
        df = pd.DataFrame(log).assign(ktokens=lambda d: d["tokens"] / 1e3)
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
        sns.lineplot(data=df, x="ktokens", y="loss", ax=axes[0])
        axes[0].set(title="Training loss", xlabel="training tokens (thousands)", ylabel="cross-entropy (nats/token)")
        sns.lineplot(data=df, x="ktokens", y="lr", ax=axes[1])
        axes[1].set(title="Learning rate", xlabel="training tokens (thousands)", ylabel="learning rate")
        for ax in axes:
            ax.xaxis.set_major_locator(plt.MaxNLocator(6))
        fig.tight_layout()
    else:  # a loaded HF model: no training log
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.text(0.5, 0.5, f"loaded {model_id}: not trained here", ha="center", va="center")
        ax.set_axis_off()
    save_figure(fig, path)


def run(params: Any) -> dict[str, Any]:
    """Build or load the base model; write its details, headline metrics, figure and report fragment."""
    from transformers import AutoTokenizer

    params = declared(params, "base", PARAMS)
    t0 = time.perf_counter()
    b = params.base
    out = fresh_dir(BASE.dir(params))
    model_dir = base_model_dir(params)
    if b.source == "hf":
        from warmstart.model import save_model

        model = load_model(b.model_id, trust_remote_code=b.trust_remote_code)
        tok = AutoTokenizer.from_pretrained(b.tokenizer_id or b.model_id, trust_remote_code=b.trust_remote_code)
        save_model(model, tok, model_dir)
        log: list[dict] = []
        write_json(out / "run.json", {"name": "base", "kind": "hf", "model_id": b.model_id})
        shutil.copytree(out, fresh_dir(BASE.record_dir(params)), dirs_exist_ok=True)
    else:
        launch(base_train_config(params, out))
        export_checkpoint(list_checkpoints(out / "checkpoints")[-1], model_dir)
        log = read_jsonl(out / "log.jsonl")
        write_jsonl(fresh_dir(BASE.record_dir(params)) / "log.jsonl", log)  # what the spike stage reads
        model = load_model(model_dir)
        tok = AutoTokenizer.from_pretrained(model_dir)
    seq_len = b.seq_len if b.source == "tiny" else min(1024, model.config.max_position_embeddings)
    src, tgt = params.shared.source_lang, params.shared.target_lang
    vb = bpb_table(model, tok, params, seq_len, params.vocab_swap.eval_bytes, split="val")
    n = count_params(model)
    details = {
        "source": b.source,
        "model": str(model_dir),
        "model_type": model.config.model_type,
        "architectures": model.config.architectures,
        "params": n,
        "vocab_size": len(tok),
        "flops_per_token": flops_per_token(model.config, seq_len),
        "val_bits_per_byte": vb,
        "steps": len(log) and log[-1]["step"],
        "tokens": len(log) and log[-1]["tokens"],
        **summarize_log(log),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(params.report_path("base", "base.json"), details)
    description = base_model(params).describe(language(src))  # from the record just written
    fig = params.report_path("figures", "base.png")
    plot(log, fig, b.model_id)
    rows = [
        ["model", description],
        ["parameters", f"{n:,}"],
        ["vocabulary", f"{len(tok):,}"],
        ["training tokens", f"{details['tokens']:,}"],
        [f"val bits/byte {src}", f"{vb[src]:.3f}"],
        [f"val bits/byte {tgt}", f"{vb[tgt]:.3f}"],
    ]
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
