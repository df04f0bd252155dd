"""The study's figures (:func:`plots`): the LR sweep, signal growth, the unstable runs' signals, the induced spike."""

from __future__ import annotations

import math
from pathlib import Path

from warmstart.stability.analysis import finite
from warmstart.stability.report import LABELS, SIGNAL_LABELS, _runs, _sens

COLORS = {"baseline": "tab:blue", "qk_norm": "tab:orange", "z_loss": "tab:green", "qk_norm+z_loss": "tab:red"}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plots(result: dict, fig_dir: Path | str) -> list[dict]:
    """The study's figures under ``fig_dir``: ``[{"path", "caption"}]``."""
    fig_dir = Path(fig_dir)
    figs = [
        plot_sweep(result, fig_dir / "lr_sweep.png"),
        plot_growth(result, fig_dir / "signal_growth.png"),
        plot_signals(result, fig_dir / "signals.png"),
    ]
    if result.get("induced"):
        figs.append(plot_induced(result, fig_dir / "induced_spike.png"))
    return [f for f in figs if f]


def _save(fig, path: Path) -> str:
    from warmstart.outputs import save_figure

    fig.tight_layout()
    return str(save_figure(fig, path))


def plot_sweep(result: dict, path: Path) -> dict:
    """Wortsman's Figure 1: final held-out loss against learning rate, one line per variant, a panel per init."""
    plt = _plt()
    inits = result["config"]["inits"]
    fig, axes = plt.subplots(1, len(inits), figsize=(5.2 * len(inits), 4), sharey=True, squeeze=False)
    top = result["uniform_loss"]
    for ax, init in zip(axes[0], inits):
        for v in result["config"]["variants"]:
            rs = _runs(result, variant=v, init=init)
            s = _sens(result, v, init)
            y = [min(r["final_loss"], s["init_loss"]) if finite(r["final_loss"]) else s["init_loss"] for r in rs]
            ax.plot(
                [r["lr"] for r in rs],
                y,
                "-o",
                color=COLORS[v],
                ms=4,
                label=f"{LABELS[v]} (sens. {s['lr_sensitivity']:.2f})",
            )
            for r, yy in zip(rs, y):
                if r["diverged"]:
                    ax.plot(r["lr"], yy, "x", color="black", ms=8, mew=1.5)
                if r["spiked"]:
                    ax.plot(r["lr"], yy, "o", mfc="none", mec="red", ms=11, mew=1.2)
            top = max(top, s["init_loss"])
        ax.axhline(result["uniform_loss"], color="0.5", ls=":", lw=1)
        ax.set(
            xscale="log",
            xlabel="learning rate",
            title=f"{init} start",
            ylabel="final held-out loss (nats, clipped at initial)",
        )
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("LR sweep (red circle: detector flagged a spike; x: diverged; dotted: ln|V|)", fontsize=9)
    return {
        "path": _save(fig, path),
        "caption": "Final held-out loss against learning rate (Wortsman et al. 2023, Figure 1 "
        "form), one line per variant, warm start and scratch; losses clipped at the run's initial loss as in the LR "
        "sensitivity (in the legend).",
    }


def plot_growth(result: dict, path: Path) -> dict:
    """Max attention logit and end-of-run log Z against learning rate, per variant (solid: warm, dashed: scratch)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.8))
    for v in result["config"]["variants"]:
        for init in result["config"]["inits"]:
            rs = _runs(result, variant=v, init=init)
            ls = "-" if init == "warm" else "--"
            lab = f"{LABELS[v]}, {init}"
            for ax, key in zip(axes, ("attn_logit_max_max", "log_z_mean_end")):
                ax.plot(
                    [r["lr"] for r in rs],
                    [r[key] if finite(r[key]) else math.nan for r in rs],
                    ls,
                    marker="o",
                    ms=3,
                    color=COLORS[v],
                    label=lab,
                )
    thr = result["config"]["moved"]["attn_logit_threshold"]
    if thr:
        axes[0].axhline(thr, color="0.5", ls=":", lw=1)
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="learning rate",
        ylabel="max attention logit over the run",
        title="attention-logit growth",
    )
    axes[1].axhline(0, color="0.5", ls=":", lw=1)
    axes[1].set(
        xscale="log", xlabel="learning rate", ylabel="log Z, mean of the last 10 % (nats)", title="output log-partition"
    )
    axes[1].legend(fontsize=7)
    return {
        "path": _save(fig, path),
        "caption": "Instability signals against learning rate: the largest attention logit "
        "q.k/sqrt(d) of each run (dotted: the 'grew' threshold) and its output log-partition log Z at the end "
        "(solid: warm start, dashed: scratch).",
    }


def _pick_unstable(result: dict, n: int = 4) -> list[dict]:
    rs = [r for r in result["sweep"] if r["spiked"] or r["diverged"]]
    rs.sort(
        key=lambda r: (-r["lr"], not (r["moved"] and r["moved"]["wortsman_before_loss"]), r["variant"] != "baseline")
    )
    if rs:
        return rs[:n]
    top = max(result["config"]["lrs"])  # nothing unstable: the highest learning rate of each variant
    return [r for r in result["sweep"] if r["lr"] == top][:n]


def plot_signals(result: dict, path: Path) -> dict:
    """Loss and signals against step for the runs that spiked or diverged (up to 4), onset and first moves marked."""
    plt = _plt()
    runs = _pick_unstable(result)
    rows = [
        ("loss", "loss (nats)"),
        ("attn_logit_max", "max attention logit"),
        ("log_z", "log Z (nats)"),
        ("update_ratio", "update/weight ratio"),
    ]
    fig, axes = plt.subplots(len(rows), len(runs), figsize=(3.6 * len(runs) + 0.6, 8.5), sharex="col", squeeze=False)
    for j, r in enumerate(runs):
        t = r["trajectory"]
        st = t["step"]
        nan = lambda xs: [x if finite(x) else math.nan for x in xs]  # noqa: E731
        axes[0, j].plot(st, nan(t["loss"]), color="black", lw=0.8)
        for e in r["events"]:
            axes[0, j].axvspan(e["start_step"], e["end_step"], color="red", alpha=0.15)
        axes[1, j].plot(st, nan(t["attn_logit_max"]), color="tab:purple", lw=0.8)
        axes[1, j].set_yscale("log")
        axes[2, j].plot(st, nan(t["log_z_mean"]), color="tab:green", lw=0.8, label="mean")
        axes[2, j].plot(st, nan(t["log_z_max"]), color="tab:olive", lw=0.8, label="max")
        axes[3, j].plot(st, nan(t["update_ratio"]), color="tab:brown", lw=0.8)
        axes[3, j].set_yscale("log")
        mv = r["moved"]
        if mv:
            for ax in axes[:, j]:
                ax.axvline(mv["onset"], color="red", ls="--", lw=0.8)
            where = {"attn_logit_max": 1, "log_z_mean": 2, "log_z_max": 2, "update_ratio": 3}
            for name, v in mv["signals"].items():
                if v["jump"] and name in where:
                    axes[where[name], j].plot(v["jump"]["step"], v["jump"]["value"], "v", color="red", ms=6)
        lead = ""
        if mv and mv["first"]:
            n = mv["lead_steps"]
            lead = f"\nfirst: {SIGNAL_LABELS.get(mv['first'], mv['first'])}, " + (
                f"{n} step(s) ahead" if n > 0 else "with the loss"
            )
        axes[0, j].set_title(f"{LABELS[r['variant']]}, {r['init']}, lr {r['lr']:g}{lead}", fontsize=8)
        axes[-1, j].set_xlabel("step")
    for i, (_, lab) in enumerate(rows):
        axes[i, 0].set_ylabel(lab)
    axes[2, 0].legend(fontsize=7)
    unstable = any(r["spiked"] or r["diverged"] for r in runs)
    cap = (
        "Runs the detector flagged or that diverged: loss (red: detected spikes), the instability signals, the loss "
        "onset (dashed) and each signal's first move before it (triangles)."
        if unstable
        else "No run spiked or diverged: the signals of the highest learning rate's runs."
    )
    return {"path": _save(fig, path), "caption": cap}


def plot_induced(result: dict, path: Path) -> dict:
    """The induced spike: training loss with and without rollback-and-skip, and the clean control."""
    plt = _plt()
    ind = result["induced"]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    t = ind["control"].get("trajectory")
    if t:
        ax.plot(
            t["step"], [x if finite(x) else math.nan for x in t["loss"]], color="0.6", lw=0.8, label="clean control"
        )
    for key, color in (("unmitigated", "tab:red"), ("mitigated", "tab:blue")):
        r = ind[key]
        st, lo = r["log_steps"], r["log_loss"]
        seg_s, seg_l, first = [], [], True
        for i, (s, v) in enumerate(zip(st, lo)):
            if i and s <= st[i - 1]:  # a rollback: start a new segment
                ax.plot(seg_s, seg_l, color=color, lw=0.9, label=key if first else None)
                first, seg_s, seg_l = False, [], []
            seg_s.append(s)
            seg_l.append(v if finite(v) else math.nan)
        ax.plot(seg_s, seg_l, color=color, lw=0.9, label=key if first else None)
        for x in r["rollbacks"]:
            ax.plot(x["step"], max((v for v in lo if finite(v)), default=0), "v", color=color, ms=7)
    for b in ind["bad_batches"]:
        ax.axvspan(b - 0.5, b + 0.5, color="orange", alpha=0.3)
    ax.set(
        xlabel="step",
        ylabel="training loss (nats)",
        title=f"induced spike (random-token batches {ind['bad_batches'][0]}..{ind['bad_batches'][-1]}, orange)",
    )
    ax.legend(fontsize=8)
    return {
        "path": _save(fig, path),
        "caption": "Induced spike: a warm run with random-token batches (orange), without "
        "mitigation and with rollback-and-skip (triangles: rollbacks), against the clean run.",
    }
