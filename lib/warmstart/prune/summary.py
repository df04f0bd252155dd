"""The ``compress`` stage's collection: every variant against the teacher and scratch.

Reads ``reports/compress/prep.json`` (teacher, its correction, importance, the masking check)
and ``reports/compress/<variant>.json`` (each student's bits-per-byte curve
against training bytes), and writes ``reports/metrics/compress.json``, figures
under ``reports/figures/compress/``, the report fragment and the compressed
model's card (``reports/cards/compress/MODEL_CARD.md``).

Comparisons (the issue's goals for the default study, each stated as measured):
``width_kd`` against same-shape ``scratch`` on the same bytes (final target bits
per byte at least 0.05 better), against the teacher (within 5%), and the
bytes-to-reach speed-up over scratch (at least 5x: scratch's bytes over the
bytes ``width_kd`` needs to reach scratch's final bits per byte); width against
depth and distillation against cross-entropy, compared with Minitron's findings.
When the teacher was corrected (``compress.teacher_correction.steps > 0``) every
teacher number is the corrected teacher's and says so; the report and the card
state whether it was, and with how many steps.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from warmstart.evaluate.tables import bytes_to_reach, speedup
from warmstart.fragments import table, write_fragment
from warmstart.io import write_text
from warmstart.outputs import read_records, save_figure, write_headline

LABELS = {
    "width_kd": "width-pruned, distilled",
    "depth_kd": "depth-pruned, distilled",
    "width_ce": "width-pruned, cross-entropy",
    "random_kd": "random-importance width, distilled",
    "scratch": "same shape from scratch",
}


def _load(params: Any) -> tuple[dict, dict[str, dict]]:
    prep = json.loads(params.report_path("compress", "prep.json").read_text())
    return prep, read_records(params, "compress", params.compress.variants, "compress_run")


def teacher_label(s: dict) -> str:
    """The teacher's row and legend label: its run, and its correction steps when it was corrected."""
    c = s["teacher_correction"]
    return f"teacher ({s['teacher']}, corrected: {c['steps']} steps)" if c["corrected"] else f"teacher ({s['teacher']})"


def teacher_word(s: dict) -> str:
    return "the corrected teacher" if s["teacher_correction"]["corrected"] else "the teacher"


def correction_sentence(params: Any, s: dict) -> str:
    """Whether the teacher was corrected, and what correction did to its bits per byte."""
    c, tgt, src = s["teacher_correction"], params.shared.target_lang, params.shared.source_lang
    if not c["corrected"]:
        return (
            f"The teacher is `{s['teacher']}` as trained, with no teacher correction (compress.teacher_correction.steps "
            "is 0): the students' distillation text is the target training text the teacher was trained on."
        )
    b, a = c["bpb_before"], c["bpb_after"]
    return (
        f"The teacher was corrected first (Minitron's teacher correction): `{s['teacher']}` fine-tuned for {c['steps']} "
        f"steps ({c['bytes']:,} bytes) on the students' target training text, which moved its target bits per byte "
        f"from {b[tgt]:.3f} to {a[tgt]:.3f} and its source bits per byte from {b[src]:.3f} to {a[src]:.3f}; every "
        "student was pruned from and distilled from the corrected teacher, and every teacher number here is the corrected "
        "teacher's."
    )


def _curve(run: dict, lang: str) -> pd.DataFrame:
    return pd.DataFrame([{"bytes": p["bytes"], "bpb": p[f"bpb_{lang}"]} for p in run["curve"]])


def summarise(params: Any, prep: dict, runs: dict[str, dict]) -> dict[str, Any]:
    """Per variant: sizes, final bits per byte, speed-up over scratch; the goals, measured."""
    tgt, src = params.shared.target_lang, params.shared.source_lang
    teacher_bpb = prep["teacher_bpb"]
    scratch = _curve(runs["scratch"], tgt) if "scratch" in runs else None
    rows = {}
    for v, r in runs.items():
        c = _curve(r, tgt)
        other = scratch is not None and v != "scratch"
        sp = speedup(c, scratch) if other else None
        rows[v] = {
            "label": LABELS[v],
            "total_params": r["params"]["total"],
            "non_embedding_params": r["params"]["non_embedding"],
            "bytes": r["bytes"],
            "init_bpb_target": r["curve"][0][f"bpb_{tgt}"],
            "bpb_target": r["curve"][-1][f"bpb_{tgt}"],
            "bpb_source": r["curve"][-1][f"bpb_{src}"],
            "speedup_vs_scratch": sp,
            "gap_to_teacher_pct": 100 * (r["curve"][-1][f"bpb_{tgt}"] / teacher_bpb[tgt] - 1),
            "bytes_to_teacher_plus_5pct": bytes_to_reach(c, 1.05 * teacher_bpb[tgt]),
            "bytes_to_scratch_final": bytes_to_reach(c, float(scratch.sort_values("bytes")["bpb"].iloc[-1]))
            if other
            else None,
        }
    m = prep["masking"]
    goals: dict[str, Any] = {}
    for unit in ("neurons", "heads"):
        u = m.get(unit)
        if u:
            goals[f"masking_{unit}_least_below_half_random"] = bool(u["least_increase"] < 0.5 * u["random_increase"])
    w, s = rows.get("width_kd"), rows.get("scratch")
    if w and s:
        goals["width_kd_0.05_better_than_scratch"] = bool(s["bpb_target"] - w["bpb_target"] >= 0.05)
        goals["width_kd_within_5pct_of_teacher"] = bool(w["gap_to_teacher_pct"] <= 5.0)
        goals["width_kd_speedup_at_least_5"] = (
            None if w["speedup_vs_scratch"] is None else bool(w["speedup_vs_scratch"] >= 5)
        )
    return {
        "teacher": prep["teacher"],
        "teacher_bpb": teacher_bpb,
        "teacher_params": prep["teacher_params"],
        "teacher_bytes": prep.get("teacher_bytes"),
        "masking": m,
        "variants": rows,
        "goals": goals,
        "teacher_correction": prep.get("teacher_correction", {"steps": 0, "corrected": False}),
    }


def _fmt(v: Any, f: str = "{:.3f}") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float) and math.isinf(v):
        return "∞"
    return f.format(v)


def reach(w: dict) -> str:
    """How fast a student reaches scratch's final bits per byte, in words (infinite: before any retraining)."""
    sp = w["speedup_vs_scratch"]
    if sp is None:
        return "it never reaches scratch's final bits per byte"
    if math.isinf(sp):
        return f"right after pruning, before any retraining, it is already below scratch's final bits per byte ({w['init_bpb_target']:.3f})"
    return f"it reaches scratch's final bits per byte with {sp:.1f}x fewer bytes than scratch"


def findings(params: Any, s: dict) -> list[str]:
    """Sentences with the numbers, for the report (whichever way each comparison falls)."""
    tgt = params.shared.target_lang
    v, t = s["variants"], s["teacher_bpb"][tgt]
    out = [correction_sentence(params, s)]
    m = s["masking"]
    for unit in ("neurons", "heads"):
        u = m.get(unit)
        if u:
            out.append(
                f"Masking the {m.get('fraction', 0.25):.0%} least important {unit} raises target bits per byte by "
                f"{u['least_increase']:+.3f}, a random {m.get('fraction', 0.25):.0%} by {u['random_increase']:+.3f} on average over "
                f"{len(u['random'])} random draws (range {min(u['random']) - m['baseline']:+.3f} to {max(u['random']) - m['baseline']:+.3f}); "
                f"goal, less than half: {'met' if s['goals'][f'masking_{unit}_least_below_half_random'] else 'missed'}."
            )
    if "width_kd" in v and "scratch" in v:
        w, sc = v["width_kd"], v["scratch"]
        out.append(
            f"The width-pruned, distilled student ({w['non_embedding_params']:,} non-embedding parameters, "
            f"{w['total_params']:,} in all) reaches {w['bpb_target']:.3f} target bits per byte after {w['bytes']:,} bytes; "
            f"scratch of the same shape on the same bytes {sc['bpb_target']:.3f} (difference {sc['bpb_target'] - w['bpb_target']:+.3f}, "
            f"goal at least 0.05), {teacher_word(s)} {t:.3f} (gap {w['gap_to_teacher_pct']:+.1f}%, goal within 5%); {reach(w)} (goal: "
            f"at least 5x fewer bytes than scratch)."
        )
    if "width_kd" in v and "depth_kd" in v:
        a, b = v["width_kd"]["bpb_target"], v["depth_kd"]["bpb_target"]
        out.append(
            f"Width against depth pruning at about equal non-embedding size: {a:.3f} against {b:.3f} bits per byte "
            f"({'width better, as Minitron found' if a < b else 'depth better or equal, unlike Minitron'})."
        )
    if "width_kd" in v and "width_ce" in v:
        a, b = v["width_kd"]["bpb_target"], v["width_ce"]["bpb_target"]
        out.append(
            f"Distillation against cross-entropy retraining of the same pruned model: {a:.3f} against {b:.3f} "
            f"({'distillation better, as Minitron found' if a < b else 'cross-entropy better or equal, unlike Minitron'})."
        )
    if "width_kd" in v and "random_kd" in v:
        a, b = v["width_kd"], v["random_kd"]
        out.append(
            f"Importance against random ranking before retraining: {a['init_bpb_target']:.3f} against "
            f"{b['init_bpb_target']:.3f} bits per byte; after distillation {a['bpb_target']:.3f} against {b['bpb_target']:.3f}."
        )
    out.append(
        "One seed per variant: differences of a few thousandths of a bit per byte are within run-to-run noise "
        "at this scale."
    )
    return out


LABELS_NUMBERS = {
    "teacher": "teacher (the adapted run)",
    "teacher_bpb": "teacher's target bits per byte",
    **{f"bpb_{v}": f"{label}: target bits per byte" for v, label in LABELS.items()},
    "width_kd_speedup_vs_scratch": "width-pruned, distilled: speed-up over scratch in bytes (x)",
    "width_kd_bytes_to_scratch_final": "width-pruned, distilled: training bytes to reach scratch's final bits per byte (0: below it when pruned)",
    "width_kd_gap_to_teacher_pct": "width-pruned, distilled: gap to the teacher (%)",
}


def number_labels(s: dict) -> dict[str, str]:
    """:data:`LABELS_NUMBERS`, the teacher's marked as the corrected teacher's when it was corrected."""
    if not s["teacher_correction"]["corrected"]:
        return LABELS_NUMBERS
    return {
        **LABELS_NUMBERS,
        "teacher": f"teacher (the adapted run, corrected: {s['teacher_correction']['steps']} steps)",
        "teacher_bpb": "corrected teacher's target bits per byte",
        "width_kd_gap_to_teacher_pct": "width-pruned, distilled: gap to the corrected teacher (%)",
    }


def _finite(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (nested dicts and lists)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def headline(s: dict, tgt: str) -> dict[str, Any]:
    """The stage's flat headline numbers from :func:`summarise`'s result (finite numbers only: a student that
    starts below scratch's final bits per byte has 0 bytes to reach it and no finite speed-up, so none is given)."""
    head = {"teacher": s["teacher"]}
    for v in ("width_kd", "depth_kd", "width_ce", "random_kd", "scratch"):
        if v in s["variants"]:
            head[f"bpb_{v}"] = s["variants"][v]["bpb_target"]
    if "width_kd" in s["variants"]:
        w = s["variants"]["width_kd"]
        if w["bytes_to_scratch_final"] is not None:
            head["width_kd_bytes_to_scratch_final"] = w["bytes_to_scratch_final"]
        if w["speedup_vs_scratch"] is not None and math.isfinite(w["speedup_vs_scratch"]):
            head["width_kd_speedup_vs_scratch"] = w["speedup_vs_scratch"]
        head["width_kd_gap_to_teacher_pct"] = w["gap_to_teacher_pct"]
    head["teacher_bpb"] = s["teacher_bpb"][tgt]
    return head


def page_findings(params: Any, s: dict) -> list[str]:
    """At most four short sentences for the report's first page."""
    v, t, out = s["variants"], s["teacher_bpb"][params.shared.target_lang], []
    m = s["masking"]
    if m.get("neurons") and m.get("heads"):
        out.append(
            f"Masking the least important quarter of MLP neurons (heads) costs {m['neurons']['least_increase']:+.3f} "
            f"({m['heads']['least_increase']:+.3f}) bits per byte against {m['neurons']['random_increase']:+.3f} "
            f"({m['heads']['random_increase']:+.3f}) for a random quarter."
        )
    if "width_kd" in v and "scratch" in v:
        w, sc = v["width_kd"], v["scratch"]
        out.append(
            f"Width-pruned + distilled at {w['non_embedding_params']:,} non-embedding parameters: {w['bpb_target']:.3f} "
            f"bits per byte against scratch {sc['bpb_target']:.3f} and {teacher_word(s)} {t:.3f} ({w['gap_to_teacher_pct']:+.1f}%); "
            f"{reach(w)}."
        )
    if "width_kd" in v and "depth_kd" in v:
        out.append(
            f"Width against depth pruning: {v['width_kd']['bpb_target']:.3f} against {v['depth_kd']['bpb_target']:.3f} bits per byte."
        )
    if "width_kd" in v and "width_ce" in v:
        out.append(
            f"Distillation against cross-entropy: {v['width_kd']['bpb_target']:.3f} against {v['width_ce']['bpb_target']:.3f} bits per byte."
        )
    return out[:4]


def dropped_rows(runs: dict[str, dict]) -> list[list[str]]:
    """Per pruned variant, the units its plan dropped (``prune_plan.json`` beside the student's initial model)."""
    rows = []
    for v, r in runs.items():
        path = Path(r["init"]) / "prune_plan.json"
        if not path.is_file():
            continue
        d = json.loads(path.read_text())["dropped"]
        heads = "; ".join(f"L{i}: {h}" for i, h in d["heads"].items() if h) or "none"
        neurons = ", ".join(f"L{i}: {len(n)}" for i, n in d["neurons"].items()) or "none"
        rows.append([LABELS[v], str(d["layers"] or "none"), heads, neurons, f"{len(d['hidden'])}"])
    return rows


def _figures(params: Any, prep: dict, runs: dict[str, dict], s: dict) -> list[dict]:
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    tgt = params.shared.target_lang
    fig_dir = params.report_path("figures", "compress")
    figs = []
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for v, r in runs.items():
        c = _curve(r, tgt)
        ax.plot(c["bytes"], c["bpb"], marker="o", ms=3, label=LABELS[v])
    ax.axhline(s["teacher_bpb"][tgt], color="black", ls="--", lw=1, label=teacher_label(s))
    ax.set(
        xlabel="target training bytes seen by the student",
        ylabel=f"{tgt} bits per byte (test)",
        title="Students against bytes: prune + distil vs scratch",
    )
    ax.legend(fontsize=7)
    figs.append(
        {
            "path": str(save_figure(fig, fig_dir / "bpb_vs_bytes.png")),
            "caption": f"Target bits per byte of each student against the bytes it trained on; dashed: {teacher_word(s)}.",
        }
    )
    imp = prep["importance"]
    heads = imp.get("heads")
    if heads:
        fig, axes = plt.subplots(1, 3, figsize=(10, 3))
        sns.heatmap(np.array(heads), ax=axes[0], cmap="viridis", cbar=False)
        axes[0].set(title="attention head importance", xlabel="head", ylabel="layer")
        neurons = imp.get("neurons") or []
        axes[1].boxplot([np.asarray(n) for n in neurons], showfliers=False)
        axes[1].set(title="MLP neuron importance", xlabel="layer (1-based)", ylabel="activation score")
        layers = imp.get("layers") or []
        axes[2].bar(range(len(layers)), layers)
        axes[2].set(title="layer importance (1 − cos)", xlabel="layer", ylabel="score")
        fig.tight_layout()
        figs.append(
            {
                "path": str(save_figure(fig, fig_dir / "importance.png")),
                "caption": "Activation importance of the teacher's heads, MLP neurons and layers on the calibration set.",
            }
        )
    return figs


def card(params: Any, s: dict, runs: dict[str, dict]) -> str:
    """The compressed model's card (``width_kd``): what it is, how it was made, what it scores."""
    tgt = params.shared.target_lang
    name = "width_kd" if "width_kd" in runs else next(iter(runs))
    r, v = runs[name], s["variants"][name]
    cfg = r["model_config"]
    lines = [
        f"# {cfg.get('architectures', ['model'])[0]}: {LABELS[name]} from `{s['teacher']}`",
        "",
        f"Pruned from the study's adapted model `{s['teacher']}` ({s['teacher_params']['total']:,} parameters, "
        f"{s['teacher_params']['non_embedding']:,} non-embedding) to {v['total_params']:,} parameters "
        f"({v['non_embedding_params']:,} non-embedding): hidden {cfg.get('hidden_size')}, {cfg.get('num_hidden_layers')} layers, "
        f"{cfg.get('num_attention_heads')} heads ({cfg.get('num_key_value_heads')} KV), MLP {cfg.get('intermediate_size')}. "
        f"Ranking: Minitron's activation importance; retraining: "
        f"{'logit distillation (forward KL) from the frozen teacher' if r['distilled'] else 'cross-entropy'} on {v['bytes']:,} "
        f"bytes of {tgt} text.",
        "",
        correction_sentence(params, s),
        "",
        "| | target bits per byte | source bits per byte |",
        "|---|---|---|",
        f"| this model | {v['bpb_target']:.3f} | {v['bpb_source']:.3f} |",
        f"| {teacher_label(s)} | {s['teacher_bpb'][tgt]:.3f} | {s['teacher_bpb'][params.shared.source_lang]:.3f} |",
        "",
        f'Load: `AutoModelForCausalLM.from_pretrained("{r["final"]}")` (safetensors; the tokenizer is beside it).',
        "",
        "Limitations: a research artefact of a tiny study (one seed, CPU scale); not for use beyond it.",
    ]
    return "\n".join(lines) + "\n"


def collect(params: Any, show: bool = False) -> dict[str, Any]:
    """Write the metrics, figures, fragment and card; return the headline."""
    prep, runs = _load(params)
    s = summarise(params, prep, runs)
    figs = _figures(params, prep, runs, s)
    tgt = params.shared.target_lang
    rows = [
        [
            r["label"],
            f"{r['total_params']:,}",
            f"{r['non_embedding_params']:,}",
            f"{r['bytes']:,}",
            _fmt(r["init_bpb_target"]),
            _fmt(r["bpb_target"]),
            _fmt(r["bpb_source"]),
            _fmt(r["speedup_vs_scratch"], "{:.1f}x"),
            f"{r['gap_to_teacher_pct']:+.1f}%",
        ]
        for r in s["variants"].values()
    ]
    tp = s["teacher_params"]
    rows.append(
        [
            teacher_label(s),
            f"{tp['total']:,}",
            f"{tp['non_embedding']:,}",
            _fmt(s["teacher_bytes"], "{:,}"),
            "—",
            _fmt(s["teacher_bpb"][tgt]),
            _fmt(s["teacher_bpb"][params.shared.source_lang]),
            "—",
            "0.0%",
        ]
    )
    cols = [
        "variant",
        "parameters",
        "non-embedding",
        "training bytes",
        "bits/byte after pruning",
        "target bits/byte",
        "source bits/byte",
        "speed-up vs scratch",
        "gap to teacher",
    ]
    tables = [
        table(rows, "Prune and distil: every student against the teacher (test text, bits per byte)", columns=cols)
    ]
    dropped = dropped_rows(runs)
    if dropped:
        tables.append(
            table(
                dropped,
                "What each pruned student dropped (by the importance ranking; layers and heads 0-based)",
                columns=[
                    "variant",
                    "layers dropped",
                    "heads dropped per layer",
                    "MLP neurons dropped per layer",
                    "hidden channels dropped",
                ],
            )
        )
    found = findings(params, s)
    head = headline(s, tgt)
    write_fragment(
        params.shared.reports_dir,
        "compress",
        85,
        "Prune and distil (Minitron)",
        found,
        tables,
        figs,
        {"goals": s["goals"], **head},
        findings=page_findings(params, s),
        labels=number_labels(s),
    )
    out = params.report_path("cards", "compress")
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "MODEL_CARD.md", card(params, s, runs))
    # strict JSON: an infinite speed-up (a student below scratch's final when pruned) is null there, with its
    # bytes_to_scratch_final of 0 saying why
    (Path(out) / "summary.json").write_text(json.dumps(_finite(s), indent=2, default=str, allow_nan=False) + "\n")
    return write_headline(params, "compress", head)
