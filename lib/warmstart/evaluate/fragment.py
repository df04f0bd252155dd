"""The evaluate stage's report fragment: its figures, paragraphs, tables, numbers and headline.

Built from the measurements (:func:`warmstart.evaluate.runs.evaluate_runs`, ``eval.json`` of
:func:`warmstart.evaluate.runs.metrics_json`) and the tables of :mod:`warmstart.evaluate.tables`. When more
than one seed was measured for this configuration (``make seed-spread``, :class:`SeedSpread`), the curves,
the heatmap and the bits-per-byte tables show the mean over seeds and its standard deviation beside the
single seed's numbers and intervals.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from warmstart.describe import fmt_ci, fmt_flops, fmt_num
from warmstart.evaluate import intervals as stats
from warmstart.evaluate.runs import read_log
from warmstart.evaluate.seed_spread import seed_checkpoints, spread_for
from warmstart.evaluate.tables import (
    covers,
    fmt_mean_sd,
    fmt_speedup_ci,
    plot_bpb_curves,
    plot_bpb_heatmap,
    plot_loss,
    seed_summary,
)
from warmstart.fragments import table

PROBE_KEYS = (
    "cloze_acc_target",
    "cloze_acc_norm_target",
    "cloze_acc_source",
    "cloze_acc_norm_source",
    "chrf",
    "masked_acc",
)


@dataclass(frozen=True)
class SeedSpread:
    """The run-to-run spread over the evaluation's runs, when it was measured for this configuration and covers
    every run and checkpoint of the evaluation; else one seed (``over`` None)."""

    seeds: list[int]  # the measured seeds; [] with one seed
    over: pd.DataFrame | None  # per (run, step) over seeds (:func:`warmstart.evaluate.tables.seed_summary`)
    by_step: pd.DataFrame | None  # ``over`` indexed by (run, step)
    final_step: pd.Series  # each run's last evaluated step
    seed: int  # shared.seed: the single seed's numbers

    @classmethod
    def of(cls, params: Any, ck: pd.DataFrame) -> SeedSpread:
        spread, _ = spread_for(params)
        seed_ck = seed_checkpoints(spread)
        over = seed_summary(seed_ck[seed_ck["run"].isin(set(ck["run"]))]) if covers(seed_ck, ck) else None
        seeds = list(spread["seeds"]) if over is not None else []
        by_step = over.set_index(["run", "step"]) if over is not None else None
        return cls(seeds, over, by_step, ck.groupby("run")["step"].max(), params.shared.seed)

    @property
    def n(self) -> str:
        """``"3 seeds"``, or ``""`` with one seed."""
        return f"{len(self.seeds)} seeds" if self.over is not None else ""

    def note(self) -> str:
        """The figures' caption sentence."""
        if self.over is None:
            return " One seed (shared.seed)."
        return (
            f" Mean over {len(self.seeds)} seeds ({', '.join(map(str, self.seeds))}; make seed-spread), "
            "band ± 1 standard deviation."
        )

    def caption(self) -> str:
        """The tables' caption sentence (no colon in it: the appendix names a table by its caption up to the
        first colon)."""
        if not self.n:
            return ""
        return (
            f" Mean ± std over {self.n} (the same run trained with seeds {', '.join(map(str, self.seeds))}, "
            f"make seed-spread); the bracketed values are seed {self.seed}'s."
        )

    def cells(self, run: str, role: str, step: Any = None) -> list[str]:
        """``[mean ± std]`` of a run's bits per byte at ``step`` (its final one by default); ``[]`` with one seed."""
        if self.by_step is None:
            return []
        r = self.by_step.loc[(run, int(self.final_step[run] if step is None else step))]
        return [fmt_mean_sd(r[f"bpb_{role}"], r[f"bpb_{role}_std"])]

    def columns(self, lab: Any, key: str) -> list[str]:
        return [f"{lab.column(key)}, mean ± std over {self.n}"] if self.n else []


def figures(runs: list[dict], ck: pd.DataFrame, out: Path, shared: Any, seeds: SeedSpread) -> list[dict[str, str]]:
    """Bits-per-byte curves, the per-checkpoint heatmap and (when logged) the training loss, with captions."""
    src, tgt = shared.source_lang, shared.target_lang
    logs = pd.concat([read_log(r) for r in runs], ignore_index=True) if runs else pd.DataFrame()
    over, note = seeds.over, seeds.note()
    figs = [
        {
            "path": str(plot_bpb_curves(ck, out / "bpb_curves.png", src, tgt, seeds=over)),
            "caption": "Held-out bits per byte against UTF-8 bytes of training text seen, one curve per run "
            "(markers: evaluated checkpoints; step 0 is the initialised model). Bytes, not tokens, so "
            "runs with different tokenizers share the x axis. Right: source language (forgetting)." + note,
        },
        {
            "path": str(plot_bpb_heatmap(ck, out / "bpb_heatmap.png", src, tgt, seeds=over)),
            "caption": "Bits per byte at every evaluated checkpoint (lower is better): one row per run, one column "
            "per checkpoint, labelled by the MB of training text seen; the colours span the trained "
            "checkpoints (step 0 saturates). The full table is in the appendix."
            + (note.replace("band", "each cell also prints") if over is not None else note),
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
    return figs


def paragraphs(params: Any, res: dict, metrics: dict) -> list[str]:
    """What was measured, how, and the intervals' meaning; the lowest run when there is one."""
    ev, src, tgt = params.evaluate, params.shared.source_lang, params.shared.target_lang
    chance, best, meth = res.get("cloze_chance"), metrics.get("best"), metrics.get("intervals") or {}
    paras = [
        f"Every run of the study evaluated on held-out test chapters ({tgt} target, {src} "
        f"source); bits per byte on the first {ev.eval_bytes:,} bytes of each language at "
        f"{'every tagged checkpoint' if ev.checkpoints == 'tagged' else 'the final checkpoint'}; "
        f"cloze, translation and masked-token probes at "
        f"{'every tagged checkpoint' if ev.probe_checkpoints == 'tagged' else 'the final checkpoint'}.",
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
            f"Lowest final {tgt} bits per byte: {best} "
            f"({fmt_ci(metrics['runs'][best]['bpb_target'], _ci(metrics, best, 'bpb_target'))}); "
            "the comparison table says which runs are distinguishable from it on this text."
        )
    return paras


def _ci(metrics: dict, run: str, key: str) -> Any:
    return (metrics["runs"].get(run) or {}).get(f"{key}_ci")


def _init_rows(metrics: dict, init: pd.DataFrame, seeds: SeedSpread) -> list[list]:
    count = {c: [f"{int(v):,}" if pd.notna(v) else "–" for v in init[c]] for c in ("aligned", "decomposed", "random")}
    return [
        [
            r["run"],
            *(count[c][i] for c in ("aligned", "decomposed", "random")),
            fmt_num(r["bpb_step0"]),
            fmt_ci(r["bpb_final"], _ci(metrics, r["run"], "bpb_target")),
            *seeds.cells(r["run"], "target"),
            fmt_speedup_ci(r["speedup"], _ci(metrics, r["run"], "speedup_vs_scratch")),
        ]
        for i, r in init.reset_index(drop=True).iterrows()
    ]


def _final_rows(metrics: dict, fin: pd.DataFrame, seeds: SeedSpread) -> list[list]:
    return [
        [
            r["run"],
            fmt_ci(r["bpb_target"], _ci(metrics, r["run"], "bpb_target")),
            *seeds.cells(r["run"], "target"),
            fmt_ci(r["bpb_source"], _ci(metrics, r["run"], "bpb_source")),
            *seeds.cells(r["run"], "source"),
        ]
        for _, r in fin.iterrows()
    ]


def _probe_rows(metrics: dict, fin: pd.DataFrame, probe_keys: list[str]) -> list[list]:
    return [
        [
            r["run"],
            *(
                fmt_ci(r[k], _ci(metrics, r["run"], k), 1 if k == "chrf" else 3) if pd.notna(r[k]) else "–"
                for k in probe_keys
            ),
        ]
        for _, r in fin.iterrows()
    ]


def _comparison_rows(metrics: dict) -> list[list]:
    vs = metrics.get("vs_lowest") or {}
    return [
        [name, fmt_ci(d["diff"], d.get("ci"), 3), {True: "yes", False: "no", None: "–"}[d.get("distinguishable")]]
        for name, d in (vs.get("runs") or {}).items()
    ]


def _step0_rows(metrics: dict) -> list[list]:
    yes = {True: "yes", False: "no", None: "–"}
    return [
        [d["run"], d["reference"], fmt_ci(d["diff"], d.get("ci"), 3), yes[d.get("distinguishable")]]
        for d in (metrics.get("step0_pairs") or {}).values()
    ]


def _arm_rows(metrics: dict) -> list[list]:
    ev_runs = metrics["runs"]
    return [
        [
            name,
            d["reference"],
            fmt_ci(d["target"]["diff"], d["target"].get("ci"), 3),
            fmt_ci(d["source"]["diff"], d["source"].get("ci"), 3) if "source" in d else "–",
            *(
                fmt_ci(ev_runs[n]["masked_acc"], _ci(metrics, n, "masked_acc"), 3)
                if "masked_acc" in ev_runs.get(n, {})
                else "–"
                for n in (name, d["reference"])
            ),
        ]
        for name, d in (metrics.get("arms") or {}).items()
    ]


def _checkpoint_rows(ck: pd.DataFrame, seeds: SeedSpread) -> list[list]:
    return [
        [
            r["run"],
            r["step"],
            r["phase"],
            f"{r['bytes'] / 1e6:.3f}",
            fmt_num(r["bpb_target"]),
            *seeds.cells(r["run"], "target", r["step"]),
            fmt_num(r["bpb_source"]),
            *seeds.cells(r["run"], "source", r["step"]),
        ]
        for _, r in ck.iterrows()
    ]


def _flops_rows(flops: pd.DataFrame) -> list[list]:
    return [
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


def tables(
    params: Any, res: dict, metrics: dict, init: pd.DataFrame, flops: pd.DataFrame, seeds: SeedSpread, lab: Any
) -> list[dict]:
    """Initialisation methods, final bits per byte, probes, the comparison with the lowest run, the study arms,
    every checkpoint (appendix) and the training FLOPs; ``lab``: the report's column labels
    (:class:`warmstart.report.labels.Labels` of the two languages)."""
    src, tgt = params.shared.source_lang, params.shared.target_lang
    ck, fin = res["checkpoints"], res["final"]
    probe_keys = [k for k in PROBE_KEYS if k in fin]
    chance = res.get("cloze_chance")
    comp_rows, arm_rows, step0_rows = _comparison_rows(metrics), _arm_rows(metrics), _step0_rows(metrics)
    vs = metrics.get("vs_lowest") or {}
    caption = seeds.caption()
    cols_init = [
        "run",
        lab.column("aligned"),
        lab.column("decomposed"),
        lab.column("random"),
        lab.column("bpb_step0"),
        lab.column("bpb_final"),
        *seeds.columns(lab, "bpb_final"),
        lab.column("speedup"),
    ]
    return [
        table(
            _init_rows(metrics, init, seeds),
            "Initialisation methods: aligned/decomposed/random rows of the new embedding matrix, target "
            "bits per byte at step 0 and after training, speed-up against scratch [95% intervals]." + caption,
            columns=cols_init,
        ),
        table(
            _final_rows(metrics, fin, seeds),
            "Final checkpoints: held-out bits per byte [95% bootstrap intervals]." + caption,
            columns=[
                "run",
                lab.column("bpb_target"),
                *seeds.columns(lab, "bpb_target"),
                lab.column("bpb_source"),
                *seeds.columns(lab, "bpb_source"),
            ],
        ),
        table(
            _probe_rows(metrics, fin, probe_keys),
            f"Final checkpoints: probes [95% intervals]; cloze chance level {chance or 0.25:.2f}, "
            "chrF on a 0–100 scale, masked-token accuracy of the runs that train with the hybrid objective and "
            "of the runs they start from." + (f" Probes are measured for seed {seeds.seed} only." if seeds.n else ""),
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
                    step0_rows,
                    f"Learned and default initialisations at step 0, before any training: difference in {tgt} "
                    "bits per byte to the heuristic they start from or the best one (run minus reference, paired "
                    "bootstrap over the same held-out texts) [95% interval].",
                    columns=["run", "reference", "difference (bits/byte)", "distinguishable"],
                )
            ]
            if step0_rows
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
            _checkpoint_rows(ck, seeds),
            "Bits per byte at every evaluated checkpoint." + caption.replace("bracketed values", "single values"),
            columns=[
                "run",
                "step",
                "phase",
                "MB seen",
                lab.column("bpb_target"),
                *seeds.columns(lab, "bpb_target"),
                lab.column("bpb_source"),
                *seeds.columns(lab, "bpb_source"),
            ],
            appendix=True,
        ),
        table(
            _flops_rows(flops),
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


def numbers(metrics: dict) -> dict[str, Any]:
    """The fragment's numbers: every run's final target and source bits per byte, each arm's difference to its
    reference, the lowest run."""
    ev_runs = metrics["runs"]
    out = {f"bpb_target.{k}": v.get("bpb_target") for k, v in ev_runs.items()}
    out.update({f"bpb_source.{k}": v.get("bpb_source") for k, v in ev_runs.items()})
    for name, d in (metrics.get("arms") or {}).items():
        out[f"arm_bpb_diff.{name}"] = d["target"]["diff"]
    if metrics.get("best"):
        out["best"] = metrics["best"]
    return out


def headline(metrics: dict) -> dict[str, Any]:
    """``reports/metrics/evaluate.json``: every run's final target bits per byte, the lowest run and its speed-up."""
    ev_runs, best = metrics["runs"], metrics.get("best")
    head = {f"final_bpb_{k}": v.get("bpb_target") for k, v in ev_runs.items()}
    if best:
        head |= {"best_run": best, "best_speedup_vs_scratch": ev_runs[best].get("speedup_vs_scratch")}
    return head
