"""Throughput in the report: tokens/s and achieved FLOP/s per run, and MFU only against a stated, reliable peak.

:func:`throughput_analysis` applies :func:`warmstart.flops.throughput` to every run's log against the peak
the report stage measured (a run's own recorded ``peak`` wins) and checks the study for a shared machine;
:func:`mfu_reasons` says why MFU is not stated; :func:`throughput_section` is the report's section.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from warmstart.describe import duration, fmt_flops, join_words


def throughput_analysis(logs: Mapping[str, Mapping], peak: Mapping | None) -> dict[str, Any]:
    """Per run :func:`warmstart.flops.throughput` against ``peak`` (a run's own ``peak`` record wins), with the
    shared-machine check across the study; ``{"runs": {name: throughput}, "limitation": str | None, ...}``."""
    from warmstart.flops import TOLERANCE, recorded_peaks, throughput

    study_peaks = [p for r in logs.values() for p in recorded_peaks(r["log"], r.get("flops_per_token") or 0)]
    runs = {
        name: throughput(r["log"], r.get("flops_per_token"), r.get("peak") or peak, study_peaks=study_peaks)
        for name, r in logs.items()
    }
    stated = [n for n, t in runs.items() if t["mfu_stated"] is not None]
    logged = {n: t["logged_mfu"] for n, t in runs.items() if t.get("logged_mfu") is not None}
    out = {
        "runs": runs,
        "stated": stated,
        "logged": logged,
        "study_peaks": study_peaks,
        "peak": peak,
        "tolerance": TOLERANCE,
        "run_seconds": {n: r.get("seconds") for n, r in logs.items() if r.get("seconds")},
    }
    out["why"] = mfu_reasons(out)
    out["limitation"] = None
    if runs and len(stated) < len(runs):
        achieved = [t["achieved_flops"] for t in runs.values() if t["achieved_flops"]]
        lo_hi = (fmt_flops(min(achieved)), fmt_flops(max(achieved))) if achieved else None
        rate = (
            ""
            if not lo_hi
            else f" ({lo_hi[0]})"
            if lo_hi[0] == lo_hi[1]
            else f" ({lo_hi[0].split()[0]}–{lo_hi[1]})"
            if lo_hi[0].split()[1] == lo_hi[1].split()[1]
            else f" ({lo_hi[0]}–{lo_hi[1]})"
        )
        which = "for any run" if not stated else f"for {len(runs) - len(stated)} of {len(runs)} runs"
        out["limitation"] = (
            f"Throughput: MFU is not stated {which}: {out['why'][0] if out['why'] else 'no reliable peak'}. "
            f"Tokens/s and achieved FLOP/s{rate} are reported instead."
        )
    return out


def mfu_reasons(tp: Mapping[str, Any]) -> list[str]:
    """Why MFU is not stated, study-level reasons first (the peak, the runs' own peaks), then per run."""
    runs = tp["runs"]
    flags = {n: t.get("flags") or {} for n, t in runs.items()}
    out = []
    peak = tp.get("peak") or {}
    if any("peak_spread" in f for f in flags.values()):
        out.append(
            f"the peak measured for this report spread {100 * peak.get('spread', 0):.1f}% over "
            f"{peak.get('rounds')} timings (tolerance {100 * tp['tolerance']:.0f}%)"
        )
    sp = tp.get("study_peaks") or []
    if any("study_peaks_spread" in f for f in flags.values()):
        out.append(f"the peaks the trainer measured at each launch ranged {fmt_flops(min(sp))}–{fmt_flops(max(sp))}")
    if out:
        out[0] = out[0] + ("" if len(out) == 1 else ", and " + out.pop(1)) + ": the machine was shared"
    if not peak.get("flops"):
        out.append("no stated peak")
    imp = [n for n, f in flags.items() if "impossible" in f]
    if imp:
        out.append(
            f"against that peak, MFU would exceed 100% for {join_words(imp) if len(imp) < 4 else f'{len(imp)} runs'}"
        )
    step = {n: f["step_spread"] for n, f in flags.items() if "step_spread" in f}
    if step:
        out.append(
            "step throughput varied more than the tolerance for "
            + ", ".join(f"{n} ({100 * v:.0f}%)" for n, v in step.items())
        )
    own = {n: f["own_peaks_spread"] for n, f in flags.items() if "own_peaks_spread" in f}
    if own:
        out.append(
            "the peaks a run measured for itself varied for "
            + ", ".join(f"{n} ({100 * v:.0f}%)" for n, v in own.items())
        )
    return out


def throughput_section(tp: Mapping[str, Any], logs: Mapping[str, Mapping]) -> dict:
    """Tokens/s, achieved FLOP/s and (only when it can be stated) MFU per run, as a report section."""
    peak, tol = tp.get("peak"), tp["tolerance"]
    rows = []
    for name, t in tp["runs"].items():
        iqr = t.get("tokens_per_s_iqr")
        rows.append(
            [
                name,
                duration(logs[name].get("seconds")) or "–",
                t["records"],
                f"{t['tokens_per_s']:,.0f}" if t["tokens_per_s"] else "–",
                f"{iqr[0]:,.0f}–{iqr[1]:,.0f}" if iqr else "–",
                f"{100 * t['step_spread']:.1f}%" if t["step_spread"] is not None else "–",
                fmt_flops(t["achieved_flops"]),
                f"{100 * t['mfu_stated']:.1f}%" if t["mfu_stated"] is not None else "not stated",
            ]
        )
    paras = [
        "Throughput from each run's step log (the first record, with start-up, left out): median tokens per second "
        "and the achieved FLOP/s, tokens/s × training FLOPs per token (6N + 12LHQT, warmstart.flops). MFU, the "
        "achieved FLOP/s over the hardware's peak, is stated only against a stated peak: a GPU's datasheet peak "
        "for its dtype, or on CPU a peak measured robustly (repeated matmul timings, their median and spread), and "
        f"only when nothing shows the machine was shared: the peak's spread, the run's step throughput (IQR / "
        f"median) and the peaks the runs measured for themselves must each vary by at most {100 * tol:.0f}%.",
        f"Peak: {peak_text(peak)}.",
    ]
    sp = tp.get("study_peaks") or []
    if sp:
        paras.append(
            f"The trainer measured a peak once per launch (per phase) and logged MFU against it: those peaks "
            f"range {fmt_flops(min(sp))}–{fmt_flops(max(sp))} over the study's runs."
        )
    logged = tp.get("logged") or {}
    if logged:
        hi = max(logged, key=logged.get)
        paras.append(
            f"The logs' own MFU (mean {100 * min(logged.values()):.0f}–{100 * max(logged.values()):.0f}%, "
            f"{hi} highest) is not reported as a fact" + (": above 100% is impossible." if logged[hi] > 1 else ".")
        )
    if len(tp["stated"]) < len(tp["runs"]):
        which = "any run" if not tp["stated"] else ", ".join(n for n in tp["runs"] if n not in tp["stated"])
        paras.append(f"MFU is not stated for {which}: " + "; ".join(tp.get("why") or ["no reliable peak"]) + ".")
    return {
        "stage": "throughput",
        "order": 65,
        "title": "Throughput",
        "paragraphs": paras,
        "tables": [
            {
                "caption": "Throughput per run: wall time, logged records, median tokens/s and its "
                "interquartile range, the step-throughput spread (IQR / median), achieved FLOP/s and MFU "
                "where it can be stated.",
                "columns": [
                    "run",
                    "wall time",
                    "log records",
                    "tokens/s",
                    "tokens/s IQR",
                    "step spread",
                    "achieved FLOP/s",
                    "MFU",
                ],
                "rows": rows,
            }
        ],
        "figures": [],
        "numbers": {},
        "seconds": None,
    }


# ---------------------------------------------------------------- reproduce box


def peak_text(peak: Mapping | None) -> str:
    """The stated peak in words: its value, where it comes from and (measured) its spread."""
    if not peak or not peak.get("flops"):
        return "none"
    if peak.get("source") == "datasheet":
        return f"{fmt_flops(peak['flops'])} ({peak.get('dtype')} datasheet peak of {peak.get('device')})"
    return (
        f"{fmt_flops(peak['flops'])}: median of {peak.get('rounds')} timings of a {peak.get('n')}² "
        f"{peak.get('dtype')} matmul (each the best of {peak.get('repeats')}) on {peak.get('device')}, range "
        f"{fmt_flops(peak.get('min'))}–{fmt_flops(peak.get('max'))}, spread {100 * peak.get('spread', 0):.1f}% "
        f"(tolerance {100 * peak.get('tolerance', 0):.0f}%: {'reliable' if peak.get('reliable') else 'unreliable'})"
    )
