"""Forgetting and source replay: what adaptation costs the source language, and what replay buys back.

**Forgetting** of a run is its final source-language bits per byte minus the base model's on the same text with
its own tokenizer (the ``original`` run's step 0 *is* the base model), split into the share the vocabulary swap
causes before any training (step 0 minus base) and the share training causes (final minus step 0). All three
are paired differences on the same held-out source paragraphs, with the evaluation's bootstrap
(:func:`warmstart.evaluate.intervals.paired_difference`; bits per byte are per byte, so runs with different
tokenizers compare).

**Replay arms** are the study arms whose phases mix source rows in (``study.arms.<name>.phases.<phase>.mix``). Each
is compared with the run it starts from (its ``init``, trained without replay: the 0% arm) on the same resamples:

* ``reduction``: the share of the reference's forgetting the arm removes, ``1 - F(arm) / F(reference)``, with a
  percentile interval of the ratio over the shared resamples;
* ``target_cost``: final target bits per byte of the arm minus the reference's (paired interval).

The choice (:func:`choose`) is the smallest replay share whose reduction is at least ``min_reduction`` (two
thirds) while the target cost's upper bound is at most ``max_cost`` (0.01 bits per byte); else the arm that
removes most forgetting within that cost; else none, and the report says why.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from warmstart.evaluate import intervals as stats

MIN_REDUCTION = 2 / 3
MAX_COST = 0.01


def source_share(params: Any, arm: str) -> dict[str, Any]:
    """The arm's source rows: per phase (share of that phase's rows) and over the whole run (rows-weighted)."""
    pt = params.pretrain_for(arm)
    per_phase, rows, src = {}, 0.0, 0.0
    for ph in pt.phases:
        total = sum(ph.mix.values())
        share = ph.mix.get("source", 0.0) / total
        if share:
            per_phase[ph.name] = share
        rows += ph.steps
        src += ph.steps * share
    return {"phases": per_phase, "overall": src / rows if rows else 0.0}


# what a replay arm may change besides a phase's mix: the steps that keep its target rows, and their warm-up/decay
_REPLAY_FIELDS = {"mix", "steps", "warmup_steps", "decay_steps"}


def replay_arms(params: Any) -> dict[str, str]:
    """Arms that differ from their init's training only by source rows in a phase's mix (and the steps that keep
    its target rows) -> the run they are compared with (their init, no replay)."""
    out = {}
    base = [ph.model_dump() for ph in params.pretrain.phases]
    for name, arm in params.study.arms.items():
        if set(arm.overrides) != {"phases"}:
            continue
        mine = [ph.model_dump() for ph in params.pretrain_for(name).phases]
        same_shape = len(mine) == len(base) and all(
            {k: v for k, v in a.items() if k not in _REPLAY_FIELDS}
            == {k: v for k, v in b.items() if k not in _REPLAY_FIELDS}
            for a, b in zip(mine, base, strict=True)
        )
        if same_shape and source_share(params, name)["phases"]:
            out[name] = arm.init
    return out


def anneal_arms(params: Any) -> dict[str, str]:
    """Arms that append a phase decaying the learning rate (Lucie's annealing) -> their init."""
    known = {ph.name for ph in params.pretrain.phases}
    out = {}
    for name, arm in params.study.arms.items():
        pt = params.pretrain_for(name)
        added = [ph for ph in pt.phases if ph.name not in known]
        if added and added[-1].lr_schedule in ("wsd", "cosine") and added[-1].min_lr_ratio < 1:
            out[name] = arm.init
    return out


def _rows(doc_nll: dict) -> tuple[dict[str, dict], dict[str, dict]]:
    """(final row per run, step-0 row per run) of the per-text NLL checkpoints."""
    final: dict[str, dict] = {}
    first: dict[str, dict] = {}
    for r in doc_nll["checkpoints"]:
        if r["run"] not in final or r["step"] > final[r["run"]]["step"]:
            final[r["run"]] = r
        if int(r["step"]) == 0:
            first[r["run"]] = r
    return final, first


def forgetting(doc_nll: dict, runs: list[str], base_run: str = "original", n_boot: int = stats.N_BOOT,
               seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Per run: ``forgetting`` (final - base), ``swap`` (step 0 - base) and ``training`` (final - step 0) in source
    bits per byte, each ``{"diff", "ci", "distinguishable"}``; ``base_bpb``: the base model's. ``{}`` without
    the base run's step 0."""
    final, first = _rows(doc_nll)
    if base_run not in first or not doc_nll.get("bytes", {}).get("source"):
        return {}
    nbytes = doc_nll["bytes"]["source"]
    base = first[base_run]["source"]

    def diff(a: list[float], b: list[float]) -> dict[str, Any]:
        return stats.paired_difference(a, b, nbytes, n_boot=n_boot, seed=seed)

    out: dict[str, Any] = {
        "base_run": base_run,
        "base_bpb": float(np.sum(base) / np.sum(nbytes) / stats.LN2),
        "runs": {},
    }
    for run in runs:
        if run not in final or run not in first:
            continue
        out["runs"][run] = {
            "forgetting": diff(final[run]["source"], base),
            "swap": diff(first[run]["source"], base),
            "training": diff(final[run]["source"], first[run]["source"]),
        }
    return out


def replay_effects(doc_nll: dict, arms: dict[str, str], base_run: str = "original", n_boot: int = stats.N_BOOT,
                   seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Per replay arm against its reference: ``reduction`` of forgetting (point, interval) and ``target_cost``."""
    final, first = _rows(doc_nll)
    if base_run not in first:
        return {}
    out = {}
    src_bytes, tgt_bytes = doc_nll["bytes"]["source"], doc_nll["bytes"]["target"]
    w = stats.bootstrap_weights(len(src_bytes), n_boot, seed)
    base = np.asarray(first[base_run]["source"], dtype=float)
    for arm, ref in arms.items():
        if arm not in final or ref not in final:
            continue
        f_arm = stats.bpb_samples(np.asarray(final[arm]["source"]) - base, src_bytes, w)
        f_ref = stats.bpb_samples(np.asarray(final[ref]["source"]) - base, src_bytes, w)
        point_arm = float((np.sum(final[arm]["source"]) - base.sum()) / np.sum(src_bytes) / stats.LN2)
        point_ref = float((np.sum(final[ref]["source"]) - base.sum()) / np.sum(src_bytes) / stats.LN2)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(f_ref > 0, 1.0 - f_arm / f_ref, np.nan)
        ci = stats.percentile_interval(ratio)
        out[arm] = {
            "reference": ref,
            "forgetting": point_arm,
            "reference_forgetting": point_ref,
            "reduction": 1.0 - point_arm / point_ref if point_ref > 0 else None,
            "reduction_ci": list(ci) if ci else None,
            "target_cost": stats.paired_difference(
                final[arm]["target"], final[ref]["target"], tgt_bytes, n_boot=n_boot, seed=seed
            ),
        }
    return out


def choose(effects: dict[str, Any], shares: dict[str, float], min_reduction: float = MIN_REDUCTION,
           max_cost: float = MAX_COST) -> dict[str, Any]:  # fmt: skip
    """The replay share to use: the smallest that meets both goals, else the most forgetting removed within
    the cost; ``{"arm", "meets_goal", "why"}`` (arm None when no arm keeps the cost)."""

    def cost_ok(e: dict) -> bool:
        ci = e["target_cost"].get("ci")
        return ci is not None and ci[1] <= max_cost

    meets = [a for a, e in effects.items() if cost_ok(e) and (e["reduction"] or 0) >= min_reduction]
    if meets:
        arm = min(meets, key=lambda a: (shares[a], a))
        return {"arm": arm, "meets_goal": True,
                "why": f"the smallest replay share that removes at least {min_reduction:.0%} of the forgetting "
                       f"with a target cost whose interval stays below {max_cost} bits per byte"}  # fmt: skip
    cheap = [a for a, e in effects.items() if cost_ok(e)]
    if cheap:
        arm = max(cheap, key=lambda a: (effects[a]["reduction"] or 0, -shares[a]))
        return {"arm": arm, "meets_goal": False,
                "why": f"no arm removes {min_reduction:.0%} of the forgetting within {max_cost} bits per byte of "
                       "target cost; this one removes the most within that cost"}  # fmt: skip
    return {"arm": None, "meets_goal": False,
            "why": f"every replay arm's target cost may exceed {max_cost} bits per byte (interval)"}  # fmt: skip


def across_seeds(spread: dict | None, pairs: dict[str, str]) -> dict[str, Any]:
    """Per arm against its reference, seed by seed (the run-to-run spread's final checkpoints): the target and
    source bits-per-byte differences at each seed, their mean and standard deviation. ``{}`` without a spread
    covering both runs."""
    import statistics

    if not spread:
        return {}
    final: dict[tuple[str, int], dict] = {}
    for c in spread.get("checkpoints") or []:
        key = (c["run"], c["seed"])
        if key not in final or c["step"] > final[key]["step"]:
            final[key] = c
    out = {}
    for arm, ref in pairs.items():
        seeds = [s for s in spread["seeds"] if (arm, s) in final and (ref, s) in final]
        if len(seeds) < 2:
            continue
        d = {}
        for role in ("target", "source"):
            diffs = [final[(arm, s)][f"bpb_{role}"] - final[(ref, s)][f"bpb_{role}"] for s in seeds]
            d[role] = {"values": diffs, "mean": statistics.mean(diffs), "std": statistics.stdev(diffs)}
        out[arm] = {"reference": ref, "seeds": seeds, **d}
    return out


def replay_study(
    params: Any, doc_nll: dict | None, runs: list[str], n_boot: int = stats.N_BOOT, spread: dict | None = None
) -> dict[str, Any]:
    """``replay.json``: forgetting of every run, the replay arms' effects and shares, the annealing arms against
    their reference, both seed by seed when ``spread`` (the run-to-run spread) covers them, and the choice."""
    if not doc_nll or not doc_nll.get("checkpoints"):
        return {}
    seed = params.shared.seed
    arms = replay_arms(params)
    shares = {a: source_share(params, a) for a in arms}
    forget = forgetting(doc_nll, runs, n_boot=n_boot, seed=seed)
    effects = replay_effects(doc_nll, arms, n_boot=n_boot, seed=seed)
    final, _ = _rows(doc_nll)
    anneal = {}
    for arm, ref in anneal_arms(params).items():
        if arm in final and ref in final:
            anneal[arm] = {"reference": ref, "last_phase": params.pretrain_for(arm).phases[-1].name} | {
                role: stats.paired_difference(
                    final[arm][role], final[ref][role], doc_nll["bytes"][role], n_boot=n_boot, seed=seed
                )
                for role in ("target", "source")
            }
    return {
        "across_seeds": across_seeds(spread, {**arms, **anneal_arms(params)}),
        "anneal": anneal,
        "definition": "forgetting = final source bits per byte - the base model's (its own tokenizer), on the "
        "evaluation's source test text; swap = step 0 - base; training = final - step 0",
        "forgetting": forget,
        "arms": {a: {**effects[a], "source_share": shares[a]} for a in effects},
        "choice": choose(effects, {a: shares[a]["overall"] for a in effects}) if effects else None,
        "goal": {"min_reduction": MIN_REDUCTION, "max_target_cost": MAX_COST},
    }


# ---------------------------------------------------------------- the report's part


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _ci_pct(point: float | None, ci: list | None) -> str:
    if point is None:
        return "–"
    return f"{_pct(point)} [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else _pct(point)


def tables(rep: dict, final: dict[str, dict], src: str) -> list[dict]:
    """Forgetting per run (its swap and training shares, its source cloze accuracy) and the replay arms against
    their reference; ``final``: ``eval.json``'s ``runs`` (final values and their intervals)."""
    from warmstart.describe import fmt_ci
    from warmstart.fragments import table

    forget = rep.get("forgetting") or {}
    out = []
    if forget.get("runs"):
        rows = [
            [run, fmt_ci(final.get(run, {}).get("bpb_source"), final.get(run, {}).get("bpb_source_ci"), 3)]
            + [fmt_ci(d[k]["diff"], d[k].get("ci"), 3) for k in ("forgetting", "swap", "training")]
            + [fmt_ci(final.get(run, {}).get("cloze_acc_source"), final.get(run, {}).get("cloze_acc_source_ci"), 3)]
            for run, d in forget["runs"].items()
        ]
        out.append(
            table(
                rows,
                f"Forgetting: final {src} bits per byte minus the base model's ({forget['base_bpb']:.3f}, its own "
                "tokenizer), split into the vocabulary swap's share (step 0 minus base) and training's (final minus "
                "step 0); paired 95% bootstrap intervals over the held-out source paragraphs. Cloze: the "
                f"{src} cloze probe's accuracy (Wilson interval), which bits per byte alone can miss.",
                [
                    "run",
                    f"final {src} bits per byte",
                    "forgetting",
                    "from the swap (step 0)",
                    "from training",
                    f"{src} cloze accuracy",
                ],  # fmt: skip
            )
        )
    if rep.get("arms"):
        rows = []
        for arm, e in rep["arms"].items():
            share = e["source_share"]
            phases = ", ".join(f"{ph} {_pct(v)}" for ph, v in share["phases"].items())
            rows.append(
                [
                    arm,
                    e["reference"],
                    f"{phases} ({_pct(share['overall'])} of all rows)",
                    f"{e['forgetting']:.3f} vs {e['reference_forgetting']:.3f}",
                    _ci_pct(e["reduction"], e.get("reduction_ci")),
                    fmt_ci(e["target_cost"]["diff"], e["target_cost"].get("ci"), 4),
                ]
            )
        goal = rep["goal"]
        out.append(
            table(
                rows,
                f"Source replay: each arm against the run it starts from, trained without replay on the same target "
                f"rows. Forgetting removed: 1 - forgetting(arm) / forgetting(reference), with a bootstrap interval on "
                f"the same resamples; target cost: final target bits per byte, arm minus reference (paired). Goal: "
                f"at least {goal['min_reduction']:.0%} removed at a cost whose interval stays below "
                f"{goal['max_target_cost']}.",
                [
                    "arm",
                    "reference",
                    "source rows",
                    "forgetting, arm vs reference",
                    "forgetting removed",
                    "target cost (bits per byte)",
                ],  # fmt: skip
            )
        )
    return out


def figure(rep: dict, fin: Any, path: Any, src: str, tgt: str) -> dict[str, str] | None:
    """Target against source final bits per byte per run: the trade-off replay moves along."""
    import matplotlib.pyplot as plt

    if fin is None or fin.empty or not rep.get("forgetting"):
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    replay = set(rep.get("arms") or {})
    refs = {e["reference"] for e in (rep.get("arms") or {}).values()}
    for _, r in fin.iterrows():
        hot = r["run"] in replay or r["run"] in refs
        ax.scatter(r["bpb_target"], r["bpb_source"], s=36 if hot else 18, color="C3" if hot else "0.55", zorder=3)
        ax.annotate(r["run"], (r["bpb_target"], r["bpb_source"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    for arm, e in (rep.get("arms") or {}).items():
        a, b = fin[fin["run"] == e["reference"]], fin[fin["run"] == arm]
        if len(a) and len(b):
            ax.annotate("", (b["bpb_target"].iloc[0], b["bpb_source"].iloc[0]),
                        (a["bpb_target"].iloc[0], a["bpb_source"].iloc[0]),
                        arrowprops={"arrowstyle": "->", "color": "C3", "lw": 0.8})  # fmt: skip
    ax.axhline(rep["forgetting"]["base_bpb"], ls="--", color="C0", lw=0.8, label=f"base model, {src}")
    ax.set_xlabel(f"final {tgt} bits per byte (lower is better)")
    ax.set_ylabel(f"final {src} bits per byte")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return {
        "path": str(path),
        "caption": f"What adaptation costs the source language: every run's final {tgt} (x) against {src} (y) bits "
        f"per byte; dashed: the base model on {src} with its own tokenizer, so a run's height above it is its "
        "forgetting. Arrows: from a run to its source-replay arms (red), same target rows.",
    }


def paragraphs(rep: dict, src: str) -> list[str]:
    """What forgetting is here, which share the swap causes, and the replay choice in words."""
    forget, arms, choice = rep.get("forgetting") or {}, rep.get("arms") or {}, rep.get("choice")
    if not forget:
        return []
    paras = [
        f"Forgetting is a run's final {src} bits per byte minus the base model's ({forget['base_bpb']:.3f} with its "
        f"own tokenizer) on the same held-out {src} text. It has two sources: the vocabulary swap (step 0, before "
        "any training: the new tokenizer splits source text into more pieces and the new rows were not made for "
        "it) and training on target text alone."
    ]
    for arm, d in (rep.get("anneal") or {}).items():
        t, so = d["target"], d["source"]
        verdict = (
            ("helps" if t["ci"][1] < 0 else "hurts" if t["ci"][0] > 0 else "is not told apart") if t["ci"] else "?"
        )
        paras.append(
            f"Annealing ({arm}: a last phase, {d['last_phase']}, decaying the learning rate to near zero on its own "
            f"mix, against {d['reference']} on the same target rows): target bits per byte "
            f"{t['diff']:+.4f}"
            + (f" [{t['ci'][0]:+.4f}, {t['ci'][1]:+.4f}]" if t["ci"] else "")
            + f", so at this scale it {verdict}; {src} {so['diff']:+.3f}"
            + (f" [{so['ci'][0]:+.3f}, {so['ci'][1]:+.3f}]." if so["ci"] else ".")
        )
    seeds = rep.get("across_seeds") or {}
    if seeds:
        paras.append(
            "Across seeds (the run-to-run spread's runs, each arm minus its reference at the same seed): "
            + "; ".join(
                f"{arm} target {d['target']['mean']:+.4f} ± {d['target']['std']:.4f}, {src} "
                f"{d['source']['mean']:+.3f} ± {d['source']['std']:.3f} (seeds {', '.join(map(str, d['seeds']))})"
                for arm, d in seeds.items()
            )
            + "."
        )
    if arms and choice:
        if choice["arm"]:
            e = arms[choice["arm"]]
            paras.append(
                f"Replay: pick {choice['arm']} ({_pct(e['source_share']['overall'])} of all rows from {src}): "
                f"{choice['why']}. It removes {_ci_pct(e['reduction'], e.get('reduction_ci'))} of "
                f"{e['reference']}'s forgetting at a target cost of {e['target_cost']['diff']:+.4f} bits per byte "
                f"[{e['target_cost']['ci'][0]:+.4f}, {e['target_cost']['ci'][1]:+.4f}]"
                + ("." if choice["meets_goal"] else " — short of the goal.")
            )
        else:
            paras.append(f"Replay: no arm to recommend: {choice['why']}.")
    return paras


def findings(rep: dict, src: str) -> list[str]:
    """At most two summary sentences: the best replay arm's effect, or forgetting alone."""
    arms, choice = rep.get("arms") or {}, rep.get("choice") or {}
    if choice.get("arm"):
        e = arms[choice["arm"]]
        return [
            f"Source replay ({choice['arm']}, {_pct(e['source_share']['overall'])} of rows) removes "
            f"{_ci_pct(e['reduction'], e.get('reduction_ci'))} of {e['reference']}'s {src} forgetting at a target "
            f"cost of {e['target_cost']['diff']:+.4f} bits per byte [{e['target_cost']['ci'][0]:+.4f}, "
            f"{e['target_cost']['ci'][1]:+.4f}]{'' if choice['meets_goal'] else ' (short of the two-thirds goal)'}."
        ]
    return []


def numbers(rep: dict) -> tuple[dict[str, Any], dict[str, str]]:
    """The fragment's numbers and their labels: forgetting per run, each replay arm's share removed and cost."""
    nums: dict[str, Any] = {}
    labels: dict[str, str] = {}
    for run, d in ((rep.get("forgetting") or {}).get("runs") or {}).items():
        nums[f"forgetting.{run}"] = d["forgetting"]["diff"]
        labels[f"forgetting.{run}"] = f"forgetting (source bits per byte above the base model), {run}"
    for arm, e in (rep.get("arms") or {}).items():
        if e["reduction"] is not None:  # None: the reference did not forget
            nums[f"replay_reduction.{arm}"] = e["reduction"]
            labels[f"replay_reduction.{arm}"] = f"share of its reference's forgetting removed, {arm}"
        nums[f"replay_cost.{arm}"] = e["target_cost"]["diff"]
        labels[f"replay_cost.{arm}"] = f"target bits per byte cost of replay, {arm}"
    return nums, labels


def headline(rep: dict) -> dict[str, Any]:
    """``reports/metrics/replay.json``: the base model's source bits per byte, forgetting of the replay arms and
    their reference, each arm's share removed and target cost, annealing's target difference, the choice."""
    forget = rep.get("forgetting") or {}
    out: dict[str, Any] = {"base_source_bpb": forget.get("base_bpb")} if forget else {}
    arms = rep.get("arms") or {}
    for run in [*{e["reference"]: 0 for e in arms.values()}, *arms]:
        if run in forget.get("runs", {}):
            out[f"forgetting_{run}"] = forget["runs"][run]["forgetting"]["diff"]
    for arm, e in arms.items():
        out[f"replay_reduction_{arm}"] = e["reduction"]
        out[f"replay_target_cost_{arm}"] = e["target_cost"]["diff"]
    for arm, d in (rep.get("anneal") or {}).items():
        out[f"anneal_target_diff_{arm}"] = d["target"]["diff"]
    if rep.get("choice"):
        out["replay_choice"] = rep["choice"]["arm"] or "none"
        out["replay_goal_met"] = bool(rep["choice"]["meets_goal"])
    return out
