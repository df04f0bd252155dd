"""Figures of the spikes stage.  matplotlib is imported inside the functions
only, so importing ``warmstart.spikes`` (the trainer does) never loads it."""

from __future__ import annotations

from pathlib import Path

__all__ = ["plot_run", "plot_overview", "close_figure"]


def _mark(ax, res: dict) -> None:
    """Phase boundaries (dotted), hot-swaps (dashed) and spike spans (shaded) on one panel."""
    for b in res["boundaries"]:
        ax.axvline(b, color="grey", ls=":", lw=1)
    for h in res["hotswaps"]:
        ax.axvline(h, color="tab:green", ls="--", lw=1)
    for e in res["events"]:
        ax.axvspan(e.start_step, e.end_step, color="red", alpha=0.12)


def plot_run(name: str, res: dict, path: Path | None = None):
    """Loss with spike markers, hot-swap (dashed) and phase (dotted) lines; grad norm and update cosine."""
    import matplotlib.pyplot as plt

    df, events = res["df"], res["events"]
    panels = ["loss"] + [c for c in ("grad_norm", "update_cos") if c in df and df[c].notna().any()]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 1.2 + 1.6 * len(panels)), sharex=True, squeeze=False)
    for ax, col in zip(axes[:, 0], panels):
        ax.plot(df["step"], df[col], lw=0.9, color="tab:blue")
        _mark(ax, res)
        ax.set_ylabel(col)
    ax0 = axes[0, 0]
    if events:
        ax0.plot([e.peak_step for e in events], [e.peak_loss for e in events], "v", color="red", label="spike peak")
        ax0.legend(fontsize=7)
    if (df["loss"] > 0).all():
        from matplotlib.ticker import ScalarFormatter

        ax0.set_yscale("log")
        ax0.yaxis.set_major_formatter(ScalarFormatter())  # 6, 7, 8 rather than 6 x 10^0
        ax0.yaxis.set_minor_formatter(ScalarFormatter())
    ax0.set_ylabel("loss (nats/token)")
    ax0.set_title(f"{name}: {len(events)} spike(s) (dotted: phase boundary, dashed: hot-swap)")
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    return fig


def plot_overview(results: dict, path: Path | None = None, ncols: int = 2):
    """All runs' loss curves as small multiples: spikes shaded, peaks marked, phase (dotted) and hot-swap (dashed) lines."""
    import math

    import matplotlib.pyplot as plt

    names = list(results)
    nrows = max(1, math.ceil(len(names) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(9, 1.9 * nrows + 0.4), squeeze=False)
    for ax, name in zip(axes.flat, names):
        res = results[name]
        df, events = res["df"], res["events"]
        ax.plot(df["step"], df["loss"], lw=0.9, color="tab:blue")
        _mark(ax, res)
        if events:
            ax.plot([e.peak_step for e in events], [e.peak_loss for e in events], "v", color="red", ms=5)
        ax.set_title(f"{name}: {len(events)} spike(s)", fontsize=9)
        ax.set_ylabel("loss (nats/token)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(names) :]:
        ax.set_axis_off()
    for ax in axes[-1]:
        ax.set_xlabel("optimizer step", fontsize=8)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    return fig


def close_figure(fig) -> None:
    """Close ``fig`` (pyplot keeps every figure open until closed)."""
    import matplotlib.pyplot as plt

    plt.close(fig)
