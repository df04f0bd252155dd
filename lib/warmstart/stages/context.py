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

import time
from pathlib import Path
from typing import Any

from warmstart.context import finetune as ft
from warmstart.io import write_json, write_jsonl
from warmstart.outputs import write_headline
from warmstart.runs import adapted_run, derived_run
from warmstart.stages.contract import declared
from warmstart.train.launch import fresh_dir, launch, merge_logs, read_run

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
        "shared.source_lang",  # token_dir resolves the language of the documents view
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


def run_method(params: Any, method: str) -> dict[str, Any]:
    """Extend the adapted model with ``method`` (or ``short``), measure, fine-tune, measure again."""
    from transformers import AutoTokenizer

    from warmstart.bpb import first_bytes
    from warmstart.model import load_model

    params = declared(params, "context_run", PARAMS["context_run"])
    ft.check_method(method)
    t0 = time.perf_counter()
    c, L = params.context, params.pretrain.seq_len
    src_run = adapted_run(params, c.run)
    src = Path(read_run(params, src_run.name)["final"])
    r = derived_run("context", method)
    out = fresh_dir(r.dir(params))
    length = L if method == ft.SHORT else c.factor * L
    init = r.init_dir(params)
    ft.extend_or_copy(src, init, method, c.factor, L, c.options.get(method, {}))
    tok = AutoTokenizer.from_pretrained(init)
    lengths = ft.doubling_lengths(L, c.factor)
    test = first_bytes(ft.texts_by_document(params, "test"), c.eval_bytes)
    suite = ft.retrieval_suites(test, tok, lengths, c.suite, params.shared.seed)
    before = ft.measure(load_model(init), tok, params, lengths, test, suite)
    seed, trust = params.shared.seed, params.base.trust_remote_code
    launch(ft.finetune_config(init, ft.long_documents(params, tok), length, c.finetune, out, seed, trust))
    final = out / "finetune" / "final"
    after = ft.measure(load_model(final), tok, params, lengths, test, suite)
    log, _ = merge_logs([("finetune", out / "finetune")])
    fresh_dir(r.record_dir(params))
    write_jsonl(r.log(params), log)
    info = ft.run_record(params, r, src_run.name, src, length, init, final, log, len(tok), t0)
    write_json(r.record(params), info)
    detail = {**info, "before": before, "after": after, "lengths": lengths}
    write_json(params.report_path("context", f"{method}.json"), detail)
    return write_headline(params, f"context/{method}", ft.headline(info, before, after, lengths))


def run(params: Any, show: bool = False) -> dict[str, Any]:
    """Collect the testbed and the per-method runs: metrics, figures, fragment and card."""
    from warmstart.context.summary import collect

    params = declared(params, "context", PARAMS["context"])
    return collect(params, show=show)
