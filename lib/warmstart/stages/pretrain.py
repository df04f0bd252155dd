"""Stages ``scratch``, ``pretrain@<method>``, ``original`` and ``arm@<name>``: one study run each, ``data/runs/<name>``.

An arm (``study.arms``) is a swap method's model trained with some ``pretrain`` settings changed. The run's
training (both phases, the same schedule for every run, ``original``'s step scale) is
:func:`warmstart.train.study.train_run`, which the run-to-run spread also uses to train the same runs with
other seeds (``python -m warmstart.evaluate.seed_spread``).

Per run: ``data/runs/<name>/{init,phase1,phase2}`` (trainer out dirs) and
``data/logs/<name>/``: ``log.jsonl`` (both phases' step logs with global
``step``, cumulative ``tokens``/``bytes`` and a ``phase`` field) and ``run.json``. Details: ``reports/pretrain/<name>.json``;
headline: ``reports/metrics/pretrain/<name>.json``.
"""

from __future__ import annotations

from typing import Any

from warmstart.io import write_json
from warmstart.outputs import write_headline
from warmstart.stages.contract import SHARED, declared
from warmstart.train.launch import bpb_table
from warmstart.train.study import train_run

_COMMON = (
    *SHARED,
    "base.trust_remote_code",
    "vocab_swap.methods",
    "vocab_swap.eval_bytes",
    "pretrain",
    "study.arms",
    "corpus.extra_languages",  # a phase's mix may name an extra language
)
# scratch alone builds a model, padded like the swapped ones
PARAMS = {"scratch": (*_COMMON, "vocab_swap.pad_multiple"), "pretrain": _COMMON, "original": _COMMON, "arm": _COMMON}


def run(params: Any, name: str) -> dict[str, Any]:
    """One study run (``scratch``, ``original``, a swap method or an arm): its phases, log, ``run.json``,
    the final bits per byte and the headline metrics."""
    stage = name if name in PARAMS else "arm" if name in params.study.arms else "pretrain"
    params = declared(params, stage, PARAMS[stage])
    trained = train_run(params, name)
    info = trained.info
    bpb = bpb_table(trained.model, trained.tokenizer, params, info["seq_len"], params.vocab_swap.eval_bytes)
    keep = ("name", "kind", "step_scale", "tokens", "bytes", "final_loss", "mean_tokens_per_s", "mean_mfu", "seconds")
    write_json(
        params.report_path("pretrain", f"{name}.json"), {k: info[k] for k in keep} | {"final_bits_per_byte": bpb}
    )
    target, src = params.shared.target_lang, params.shared.source_lang
    return write_headline(
        params,
        f"pretrain/{name}",
        {
            "training_bytes": info["bytes"],
            "training_tokens": info["tokens"],
            "step_scale": info["step_scale"],
            "final_loss": info["final_loss"],
            f"final_bpb_{target}": bpb[target],
            f"final_bpb_{src}": bpb[src],
        },
    )
