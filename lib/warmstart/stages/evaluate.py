"""Stage ``evaluate``: every run of the study at every step-tagged checkpoint (:mod:`warmstart.evaluate.runs`).

Details: ``reports/evaluate/`` (``eval.json`` with 95% intervals, ``swap_study.json``,
per-checkpoint and final tables, ``doc_nll.json`` (per-text NLL), ``replay.json`` (forgetting, source replay,
annealing: :mod:`warmstart.evaluate.replay`), ``harness.json`` (lm-evaluation-harness tasks named in
``evaluate.lm_eval_tasks``, when any), figures); headlines: ``reports/metrics/evaluate.json`` (final target bits
per byte per run, the best run and its speed-up over scratch) and ``reports/metrics/replay.json``. The tables and
figures are :mod:`warmstart.evaluate.tables`, the report fragment's words :mod:`warmstart.evaluate.fragment`.
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from warmstart.evaluate import replay
from warmstart.evaluate.fragment import SeedSpread, figures, headline, numbers, paragraphs, tables
from warmstart.evaluate.runs import evaluate_runs, intervals, load_runs, metrics_json, step0_pairs
from warmstart.evaluate.seed_spread import STUDY_KEYS, spread_for
from warmstart.evaluate.tables import flops_table, init_table, swap_study
from warmstart.fragments import write_fragment
from warmstart.io import write_json
from warmstart.outputs import write_headline
from warmstart.report.labels import Labels
from warmstart.stages.contract import SHARED, declared

# STUDY_KEYS (corpus ... pretrain whole, study.arms): the seed spread's fingerprint (warmstart.evaluate.seed_spread) reads them, to use the spread only
# when it was measured for this configuration
PARAMS = (*SHARED, *STUDY_KEYS, "evaluate")


def run(params: Any, progress: bool = True) -> dict[str, Any]:
    """Evaluate every run that exists; write reports/evaluate/*, the headline metrics and the report fragment."""
    params = declared(params, "evaluate", PARAMS)
    t0 = time.perf_counter()
    runs = load_runs(params)
    res = evaluate_runs(params, runs, progress=progress)
    out = params.report_path("evaluate")
    out.mkdir(parents=True, exist_ok=True)
    ck, fin = res["checkpoints"], res["final"]
    ck.to_csv(out / "checkpoints.csv", index=False)
    fin.to_csv(out / "final.csv", index=False)
    pd.DataFrame(res["translations"]).to_csv(out / "translations.csv", index=False)
    write_json(out / "doc_nll.json", res["doc_nll"])
    init = init_table(runs, ck, params)
    init.to_csv(out / "init.csv", index=False)
    flops = flops_table(runs)
    flops.to_csv(out / "flops.csv", index=False)
    # more than one seed measured for this configuration (make seed-spread): curves and tables show mean and spread
    seeds = SeedSpread.of(params, ck)
    figs = figures(runs, ck, out, params.shared, seeds)
    arms = {n: a.init for n, a in params.study.arms.items()}
    vs = params.vocab_swap
    at0 = step0_pairs(list(vs.methods), vs.tokdistil.start, init)
    ints = intervals(res["doc_nll"], fin, seed=params.shared.seed, pairs=arms, step0_pairs=at0)
    metrics = metrics_json(res, init, ints)
    write_json(out / "eval.json", metrics)
    write_json(out / "swap_study.json", swap_study(init, metrics.get("step0_pairs")))
    if res.get("harness"):
        write_json(out / "harness.json", res["harness"])
    src, tgt = params.shared.source_lang, params.shared.target_lang
    rep = replay.replay_study(params, res["doc_nll"], [r["name"] for r in runs], spread=spread_for(params)[0])
    write_json(out / "replay.json", rep)
    rep_fig = replay.figure(rep, fin, out / "replay.png", src, tgt)
    rep_numbers, rep_labels = replay.numbers(rep)
    write_fragment(
        params.shared.reports_dir,
        "evaluate",
        60,
        "Evaluation",
        paragraphs(params, res, metrics) + replay.paragraphs(rep, src),
        tables(params, res, metrics, init, flops, seeds, Labels(src, tgt)) + replay.tables(rep, metrics["runs"], src),
        figs + ([rep_fig] if rep_fig else []),
        numbers(metrics) | rep_numbers,
        seconds=time.perf_counter() - t0,
        findings=replay.findings(rep, src) or None,
        labels=rep_labels,
    )
    write_headline(params, "replay", replay.headline(rep))
    # one key per run, the best run and its speed-up: the study's size sets it, not the 12 of a stage's summary
    return write_headline(params, "evaluate", headline(metrics), max_keys=len(metrics["runs"]) + 2)
