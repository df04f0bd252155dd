"""The spikes stage (notebooks/07_spikes.ipynb): detection on every study run,
figures, tables, metrics and the report fragment; ``format_events``, the
readable table the CLI and the notebook print."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import pandas as pd

from warmstart.spikes.detectors import SpikeEvent, SpikeEvents, detect, spike_score
from warmstart.spikes.logs import _event_dirs, load_log
from warmstart.spikes.plots import close_figure, plot_overview, plot_run

__all__ = ["study_runs", "run_boundaries", "analyse_run", "run_stage", "format_events"]


def study_runs(params) -> list[tuple[str, Path]]:
    """``(name, record dir)`` of the base run and every study run (:mod:`warmstart.runs`): ``data/logs/<name>``
    holds the step log and ``run.json``; the checkpoints are elsewhere and never read here."""
    from warmstart.runs import BASE
    from warmstart.runs import study_runs as registry

    return [(r.name, r.record_dir(params)) for r in (BASE, *registry(params))]


def run_boundaries(run_dir: Path) -> tuple[list[int], list[int]]:
    """(phase boundaries, checkpoint steps) from ``run.json``: the first step of every phase but the first."""
    meta_path = Path(run_dir) / "run.json"
    if not meta_path.is_file():
        return [], []
    meta = json.loads(meta_path.read_text())
    bounds = [int(p["start_step"]) for p in meta.get("phases", [])[1:] if p.get("start_step")]
    ckpts = sorted({int(c["step"]) for c in meta.get("checkpoints", [])})
    return bounds, ckpts


CONTEXT = ("first_signal", "signal_lead_steps", "signal_before_loss")  # per event, from the instability signals


def analyse_run(
    run_dir: Path,
    method: str = "robust",
    warmup: int | str = "auto",
    params: dict | None = None,
    score_window: int = 1000,
    score_min_periods: int | None = None,
) -> dict:
    """Detection on one trainer run dir (``log.jsonl`` + optional ``run.json``): the log, events, score.

    Phase boundaries of a two-phase run are passed as known boundaries (every
    window restarts there, as at a hot-swap), so the schedule kink and level
    shift between phases are not spikes.
    """
    run_dir = Path(run_dir)
    log_path = run_dir / "log.jsonl"
    df = load_log(log_path if log_path.is_file() else run_dir)
    bounds, ckpts = run_boundaries(run_dir)
    full = [json.loads(x) for x in log_path.read_text().splitlines() if x.strip()] if log_path.is_file() else []
    by_step = {int(r["step"]): r for r in full if "step" in r}
    for col in ("update_cos", "phase"):
        if any(col in r for r in full):
            df[col] = [by_step.get(int(st), {}).get(col) for st in df["step"]]
    if "update_cos" in df:
        df["update_cos"] = pd.to_numeric(df["update_cos"], errors="coerce")
    events = detect(df, method, hotswaps=bounds, warmup=warmup, **dict(params or {}))
    score = spike_score(df, window=score_window, min_periods=score_min_periods)
    return {
        "df": df,
        "events": events,
        "boundaries": bounds,
        "checkpoints": ckpts,
        "score": score,
        "hotswaps": [h for h in events.hotswaps if h not in bounds],
        "context": event_context(full, events),
    }


def event_context(records: list[dict], events: Any) -> list[dict | None]:
    """Per event, which instability signal (attention logit, log Z, update ratio; logged by the trainer with
    ``signals_every``) moved first and how many steps before the loss (:func:`warmstart.spikes.onset.moved_first`);
    None per event when the log has no signals."""
    from warmstart.spikes.onset import SIGNALS, moved_first, trajectory

    if not any(k in r for r in records for k in SIGNALS if k != "grad_norm"):  # grad_norm is in every log
        return [None for _ in events]
    traj = trajectory([r for r in records if r.get("loss") is not None])
    out = []
    for e in events:
        m = moved_first(traj, int(e.start_step), window=10, min_history=10, lookback=5)
        out.append(
            {
                "first_signal": m.get("first"),
                "signal_lead_steps": m.get("lead_steps"),
                "signal_before_loss": bool(m.get("before_loss")),
            }
        )
    return out


def run_stage(params, show: bool = True, labels: dict[str, str] | None = None) -> dict:
    """The spikes stage: detection on every study run, figures, tables, metrics and the report fragment."""
    import time

    from warmstart.fragments import table, write_fragment
    from warmstart.io import write_json

    t0 = time.perf_counter()
    sp = params.spikes
    out_dir = params.report_path("spikes")
    out_dir.mkdir(parents=True, exist_ok=True)
    results, notes, rows, ev_rows, figs = {}, [], [], [], []
    for name, d in study_runs(params):
        if not ((d / "log.jsonl").is_file() or (d.is_dir() and _event_dirs(d))):
            notes.append(f"{name}: no run at {d}, skipped")
            continue
        res = analyse_run(d, sp.method, sp.warmup, sp.params, sp.score_window, sp.score_min_periods)
        results[name] = res
        fig_path = out_dir / f"{name}.png"
        fig = plot_run(name, res, fig_path)
        if not show:
            close_figure(fig)
        figs.append((name, fig_path))
        evs = res["events"]
        rows.append(
            {
                "run": name,
                "records": len(res["df"]),
                "armed_from": evs.armed_from,
                "spikes": len(evs),
                "max_z": max((e.magnitude or 0.0 for e in evs), default=None),
                "score_loss_%": res["score"]["loss"],
                "score_grad_%": res["score"]["grad_norm"],
                "level_shifts": len(evs.level_shifts),
            }
        )
        ev_rows += [{"run": name, **e.to_dict(), **(ctx or {})} for e, ctx in zip(evs, res["context"])]
    runs = pd.DataFrame(rows)
    events = pd.DataFrame(ev_rows, columns=["run", *[f.name for f in fields(SpikeEvent)], *CONTEXT])
    runs.to_csv(out_dir / "runs.csv", index=False)
    events.to_csv(out_dir / "events.csv", index=False)
    metrics = {
        "method": sp.method,
        "runs": {r["run"]: {k: v for k, v in r.items() if k != "run"} for r in rows},
        "total_spikes": int(len(events)),
        "skipped_runs": [n.split(":")[0] for n in notes],
    }
    write_json(out_dir / "spikes.json", metrics)
    paras = [
        f"Loss spikes detected with the `{sp.method}` method of `warmstart.spikes` (causal robust z of the "
        "log-loss against a trailing median; phase boundaries and corpus hot-swaps restart the reference, so the "
        "phase-1 to phase-2 kink is not a spike). The OLMo 2 spike score is the share of records at least 7 "
        f"standard deviations from the mean of the previous {sp.score_window} records (1,000 in the paper).",
        f"{int(len(events))} spike(s) over {len(rows)} run(s)." + (" " + "; ".join(notes) if notes else ""),
    ]
    short = [r["run"] for r in rows if r["armed_from"] is None]
    if short:
        paras.append("Too few log records for the detector to arm in: " + ", ".join(short) + ".")
    labels = labels or {}
    human = {c: labels.get(c, c) for c in [*runs.columns, *events.columns]}  # the report's labels, with units
    tables = [table(runs.rename(columns=human), "Spikes and OLMo 2 spike score (%) per run")] if len(runs) else []
    if len(events):
        cols = [
            "run",
            "start_step",
            "peak_step",
            "end_step",
            "magnitude",
            "delta_loss",
            "recovery_steps",
            "grad_norm_z",
            "lr",
            "first_signal",
            "signal_lead_steps",
        ]
        tables.append(table(events[cols].rename(columns=human), "Detected spikes"))
    overview = []
    if results:
        close_figure(plot_overview(results, out_dir / "overview.png"))
        overview = [
            {
                "path": str(out_dir / "overview.png"),
                "caption": "Training loss of every run (spikes shaded, "
                "peaks marked; dotted: phase boundary, dashed: corpus hot-swap). Per-run panels with grad norm "
                "and update cosine: reports/spikes/<run>.png and the stage notebook.",
            }
        ]
    write_fragment(
        params.shared.reports_dir,
        "spikes",
        70,
        "Loss spikes",
        paras,
        tables,
        overview,
        {"total_spikes": int(len(events)), **{f"spikes.{r['run']}": r["spikes"] for r in rows}},
        time.perf_counter() - t0,
    )
    return {"runs": runs, "events": events, "results": results, "notes": notes, "metrics": metrics}


def _fmt(v: Any, nd: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def format_events(events: Sequence[SpikeEvent]) -> str:
    """A readable table of events (and, for ``SpikeEvents``, what shaped them)."""
    notes = []
    if isinstance(events, SpikeEvents):
        if events.armed_from is not None:
            notes.append(f"detection armed from step {events.armed_from} (after warm-up)")
        if events.hotswaps:
            notes.append(f"hot-swaps (reference restarted): {', '.join(map(str, events.hotswaps))}")
        if events.level_shifts:
            notes.append(
                "persistent level shifts (not spikes; reference restarted): " + ", ".join(map(str, events.level_shifts))
            )
        m = events.mirror
        if m.get("records"):
            notes.append(
                f"noise check: {m['below']} of {m['records']} records fell >= z_enter robust units "
                "below the reference; noise alone should give about as many false spikes"
            )
    if not events:
        return "\n".join(["no spikes found", *notes])
    head = ["start", "peak", "end", "z", "d_loss", "recovery", "grad_z", "lr", "hotswap"]
    rows = [
        [
            _fmt(e.start_step),
            _fmt(e.peak_step),
            _fmt(e.end_step) + ("+" if e.open else ""),
            _fmt(e.magnitude, 1),
            _fmt(e.delta_loss, 4),
            _fmt(e.recovery_steps),
            _fmt(e.grad_norm_z, 1),
            _fmt(e.lr, 6),
            _fmt(e.nearest_hotswap),
        ]
        for e in events
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    lines.append(
        f"{len(events)} spike(s); z in robust units (1.4826 MAD of the log-loss residual), "
        "recovery in steps from the peak ('-': not recovered), '+': still open at the end of the log"
    )
    return "\n".join(lines + notes)
