"""Stages ``context_testbed``, ``context@<method>`` and ``context``: extending the context window.

Alfred-40B-1023 compared position interpolation, NTK-aware, NTK-by-parts, YaRN,
NTK-Margin and NTK-YaRN on retrieval tasks; Lucie-7B raised RoPE theta. Three
kinds of stage bring that comparison into the study (:mod:`warmstart.context`):

``context_testbed``
    The cheap, decisive testbed: a small Llama trained on tiny-vocabulary
    retrieval tasks at length ``L``, every method zero-shot and after a short
    fine-tune at ``factor x L``, exact match with binomial intervals
    (:func:`warmstart.context.testbed.run_testbed`). Details:
    ``reports/context/testbed.json``.
``context@<method>``
    The study's adapted model (``context.run``: the evaluation's best run, or a
    named run) extended with ``method`` to ``factor x L`` and fine-tuned briefly
    on long documents (the run ``context-<method>``). ``short`` is Alfred's
    "2K baseline": the same fine-tune tokens at the original length, nothing
    extended, which measures what the extension costs at short context. Before
    and after the fine-tune: long-document bits per byte at ``L, 2L, ..``, by
    position, and the text retrieval suite (:mod:`warmstart.context.retrieval`). Details:
    ``reports/context/<method>.json``; the run's log and ``run.json`` under
    ``data/logs/context-<method>``.
``context``
    Collects both into ``reports/metrics/context.json``, the report fragment
    and the extended model's card.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from warmstart.io import read_jsonl, write_json, write_jsonl
from warmstart.outputs import write_headline
from warmstart.runs import adapted_run, derived_run
from warmstart.stages.contract import declared
from warmstart.train.launch import fresh_dir, launch, merge_logs, read_run, summarize_log

_COMMON = (
    "shared.seed",
    "shared.target_lang",
    "shared.data_dir",
    "shared.reports_dir",
    "vocab_swap.methods",
    "study.arms",
    "pretrain.seq_len",
    "base.trust_remote_code",
)
PARAMS = {
    "context_testbed": ("shared.seed", "shared.data_dir", "shared.reports_dir", "context.testbed"),
    "context_run": (
        *_COMMON,
        "context.run",
        "context.factor",
        "context.options",
        "context.finetune",
        "context.eval_bytes",
        "context.position_buckets",
        "context.suite",
    ),
    "context": (*_COMMON, "context.run", "context.methods", "context.factor", "context.testbed"),
}
SHORT = "short"  # the pseudo-method: fine-tune at the trained length, nothing extended (Alfred's 2K baseline)


def _texts_by_document(params: Any, split: str) -> list[str]:
    """The target corpus' paragraphs joined per document, in order: the long documents."""
    docs: dict[str, list[str]] = defaultdict(list)
    for rec in read_jsonl(params.path("corpus", params.shared.target_lang, f"{split}.jsonl")):
        docs[rec.get("doc") or rec["id"]].append(rec["text"])
    return ["\n\n".join(parts) for parts in docs.values()]


def run_testbed(params: Any) -> dict[str, Any]:
    """The retrieval testbed: train at ``L``, every method zero-shot and fine-tuned at ``factor x L``."""
    from warmstart.context.testbed import run_testbed as testbed
    from warmstart.context.testbed_config import TestbedConfig

    params = declared(params, "context_testbed", PARAMS["context_testbed"])
    cfg = TestbedConfig(**{"seed": params.shared.seed, **params.context.testbed})
    out = fresh_dir(params.path("context", "testbed"))
    result = testbed(cfg, out)
    write_json(params.report_path("context", "testbed.json"), result)
    return result


def _measure(model: Any, tok: Any, params: Any, lengths: list[int], texts: list[str], suite: list | None) -> dict:
    from warmstart.context.measure import bpb_by_length, bpb_by_position
    from warmstart.context.retrieval import score_suite

    c = params.context
    # up to 4 windows of the longest length (fewer when the test text is short, e.g. the smoke profile)
    n_tok = sum(len(tok(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)
    windows = min(4, (n_tok - 1) // lengths[-1])
    if windows < 1:
        raise ValueError(
            f"context.eval_bytes: the test text gives {n_tok} tokens, fewer than one window of {lengths[-1]}"
        )
    out: dict[str, Any] = {
        "bpb_by_length": {str(k): v for k, v in bpb_by_length(model, tok, texts, lengths, n_windows=windows).items()},
        "bpb_by_position": bpb_by_position(model, tok, texts, lengths[-1], c.position_buckets, n_windows=windows),
    }
    if suite is not None:
        out["suite"] = {
            str(n): score_suite(model, tok, items, batch_size=c.suite.batch_size) for n, items in suite if items
        }
    return out


def run_method(params: Any, method: str) -> dict[str, Any]:
    """Extend the adapted model with ``method`` (or ``short``), measure, fine-tune, measure again."""
    from transformers import AutoTokenizer

    from warmstart.bpb import first_bytes
    from warmstart.context.retrieval import build_suite
    from warmstart.context.rope_scaling import METHODS, extend_dir
    from warmstart.model import load_model
    from warmstart.train.config import TrainConfig

    params = declared(params, "context_run", PARAMS["context_run"])
    if method != SHORT and method not in METHODS:
        raise ValueError(f"context.methods: unknown method {method!r}; known: {', '.join([*METHODS, SHORT])}")
    t0 = time.perf_counter()
    c, L = params.context, params.pretrain.seq_len
    src_run = adapted_run(params, c.run)
    src = Path(read_run(params, src_run.name)["final"])
    r = derived_run("context", method)
    out = fresh_dir(r.dir(params))
    length = L if method == SHORT else c.factor * L
    init = r.init_dir(params)
    if method == SHORT:
        shutil.copytree(src, init)
    else:
        extend_dir(src, init, method, c.factor, L, **c.options.get(method, {}))
    tok = AutoTokenizer.from_pretrained(init)
    lengths = [L * k for k in range(1, c.factor + 1) if k == 1 or (k & (k - 1)) == 0]  # L, 2L, 4L, ...
    test = first_bytes(_texts_by_document(params, "test"), c.eval_bytes)
    # a task whose smallest item does not fit a length is left out there (with a warning), not failed
    suite = [
        (n, build_suite(test, tok, n, c.suite.items, params.shared.seed, tasks=list(c.suite.tasks), on_short="skip"))
        for n in lengths
    ]
    before = _measure(load_model(init), tok, params, lengths, test, suite)
    train_file = out / "long_train.jsonl"
    write_jsonl(train_file, ({"text": t} for t in _texts_by_document(params, "train")))
    f = c.finetune
    cfg = TrainConfig(
        model_path=str(init),
        tokenizer_path=str(init),
        train_files={"long": [str(train_file)]},
        seq_len=length,
        micro_batch=max(1, f.tokens_per_step // length),
        steps=f.steps,
        lr=f.lr,
        warmup_steps=f.warmup_steps,
        lr_schedule=f.lr_schedule,
        min_lr_ratio=f.min_lr_ratio,
        weight_decay=f.weight_decay,
        out_dir=str(out / "finetune"),
        log_every=f.log_every,
        seed=params.shared.seed,
        keep_last=1,
        trust_remote_code=params.base.trust_remote_code,
    )
    launch(cfg)
    final = out / "finetune" / "final"
    after = _measure(load_model(final), tok, params, lengths, test, suite)
    log, _ = merge_logs([("finetune", out / "finetune")])
    fresh_dir(r.record_dir(params))
    write_jsonl(r.log(params), log)
    model_config = json.loads((final / "config.json").read_text())
    info = {
        "name": r.name,
        "kind": r.kind,
        "method": method,
        "source_run": src_run.name,
        "source_model": str(src),
        "trained_len": L,
        "length": length,
        "factor": 1 if method == SHORT else c.factor,
        "options": c.options.get(method, {}),
        "init": str(init),
        "final": str(final),
        "log": str(r.log(params)),
        "tokens": log[-1]["tokens"] if log else 0,
        "bytes": log[-1]["bytes"] if log else 0,
        "rope_parameters": model_config.get("rope_parameters"),
        "model_config": model_config,
        "vocab_size": len(tok),
        **summarize_log(log),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(r.record(params), info)
    detail = {**info, "before": before, "after": after, "lengths": lengths}
    write_json(params.report_path("context", f"{method}.json"), detail)
    head = {"method": method, "length": length, "finetune_tokens": info["tokens"]}
    for when, m in (("zeroshot", before), ("finetuned", after)):
        for n in (lengths[0], lengths[-1]):
            head[f"{when}_bpb_{n}"] = m["bpb_by_length"][str(n)]
    head[f"finetuned_suite_mean_{lengths[-1]}"] = after["suite"].get(str(lengths[-1]), {}).get("normalised_mean")
    return write_headline(params, f"context/{method}", head)


def run(params: Any, show: bool = False) -> dict[str, Any]:
    """Collect the testbed and the per-method runs: metrics, figures, fragment and card."""
    from warmstart.context.summary import collect

    params = declared(params, "context", PARAMS["context"])
    return collect(params, show=show)
