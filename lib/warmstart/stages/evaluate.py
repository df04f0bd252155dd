"""Stage ``evaluate``: every run of the study at every step-tagged checkpoint (:mod:`warmstart.evaluate.runs`).

Details: ``reports/evaluate/`` (``eval.json`` with 95% intervals, ``swap_study.json``,
per-checkpoint and final tables, ``doc_nll.json`` (per-text NLL), figures); headline: ``reports/metrics/evaluate.json`` (final
target bits per byte per run, the best run and its speed-up over scratch).
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from warmstart.describe import fmt_ci, fmt_flops, fmt_num
from warmstart.evaluate import intervals as stats
from warmstart.evaluate.runs import evaluate_runs, intervals, load_runs, metrics_json, read_log
from warmstart.evaluate.seed_spread import seed_checkpoints, spread_for
from warmstart.evaluate.tables import (
    covers,
    flops_table,
    fmt_mean_sd,
    fmt_speedup_ci,
    init_table,
    plot_bpb_curves,
    plot_bpb_heatmap,
    plot_loss,
    seed_summary,
    swap_study,
)
from warmstart.fragments import table, write_fragment
from warmstart.io import write_json
from warmstart.outputs import write_headline
from warmstart.report.labels import Labels
from warmstart.stages.contract import declared

# corpus ... pretrain whole: the seed spread's fingerprint (warmstart.evaluate.seed_spread) reads them, to use the spread only
# when it was measured for this configuration
PARAMS = (
    "shared.seed",
    "shared.source_lang",
    "shared.target_lang",
    "shared.data_dir",
    "shared.reports_dir",
    "corpus",
    "tokenizer",
    "base",
    "vocab_swap",
    "pretrain",
    "study.arms",
    "evaluate",
)


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
    logs = pd.concat([read_log(r) for r in runs], ignore_index=True) if runs else pd.DataFrame()
    sh = params.shared
    src, tgt = sh.source_lang, sh.target_lang
    # more than one seed measured for this configuration (make seed-spread): curves and tables show mean and spread
    spread, _ = spread_for(params)
    seed_ck = seed_checkpoints(spread)
    # per (run, step) over seeds, for the evaluation's runs: one summary for the figures and the tables
    over = seed_summary(seed_ck[seed_ck["run"].isin(set(ck["run"]))]) if covers(seed_ck, ck) else None
    seeds_note = (
        f" Mean over {len(spread['seeds'])} seeds ({', '.join(map(str, spread['seeds']))}; make seed-spread), "
        "band ± 1 standard deviation."
        if over is not None
        else " One seed (shared.seed)."
    )
    figs = [
        {
            "path": str(plot_bpb_curves(ck, out / "bpb_curves.png", src, tgt, seeds=over)),
            "caption": "Held-out bits per byte against UTF-8 bytes of training text seen, one curve per run "
            "(markers: evaluated checkpoints; step 0 is the initialised model). Bytes, not tokens, so "
            "runs with different tokenizers share the x axis. Right: source language (forgetting)." + seeds_note,
        },
        {
            "path": str(plot_bpb_heatmap(ck, out / "bpb_heatmap.png", src, tgt, seeds=over)),
            "caption": "Bits per byte at every evaluated checkpoint (lower is better): one row per run, one column "
            "per checkpoint, labelled by the MB of training text seen; the colours span the trained "
            "checkpoints (step 0 saturates). The full table is in the appendix."
            + (seeds_note.replace("band", "each cell also prints") if over is not None else seeds_note),
        },
    ]
    lp = plot_loss(logs, out / "loss.png")
    if lp:
        figs.append(
            {
                "path": str(lp),
                "caption": "Training loss per logged step (nats per token of each run's own "
                "tokenizer, so levels are comparable only between runs with the same tokenizer). Dotted: "
                "phase 1 (embeddings only) → phase 2 (full model); dashed red: corpus hot-swaps.",
            }
        )
    ints = intervals(res["doc_nll"], fin, seed=sh.seed, pairs={n: a.init for n, a in params.study.arms.items()})
    metrics = metrics_json(res, init, ints)
    write_json(out / "eval.json", metrics)
    study = swap_study(init)
    write_json(out / "swap_study.json", study)

    ev_runs = metrics["runs"]

    def ci(run: str, key: str) -> Any:
        return (ev_runs.get(run) or {}).get(f"{key}_ci")

    count = {c: [f"{int(v):,}" if pd.notna(v) else "–" for v in init[c]] for c in ("aligned", "decomposed", "random")}
    # over seeds (when measured): every (run, step) and each run's final checkpoint
    by_step = over.set_index(["run", "step"]) if over is not None else None
    final_step = ck.groupby("run")["step"].max()

    def over_seeds(run: str, role: str, step: Any = None) -> list[str]:
        if by_step is None:
            return []
        r = by_step.loc[(run, int(final_step[run] if step is None else step))]
        return [fmt_mean_sd(r[f"bpb_{role}"], r[f"bpb_{role}_std"])]

    n_seeds = f"{len(spread['seeds'])} seeds" if over is not None else ""
    init_rows = [
        [
            r["run"],
            *(count[c][i] for c in ("aligned", "decomposed", "random")),
            fmt_num(r["bpb_step0"]),
            fmt_ci(r["bpb_final"], ci(r["run"], "bpb_target")),
            *over_seeds(r["run"], "target"),
            fmt_speedup_ci(r["speedup"], ci(r["run"], "speedup_vs_scratch")),
        ]
        for i, r in init.reset_index(drop=True).iterrows()
    ]
    final_rows = [
        [
            r["run"],
            fmt_ci(r["bpb_target"], ci(r["run"], "bpb_target")),
            *over_seeds(r["run"], "target"),
            fmt_ci(r["bpb_source"], ci(r["run"], "bpb_source")),
            *over_seeds(r["run"], "source"),
        ]
        for _, r in fin.iterrows()
    ]
    probe_keys = [
        k
        for k in (
            "cloze_acc_target",
            "cloze_acc_norm_target",
            "cloze_acc_source",
            "cloze_acc_norm_source",
            "chrf",
            "masked_acc",
        )
        if k in fin
    ]
    probe_rows = [
        [
            r["run"],
            *(fmt_ci(r[k], ci(r["run"], k), 1 if k == "chrf" else 3) if pd.notna(r[k]) else "–" for k in probe_keys),
        ]
        for _, r in fin.iterrows()
    ]
    lab = Labels(src, tgt)
    vs = metrics.get("vs_lowest") or {}
    comp_rows = [
        [name, fmt_ci(d["diff"], d.get("ci"), 3), {True: "yes", False: "no", None: "–"}[d.get("distinguishable")]]
        for name, d in (vs.get("runs") or {}).items()
    ]
    arm_rows = [
        [
            name,
            d["reference"],
            fmt_ci(d["target"]["diff"], d["target"].get("ci"), 3),
            fmt_ci(d["source"]["diff"], d["source"].get("ci"), 3) if "source" in d else "–",
            *(
                fmt_ci(ev_runs[n]["masked_acc"], ci(n, "masked_acc"), 3) if "masked_acc" in ev_runs.get(n, {}) else "–"
                for n in (name, d["reference"])
            ),
        ]
        for name, d in (metrics.get("arms") or {}).items()
    ]
    per_ck = [
        [
            r["run"],
            r["step"],
            r["phase"],
            f"{r['bytes'] / 1e6:.3f}",
            fmt_num(r["bpb_target"]),
            *over_seeds(r["run"], "target", r["step"]),
            fmt_num(r["bpb_source"]),
            *over_seeds(r["run"], "source", r["step"]),
        ]
        for _, r in ck.iterrows()
    ]
    flops_rows = [
        [
            r["run"],
            r["params"],
            r["flops_per_token"],
            r["tokens"],
            fmt_flops(r["train_flops"], per_s=False),
            fmt_num(r["seconds"], 1),
            fmt_num(r["tokens_per_s"], 0),
            fmt_flops(r["achieved_flops"]),
        ]
        for _, r in flops.iterrows()
    ]
    chance = res.get("cloze_chance")
    best = metrics.get("best")
    meth = metrics.get("intervals") or {}
    paras = [
        f"Every run of the study evaluated on held-out test chapters ({tgt} target, {src} "
        f"source); bits per byte on the first {params.evaluate.eval_bytes:,} bytes of each language at "
        f"{'every tagged checkpoint' if params.evaluate.checkpoints == 'tagged' else 'the final checkpoint'}; "
        f"cloze, translation and masked-token probes at "
        f"{'every tagged checkpoint' if params.evaluate.probe_checkpoints == 'tagged' else 'the final checkpoint'}.",
        f"Cloze: {res['cloze_items'].get('target', 0)} items per language, the true continuation of a held-out "
        f"paragraph against three endings from other held-out documents (chance {chance or 0.25:.2f}), scored by "
        "lm-evaluation-harness (acc: summed log-likelihood, acc./char: log-likelihood per character). Translation: "
        f"{res['pairs']} aligned paragraph pairs (same chapter and page, same paragraph count), NorMistral's "
        f"prompt, greedy decoding, chrF. Speed-up: training bytes scratch needs for its final target bpb, divided "
        "by the bytes a run needs to reach it (linear interpolation between checkpoints).",
        "Intervals (in brackets) are 95% intervals of evaluation-text noise: bits per byte and speed-ups bootstrap "
        f"the {meth.get('texts', {}).get('target', 'held-out')} held-out {meth.get('unit', 'text')}s "
        f"({stats.N_BOOT} resamples; paragraphs of one chapter are not independent, so the intervals are if "
        "anything too narrow); accuracies are Wilson intervals over the items, chrF a bootstrap over the pairs. "
        "They do not include run-to-run (seed) noise.",
    ]
    if best:
        paras.append(
            f"Lowest final {tgt} bits per byte: {best} ({fmt_ci(ev_runs[best]['bpb_target'], ci(best, 'bpb_target'))}); "
            "the comparison table says which runs are distinguishable from it on this text."
        )

    def seed_col(key: str) -> list[str]:
        return [f"{lab.column(key)}, mean ± std over {n_seeds}"] if n_seeds else []

    # no colon in it: the appendix names a table by its caption up to the first colon
    seed_caption = (
        f" Mean ± std over {n_seeds} (the same run trained with seeds {', '.join(map(str, spread['seeds']))}, "
        f"make seed-spread); the bracketed values are seed {sh.seed}'s."
        if n_seeds
        else ""
    )
    cols_init = [
        "run",
        lab.column("aligned"),
        lab.column("decomposed"),
        lab.column("random"),
        lab.column("bpb_step0"),
        lab.column("bpb_final"),
        *seed_col("bpb_final"),
        lab.column("speedup"),
    ]
    tables = [
        table(
            init_rows,
            "Initialisation methods: aligned/decomposed/random rows of the new embedding matrix, target "
            "bits per byte at step 0 and after training, speed-up against scratch [95% intervals]." + seed_caption,
            columns=cols_init,
        ),
        table(
            final_rows,
            "Final checkpoints: held-out bits per byte [95% bootstrap intervals]." + seed_caption,
            columns=[
                "run",
                lab.column("bpb_target"),
                *seed_col("bpb_target"),
                lab.column("bpb_source"),
                *seed_col("bpb_source"),
            ],
        ),
        table(
            probe_rows,
            f"Final checkpoints: probes [95% intervals]; cloze chance level {chance or 0.25:.2f}, "
            "chrF on a 0–100 scale, masked-token accuracy of the runs that train with the hybrid objective and "
            "of the runs they start from." + (f" Probes are measured for seed {sh.seed} only." if n_seeds else ""),
            columns=["run", *(lab.column(k) for k in probe_keys)],
        ),
        *(
            [
                table(
                    comp_rows,
                    f"Difference in final {tgt} bits per byte to the lowest run ({vs.get('reference')}), "
                    "paired bootstrap over the same held-out texts [95% interval]; distinguishable: the interval "
                    "excludes 0 (evaluation-text noise only, not seed noise).",
                    columns=["run", "difference (bits/byte)", "distinguishable"],
                )
            ]
            if comp_rows
            else []
        ),
        *(
            [
                table(
                    arm_rows,
                    "Study arms against the run they start from (study.arms: the same model and schedule, "
                    "some pretrain settings changed): paired difference in final bits per byte (arm minus reference, "
                    "bootstrap over the same held-out texts) and masked-token accuracy of both "
                    "[95% intervals, Wilson over the masked tokens].",
                    columns=[
                        "arm",
                        "reference",
                        f"Δ {tgt} bits/byte",
                        f"Δ {src} bits/byte",
                        "masked-token acc., arm",
                        "masked-token acc., reference",
                    ],
                )
            ]
            if arm_rows
            else []
        ),
        table(
            per_ck,
            "Bits per byte at every evaluated checkpoint." + seed_caption.replace("bracketed values", "single values"),
            columns=[
                "run",
                "step",
                "phase",
                "MB seen",
                lab.column("bpb_target"),
                *seed_col("bpb_target"),
                lab.column("bpb_source"),
                *seed_col("bpb_source"),
            ],
            appendix=True,
        ),
        table(
            flops_rows,
            "Theoretical training FLOPs (FLOPs per token × tokens, 6N + 12LHQT), wall time, median "
            "tokens/s of the step log and the achieved FLOP/s. MFU needs a stated peak: see the report's "
            "throughput section.",
            columns=[
                "run",
                "parameters",
                "FLOPs per token",
                "tokens",
                "training FLOPs",
                "wall time (s)",
                "tokens/s",
                "achieved FLOP/s",
            ],
        ),
    ]
    numbers = {f"bpb_target.{k}": v.get("bpb_target") for k, v in ev_runs.items()}
    numbers.update({f"bpb_source.{k}": v.get("bpb_source") for k, v in ev_runs.items()})
    for name, d in (metrics.get("arms") or {}).items():
        numbers[f"arm_bpb_diff.{name}"] = d["target"]["diff"]
    if best:
        numbers["best"] = best
    write_fragment(
        params.shared.reports_dir,
        "evaluate",
        60,
        "Evaluation",
        paras,
        tables,
        figs,
        numbers,
        seconds=time.perf_counter() - t0,
    )
    head = {f"final_bpb_{k}": v.get("bpb_target") for k, v in ev_runs.items()}
    if best:
        head |= {"best_run": best, "best_speedup_vs_scratch": ev_runs[best].get("speedup_vs_scratch")}
    return write_headline(params, "evaluate", head)
