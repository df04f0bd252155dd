"""The ablations' outputs (:mod:`warmstart.stability.ablations`): the figure, the sweep's table, the conclusions,
``ablations.md`` and the report fragment ``75_ablations.json``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def summary_rows(result: dict) -> list[dict]:
    return [
        {
            "init": r["init"],
            "lr": r["lr"],
            "spikes": r["n_spikes"],
            "max_z": r["max_z"],
            "score_loss_%": r["spike_score_loss"],
            "score_grad_%": r["spike_score_grad"],
            "final_loss": r["final_loss"],
            "eval_loss": r["eval_loss"],
            "diverged": r["diverged"],
        }
        for r in result["sweep"]
    ]


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    lrs = result["config"]["lrs"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=False)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(lrs)))
    for ax, init in zip(axes[:2], ("warm", "scratch")):
        for c, lr in zip(colors, lrs):
            r = next(x for x in result["sweep"] if x["init"] == init and x["lr"] == lr)
            y = [np.nan if v is None else v for v in r["loss"]]
            ax.plot(r["steps"], y, color=c, lw=0.8, label=f"lr {lr:g} ({r['n_spikes']} spikes)")
            for e in r["events"]:
                ax.plot(e["peak_step"], e["peak_loss"], "v", color="red", ms=5)
        ax.set(title=f"{init} start: training loss", xlabel="step", ylabel="loss", yscale="log")
        ax.legend(fontsize=7)
    ax = axes[2]
    rs = result["resume"]
    for r in next((x for x in result["sweep"] if x["name"] == rs["run"]), None), *rs.get("variants", []):
        if r is None:
            continue
        y = [np.nan if v is None else v for v in r["loss"]]
        lab = r.get("variant", "original")
        ax.plot(r["steps"], y, lw=0.8 if lab != "original" else 1.6, label=lab, alpha=0.85)
    if rs.get("from_step"):
        ax.axvline(rs["from_step"], color="k", ls=":", lw=0.8)
    ax.set(title=f"resume before the first spike ({rs['run']})", xlabel="step", ylabel="loss", yscale="log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def conclusions(result: dict) -> list[str]:
    sw = result["sweep"]
    out = []
    for init in ("warm", "scratch"):
        rs = sorted((r for r in sw if r["init"] == init), key=lambda r: r["lr"])
        out.append(
            f"{init}: spikes per lr "
            + ", ".join(f"{r['lr']:g}: {r['n_spikes']}" + (" (diverged)" if r["diverged"] else "") for r in rs)
        )
    w = sum(r["n_spikes"] for r in sw if r["init"] == "warm")
    s = sum(r["n_spikes"] for r in sw if r["init"] == "scratch")
    out.append(
        f"total spikes: warm start {w}, scratch {s}; CSMPT saw spikes only in continued pretraining "
        f"({'consistent' if w > s else 'not reproduced'} here)"
    )
    rs = result["resume"]
    for v in rs.get("variants", []):
        out.append(
            f"resume from step {rs['from_step']} ({v['variant']}): {v['spikes_after']} spike(s) after it, "
            f"first spike {'recurs at the same step' if v['same_first_spike'] else 'does not recur at the same step'}"
            f"{', bit-identical to the original' if v['identical_to_original'] else ''}; eval loss {v['eval_loss']:.3f}"
        )
    if "note" in rs:
        out.append(rs["note"])
    return out


def write_outputs(result: dict, out: Path, reports_dir: Path | None) -> dict[str, Path]:
    import pandas as pd

    from warmstart.fragments import table, write_fragment
    from warmstart.io import write_text

    out = Path(out)
    fig = plot(result, out / "ablations.png")
    df = pd.DataFrame(summary_rows(result))
    lines = conclusions(result)
    md = [
        "# Loss-spike ablations (toy scale)",
        "",
        f"config: `{json.dumps(result['config'])}`",
        "",
        f"wall time: {result['seconds']:.0f} s",
        "",
        *[f"- {x}" for x in lines],
        "",
        df.to_markdown(index=False),
    ]
    write_text(out / "ablations.md", "\n".join(md) + "\n")
    paths = {"json": out / "ablations.json", "figure": fig, "markdown": out / "ablations.md"}
    if reports_dir is not None:
        c = result["config"]
        paras = [
            "CSMPT reports that loss spikes grow with the learning rate (up to divergence), appeared only when "
            "continuing the pretraining of an existing model, and were not removed by resuming from before a spike "
            "with the optimizer state reinitialised. We repeated the three ablations at toy scale "
            f"(a {c['spec']['layers']}-layer, {c['spec']['hidden']}-wide Llama; {c['steps']} steps per run; "
            f"learning rates {', '.join(f'{x:g}' for x in c['lrs'])}; synthetic source/target languages), "
            "with `python -m warmstart.stability.ablations` (opt-in, not part of dvc repro).",
            *lines,
        ]
        nums = {f"spikes.{r['name']}": r["n_spikes"] for r in result["sweep"]}
        nums |= {f"eval_loss.{r['name']}": r["eval_loss"] for r in result["sweep"]}
        write_fragment(
            reports_dir,
            "ablations",
            75,
            "Loss-spike ablations",
            paras,
            [
                table(
                    df,
                    "Learning-rate sweep: spikes (robust detector), OLMo 2 spike score (%), "
                    "mean loss of the last 10 % of steps and held-out loss",
                )
            ],
            [
                {
                    "path": str(fig),
                    "caption": "Learning-rate sweep (warm start, scratch; red: detected "
                    "spike peaks) and the resume ablation.",
                }
            ],
            nums,
            result["seconds"],
        )
        paths["fragment"] = Path(reports_dir) / "fragments" / "75_ablations.json"
    return paths
