"""The evaluation's tables, figures and speed-ups, from the per-checkpoint table of :mod:`warmstart.evaluate.runs`.

* **speed-up** (:func:`speedup`): how many times fewer training bytes than scratch a run needs to reach
  scratch's final target bits per byte (linear interpolation between checkpoints, :func:`bytes_to_reach`);
* **tables**: initialisation methods (:func:`init_table`, with the swap stage's counts), the warm-start
  study's numbers and goals (:func:`swap_study`), training FLOPs and throughput (:func:`flops_table`), the
  mean and spread over seeds of every checkpoint (:func:`seed_summary`, when measured);
* **figures**: bits-per-byte curves against bytes seen, the per-checkpoint heatmap, the training loss;
* formatting of means with their spread and of speed-ups with their intervals.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from warmstart.evaluate.runs import read_log_records

# ---------------------------------------------------------------- speed-up


def bytes_to_reach(curve: pd.DataFrame, target: float) -> float | None:
    """Training bytes at which a bpb curve (columns ``bytes``, ``bpb``) first reaches ``target``.

    Linear interpolation between checkpoints; 0 when step 0 is already at or
    below ``target``; ``None`` when the curve never reaches it.
    """
    c = curve.sort_values("bytes")
    b, y = c["bytes"].to_numpy(float), c["bpb"].to_numpy(float)
    if not len(y):
        return None
    if y[0] <= target:
        return 0.0
    for i in range(1, len(y)):
        if y[i] <= target:
            return float(b[i - 1] + (y[i - 1] - target) / (y[i - 1] - y[i]) * (b[i] - b[i - 1]))
    return None


def speedup(curve: pd.DataFrame, scratch: pd.DataFrame) -> float | None:
    """How many times fewer training bytes than scratch a run needs to reach scratch's final target bpb.

    ``bytes(scratch final) / bytes(run reaches that bpb)``; ``inf`` when the
    run starts there, ``None`` when it never gets there.
    """
    s = scratch.sort_values("bytes")
    target, budget = float(s["bpb"].iloc[-1]), float(s["bytes"].iloc[-1])
    need = bytes_to_reach(curve, target)
    if need is None:
        return None
    return math.inf if need == 0 else budget / need


# ---------------------------------------------------------------- tables


def _swap_metrics(params: Any, method: str | None) -> dict:
    if not method:
        return {}
    p = params.report_path("vocab_swap", f"{method}.json")  # the swap stage's details
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}


def init_table(runs: Sequence[dict], ck: pd.DataFrame, params: Any) -> pd.DataFrame:
    """Initialisation methods: aligned tokens, step-0 and final target bpb, speed-up against scratch."""
    curves = {n: g.rename(columns={"bpb_target": "bpb"})[["bytes", "bpb"]] for n, g in ck.groupby("run")}
    scratch = curves.get("scratch")
    out = []
    for run in runs:
        g = ck[ck["run"] == run["name"]].sort_values("step")
        if g.empty:
            continue
        sw = _swap_metrics(params, run.get("method"))
        sp = speedup(curves[run["name"]], scratch) if scratch is not None and len(scratch) else None
        out.append(
            {
                "run": run["name"],
                "aligned": sw.get("aligned"),
                "decomposed": sw.get("decomposed"),
                "random": sw.get("random"),
                "new_vocab": sw.get("new_vocab"),
                "bpb_step0": float(g["bpb_target"].iloc[0]) if int(g["step"].iloc[0]) == 0 else None,
                "bpb_source_step0": float(g["bpb_source"].iloc[0])
                if int(g["step"].iloc[0]) == 0 and "bpb_source" in g
                else None,
                "bpb_final": float(g["bpb_target"].iloc[-1]),
                "speedup": sp,
            }
        )
    return pd.DataFrame(out)


def swap_study(init: pd.DataFrame, pairs0: dict | None = None) -> dict:
    """The warm-start study's numbers (``reports/metrics/swap_study.json``) and its goals, as measured.

    ``speedup`` is scratch's total bytes over the bytes the run needed to reach scratch's final target
    bits per byte (:func:`speedup`); ``goals`` are the issue's targets for the default study, each
    ``null`` when a run it needs is missing.
    """
    rows = {
        r["run"]: {k: (None if pd.isna(v) else v) for k, v in r.items() if k != "run"} for r in init.to_dict("records")
    }
    step0 = {k: v.get("bpb_step0") for k, v in rows.items()}
    swapped = {k: v for k, v in rows.items() if k not in ("scratch", "original")}
    best = max(swapped, key=lambda k: swapped[k].get("speedup") or 0.0) if swapped else None

    def below(a: str, b: str) -> bool | None:
        return None if step0.get(a) is None or step0.get(b) is None else bool(step0[a] < step0[b])

    best_sp = swapped[best].get("speedup") if best else None
    # tokdistil below the heuristic it starts from at step 0, by the paired interval over the same texts
    start = next((p for p in (pairs0 or {}).values() if p["run"] == "tokdistil"), None)  # listed first: its start
    return {
        "runs": rows,
        "best_swapped": best,
        "best_speedup": best_sp,
        "goals": {
            "fvt_step0_below_random": below("fvt", "random"),
            "focus_step0_below_random": below("focus", "random"),
            "best_speedup_at_least_3": None if best_sp is None else bool(best_sp >= 3.0),
            "tokdistil_step0_below_start": None if not start or not start.get("ci") else bool(start["ci"][1] < 0),
        },
    }


def flops_table(runs: Sequence[dict]) -> pd.DataFrame:
    """Per run: theoretical training FLOPs (flops per token x tokens, :mod:`warmstart.flops`), wall time, median
    tokens/s of its step log and the achieved FLOP/s (tokens/s x FLOPs per token). No MFU: that needs a stated
    peak and a reliability check (:func:`warmstart.flops.throughput`), which the report makes."""
    from warmstart.flops import throughput

    out = []
    for run in runs:
        last = sorted(run["checkpoints"], key=lambda c: c["step"])[-1]
        fpt = run.get("flops_per_token")
        th = throughput(read_log_records(run), fpt)
        out.append(
            {
                "run": run["name"],
                "params": run.get("params_count"),
                "flops_per_token": fpt,
                "tokens": last.get("tokens"),
                "train_flops": (fpt * last["tokens"]) if fpt and last.get("tokens") else None,
                "seconds": run.get("seconds"),
                "tokens_per_s": th["tokens_per_s"] or run.get("mean_tokens_per_s"),
                "step_spread": th["step_spread"],
                "achieved_flops": th["achieved_flops"],
            }
        )
    return pd.DataFrame(out)


def seed_summary(seed_ck: pd.DataFrame) -> pd.DataFrame:
    """Per (run, step) over seeds: ``n`` seeds, mean ``bytes``, mean and std (ddof 1) of target and source bits
    per byte (``bpb_target``, ``bpb_target_std``, ...), in the table's run order."""
    g = seed_ck.groupby(["run", "step"], sort=False)
    return g.agg(
        n=("seed", "nunique"),
        bytes=("bytes", "mean"),
        bpb_target=("bpb_target", "mean"),
        bpb_target_std=("bpb_target", "std"),
        bpb_source=("bpb_source", "mean"),
        bpb_source_std=("bpb_source", "std"),
    ).reset_index()


def covers(seed_ck: pd.DataFrame | None, ck: pd.DataFrame) -> bool:
    """Whether a seed table has every run and checkpoint step of the evaluation (then tables and curves use it)."""
    if seed_ck is None or seed_ck.empty:
        return False
    have = set(zip(seed_ck["run"], seed_ck["step"]))
    return all((r, int(s)) in have for r, s in zip(ck["run"], ck["step"]))


# ---------------------------------------------------------------- figures


def marker_steps(log_df: pd.DataFrame) -> dict[str, list[int]]:
    """Steps to mark on a loss curve: the phase-1 -> phase-2 switch and corpus hot-swaps."""
    from warmstart.spikes.logs import hotswap_steps

    out = {"phase": [], "hotswap": []}
    if log_df.empty:
        return out
    if "phase" in log_df:
        ph = log_df["phase"]
        out["phase"] = [int(s) for s in log_df.loc[ph.ne(ph.shift(1)) & ph.shift(1).notna(), "step"]]
    out["hotswap"] = hotswap_steps(log_df)
    return out


def plot_bpb_curves(
    ck: pd.DataFrame, path: str | Path, src_lang: str, tgt_lang: str, seeds: pd.DataFrame | None = None
) -> Path:
    """Target and source bpb against training bytes seen, one curve per run. With ``seeds`` (the
    :func:`seed_summary` of the evaluation's runs): the mean over seeds, a band of ± 1 std."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    runs = list(dict.fromkeys(ck["run"]))
    df = (seeds if seeds is not None else ck).assign(mb=lambda d: d["bytes"] / 1e6)
    palette = dict(zip(runs, sns.color_palette(n_colors=len(runs))))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    for ax, role, lang in ((axes[0], "target", tgt_lang), (axes[1], "source", src_lang)):
        sns.lineplot(
            data=df,
            x="mb",
            y=f"bpb_{role}",
            hue="run",
            style="run",
            markers=True,
            dashes=False,
            ax=ax,
            legend=role == "target",
            palette=palette,
            hue_order=runs,
            style_order=runs,
        )
        if seeds is not None:  # mean over seeds, band: ± 1 std
            for run, g in df.groupby("run", sort=False):
                sd = g[f"bpb_{role}_std"].fillna(0.0)
                ax.fill_between(
                    g["mb"], g[f"bpb_{role}"] - sd, g[f"bpb_{role}"] + sd, color=palette[run], alpha=0.2, linewidth=0
                )
        zero = df[df["step"] == 0]
        if len(zero):  # step 0: the initialised model, before any training
            ax.scatter(
                zero["mb"],
                zero[f"bpb_{role}"],
                marker="*",
                s=110,
                facecolor="none",
                edgecolor="black",
                linewidth=0.8,
                zorder=5,
                label="step 0" if role == "target" else None,
            )
        ax.set(
            xlabel="training text seen (MB of UTF-8)",
            ylabel=f"{lang} test bits per byte",
            title=f"{role} language ({lang})" + (": forgetting" if role == "source" else ""),
        )
        ax.xaxis.set_major_locator(MaxNLocator(5))  # few, short tick labels: they never overlap
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    fig.tight_layout()
    if axes[0].get_legend():  # one legend, below both panels, so it never covers a curve or a label
        n = df["run"].nunique()
        sns.move_legend(axes[0], "upper center", bbox_to_anchor=(1.1, -0.2), title=None, frameon=False, ncol=min(n, 7))
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def checkpoint_grid(ck: pd.DataFrame, value: str) -> pd.DataFrame:
    """Runs x checkpoints (k-th evaluated checkpoint of each run) of one column; the columns are labelled by
    the median MB of text seen at that checkpoint (runs with another tokenizer see slightly other bytes)."""
    df = ck.sort_values(["run", "step"]).assign(k=lambda d: d.groupby("run").cumcount())
    grid = df.pivot(index="run", columns="k", values=value)
    mb = df.groupby("k")["bytes"].median() / 1e6
    grid.columns = [f"{mb[k]:.2f}" for k in grid.columns]
    order = list(dict.fromkeys(ck["run"]))  # the study's run order
    return grid.reindex([r for r in order if r in grid.index])


def plot_bpb_heatmap(
    ck: pd.DataFrame, path: str | Path, src_lang: str, tgt_lang: str, seeds: pd.DataFrame | None = None
) -> Path:
    """Every evaluated checkpoint's bits per byte as two annotated heatmaps (target, source): runs x text seen.
    With ``seeds`` (the :func:`seed_summary` of the evaluation's runs): colours and numbers are the mean over
    seeds, each cell also prints ± 1 std."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    values = seeds if seeds is not None else ck
    grids = [
        (checkpoint_grid(values, f"bpb_{role}"), lang, role)
        for role, lang in (("target", tgt_lang), ("source", src_lang))
    ]
    n_runs, n_ck = grids[0][0].shape
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.45 * n_runs + 1.6))
    for ax, (grid, lang, role) in zip(axes, grids):
        # the colour scale spans the trained checkpoints (step 0 can be far off and would flatten the rest; it
        # saturates instead); the numbers are printed in every cell
        trained = grid.iloc[:, 1:].to_numpy(float) if grid.shape[1] > 1 else grid.to_numpy(float)
        trained = trained[np.isfinite(trained)]
        vmin, vmax = (float(trained.min()), float(trained.max())) if trained.size else (None, None)
        allv = grid.to_numpy(float)
        below, above = (
            bool(vmin is not None and np.nanmin(allv) < vmin),
            bool(vmax is not None and np.nanmax(allv) > vmax),
        )
        extend = {(True, True): "both", (True, False): "min", (False, True): "max"}.get((below, above), "neither")
        if seeds is not None:
            sd = checkpoint_grid(values, f"bpb_{role}_std").reindex(index=grid.index).to_numpy(float)
            annot: Any = np.array(
                [
                    [f"{m:.2f}\n±{d:.3f}" if np.isfinite(m) else "" for m, d in zip(mr, dr)]
                    for mr, dr in zip(grid.to_numpy(float), sd)
                ]
            )
            fmt, size = "", 6.5
        else:
            annot, fmt, size = True, ".2f", 8
        sns.heatmap(
            grid,
            annot=annot,
            fmt=fmt,
            cmap="viridis_r",
            vmin=vmin,
            vmax=vmax,
            linewidths=0.5,
            ax=ax,
            cbar_kws={"label": f"{lang} bits per byte", "extend": extend},
            annot_kws={"size": size},
        )
        ax.set(
            xlabel="training text seen (MB of UTF-8, checkpoint)",
            ylabel="" if role == "source" else "run",
            title=f"{role} language ({lang})" + (": forgetting" if role == "source" else ""),
        )
        ax.tick_params(axis="y", rotation=0)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_loss(logs: pd.DataFrame, path: str | Path) -> Path | None:
    """Training loss against step, one curve per run; dotted lines at phase switches, dashed at hot-swaps."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if logs.empty or "loss" not in logs:
        return None
    fig, ax = plt.subplots(figsize=(10, 3.8))
    sns.lineplot(data=logs, x="step", y="loss", hue="run", ax=ax, linewidth=1.0)
    marks = marker_steps(logs[logs["run"] == logs["run"].iloc[0]])
    for s in marks["phase"]:
        ax.axvline(s, color="0.3", linestyle=":", linewidth=1.2, label=f"phase 1 → 2 (step {s})")
    all_swaps = sorted({s for _, g in logs.groupby("run") for s in marker_steps(g)["hotswap"]})
    for i, s in enumerate(all_swaps):
        ax.axvline(s, color="tab:red", linestyle="--", linewidth=1.0, label="corpus hot-swap" if i == 0 else None)
    ax.set(xlabel="optimizer step", ylabel="training loss (nats per token)", title="Training loss")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


# ---------------------------------------------------------------- formatting


def fmt_mean_sd(mean: Any, sd: Any, digits: int = 3) -> str:
    """``1.843 ± 0.002`` (``–`` when the mean is missing)."""
    if mean is None or not np.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if sd is not None and np.isfinite(sd) else f"{mean:.{digits}f}"


def fmt_speedup(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "not reached"
    return "reached at step 0" if math.isinf(v) else f"{v:.2f}×"


def fmt_speedup_ci(v: Any, ci: Any = None) -> str:
    """'2.64× [2.31×, 3.02×]' (the interval only for a finite speed-up)."""
    s = fmt_speedup(v)
    if s.endswith("×") and ci and len(ci) == 2 and all(c is not None for c in ci):
        return f"{s} [{ci[0]:.2f}×, {ci[1]:.2f}×]"
    return s
