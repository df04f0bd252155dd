"""The ``context`` stage's collection: the testbed and the adapted model's extensions.

Reads ``reports/context/testbed.json`` (:func:`warmstart.context.testbed.run_testbed`) and
``reports/context/<method>.json`` (:func:`warmstart.stages.context.run_method`), and writes
``reports/metrics/context.json``, figures under ``reports/figures/context/``, the report fragment
and the extended model's card (``reports/cards/context/MODEL_CARD.md``).

Alfred-40B-1023's two claims are tested on the testbed, where the methods can be told apart
(:func:`warmstart.context.testbed.alfred_claims`: reproduced, refuted or unresolved by Wilson 95%
intervals); this module puts them, and the issue's targets, into words and figures.
"""

from __future__ import annotations

import json
from typing import Any

from warmstart.context.testbed_seeds import seeds_for
from warmstart.fragments import table, write_fragment
from warmstart.io import read_jsonl, write_text
from warmstart.outputs import read_records, save_figure, write_headline

SHORT = "short"


def _cell(c: dict) -> str:
    return f"{c['acc']:.2f} [{c['lo']:.2f}, {c['hi']:.2f}]"


def testbed_findings(tb: dict) -> tuple[list[str], dict[str, Any]]:
    """The issue's targets and Alfred's claims on the testbed (:func:`warmstart.context.testbed.summary`), in words."""
    s = tb["summary"]
    task, L, top = s["task"], str(s["trained_len"]), str(s["extended_len"])
    zs, ft = tb["zero_shot"], tb["finetuned"]
    paras = []
    if "none" in zs:
        paras.append(
            f"Testbed ({task}, {zs['none'][task][L]['n']} items per cell, Wilson 95% intervals): the small Llama "
            f"trained at L = {L} scores {_cell(zs['none'][task][L])} at L (goal at least 0.90); zero-shot at {top} "
            f"tokens, none (the control) {_cell(zs['none'][task][top])} (goal at most 0.10)."
        )
    best = s.get("best_zero_shot")
    if best:
        paras.append(f"Best zero-shot at {top}: {best} {_cell(zs[best][task][top])} (goal at least 0.70).")
    bft = s.get("best_finetuned")
    if bft:
        paras.append(
            f"After the fine-tune at {top}: best {bft} {_cell(ft[bft][task][top])} (goal at least 0.95), "
            f"{_cell(ft[bft][task][L])} at L (goal: no more than 2 points below)."
        )
    claims = {}
    for t, a in s.get("alfred", {}).items():
        c1, c2 = a.get("yarn_best_zero_shot"), a.get("ntk_family_ge_yarn_finetuned")
        if c1:
            claims[f"{t}_yarn_best_zero_shot"] = c1["verdict"]
            paras.append(
                f"Alfred's claim 1 on {t}, YaRN best zero-shot: yarn {c1['yarn']:.2f} [{c1['yarn_ci'][0]:.2f}, "
                f"{c1['yarn_ci'][1]:.2f}] against the runner-up {c1['runner_up']} {c1['runner_up_acc']:.2f} "
                f"[{c1['runner_up_ci'][0]:.2f}, {c1['runner_up_ci'][1]:.2f}]: {c1['verdict']}."
            )
        if c2:
            claims[f"{t}_ntk_family_ge_yarn_finetuned"] = c2["verdict"]
            paras.append(
                f"Alfred's claim 2 on {t}, the NTK family at least as good as YaRN after fine-tuning: "
                f"{c2['best_ntk_family']} {c2['best_acc']:.2f} [{c2['best_ci'][0]:.2f}, {c2['best_ci'][1]:.2f}] "
                f"against yarn {c2['yarn']:.2f} [{c2['yarn_ci'][0]:.2f}, {c2['yarn_ci'][1]:.2f}]: {c2['verdict']}."
            )
    return paras, {"goals": s.get("targets", {}), "claims": claims, "best_zero_shot": best}


def _testbed_table(tb: dict) -> dict:
    s = tb["summary"]
    task, lengths = s["task"], [str(n) for n in tb["lengths"]]
    rows = [
        [m, when.replace("_", "-"), *[_cell(cells[task][n]) if n in cells[task] else "—" for n in lengths]]
        for when in ("zero_shot", "finetuned")
        for m, cells in tb[when].items()
    ]
    return table(
        rows,
        f"Testbed exact match ({task}) by method and length, Wilson 95% intervals",
        columns=["method", "when", *[f"{n} tokens" for n in lengths]],
    )


def seeds_section(rec: dict, study_seed: int | None = None) -> tuple[list[str], dict]:
    """The testbed once per training seed (:mod:`warmstart.context.testbed_seeds`): a paragraph and a table."""
    seeds, rows = rec["per_seed"], []
    n, top, met = len(rec["per_seed"]), rec["extended_len"], rec["targets_met"]
    for seed, r in seeds.items():
        zs, b = r["zero_shot_at_factor_L"], r["best_zero_shot"]
        bft = r["best_finetuned"]
        rows.append(
            [
                seed,
                f"{zs['none']:.2f}" if "none" in zs else "—",
                f"{b} {zs[b]:.2f} [{r['best_zero_shot_ci'][0]:.2f}, {r['best_zero_shot_ci'][1]:.2f}]" if b else "—",
                f"{zs['yarn']:.2f}" if "yarn" in zs else "—",
                f"{bft} {r['finetuned_at_factor_L'][bft]:.2f}" if bft else "—",
                f"{sum(v is True for v in r['targets'].values())} of {sum(v is not None for v in r['targets'].values())}",
            ]
        )
    zs_all, ft_all = rec["across"]["zero_shot_at_factor_L"], rec["across"]["finetuned_at_factor_L"]
    span = lambda a: f"{a['mean']:.2f} ({a['min']:.2f}–{a['max']:.2f})"  # noqa: E731
    rows.append(
        [
            "mean (range)",
            span(zs_all["none"]) if "none" in zs_all else "—",
            "",
            span(zs_all["yarn"]) if "yarn" in zs_all else "—",
            "",
            "",
        ]
    )
    t = table(
        rows,
        f"The testbed once per training seed ({rec['task']}, zero-shot and fine-tuned at {top} tokens; "
        "make testbed-seeds)",
        columns=[
            "seed",
            "none zero-shot",
            "best zero-shot [Wilson 95%]",
            "yarn zero-shot",
            "best fine-tuned",
            "targets met",
        ],
    )
    count = lambda k: f"{met.get(k, 0)} of {n}"  # noqa: E731
    best_ft = max(ft_all, key=lambda m: ft_all[m]["mean"]) if ft_all else None
    para = (
        f"The same testbed trained once per seed ({n} seeds: {', '.join(seeds)}; {rec['hardware']}, torch "
        f"{rec['torch']}): the best method zero-shot at {top} tokens reaches 0.70 at {count('best_zero_shot>=0.70')} "
        f"seeds, and the control (none) stays at or below 0.10 at {count('none_zero_shot_at_factor_L<=0.10')}. "
        + (
            f"YaRN is the best method zero-shot at {sum(r['best_zero_shot'] == 'yarn' for r in seeds.values())} of {n} "
            f"seeds and averages {span(zs_all['yarn'])}, none {span(zs_all['none'])}. "
            if "yarn" in zs_all and "none" in zs_all
            else ""
        )
        + (
            f"After the fine-tune the best method reaches 0.95 at {count('best_finetuned>=0.95')} seeds; {best_ft} "
            f"averages {span(ft_all[best_ft])}. "
            if best_ft
            else ""
        )
        + "Whether a model this small extrapolates depends on its training seed as much as on the method "
        "(Zhou et al. 2024)"
        + ("; the study's own testbed above is one of these draws." if str(study_seed) in seeds else ".")
    )
    return [para], t


def _runs(params: Any) -> dict[str, dict]:
    return read_records(params, "context", params.context.methods, "context_run")


def _figures(params: Any, tb: dict | None, runs: dict[str, dict]) -> list[dict]:
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    fig_dir = params.report_path("figures", "context")
    figs = []
    if tb:
        task, top = tb["summary"]["task"], str(tb["summary"]["extended_len"])
        for when in ("zero_shot", "finetuned"):
            cells = {m: r[task][top]["depth"] for m, r in tb[when].items() if top in r.get(task, {})}
            if not cells:
                continue
            mat = np.array([[b["acc"] for b in d] for d in cells.values()])
            fig, ax = plt.subplots(figsize=(7, 0.35 * len(cells) + 1.2))
            sns.heatmap(
                mat, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="viridis", yticklabels=list(cells), ax=ax, cbar=False
            )
            ax.set(
                xlabel="answer depth bucket (0 = start of the window)",
                title=f"Testbed {task} at {top} tokens, {when.replace('_', '-')}",
            )
            figs.append(
                {
                    "path": str(save_figure(fig, fig_dir / f"testbed_depth_{when}.png")),
                    "caption": f"Testbed exact match by the answer's depth at {top} tokens, {when.replace('_', '-')}.",
                }
            )
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    for m, r in runs.items():
        lengths = r["lengths"]
        for ax, when in zip(axes[:2], ("before", "after")):
            ax.plot(lengths, [r[when]["bpb_by_length"][str(n)] for n in lengths], marker="o", label=m)
        log = read_jsonl(r["log"])
        axes[2].plot(
            [x["step"] for x in log if x.get("loss") is not None],
            [x["loss"] for x in log if x.get("loss") is not None],
            label=m,
        )
    axes[0].set(title="zero-shot", xlabel="context length (tokens)", ylabel="bits per byte (test)", xscale="log")
    axes[1].set(
        title="after the fine-tune", xlabel="context length (tokens)", ylabel="bits per byte (test)", xscale="log"
    )
    axes[2].set(title="fine-tune loss", xlabel="step", ylabel="cross-entropy (nats/token)")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    figs.append(
        {
            "path": str(save_figure(fig, fig_dir / "bpb_by_length.png")),
            "caption": "The adapted model extended per method: bits per byte against context length, before and after "
            "the fine-tune (short: fine-tuned at the trained length), and the fine-tune loss (Alfred's figure).",
        }
    )
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for m, r in runs.items():
        pos = r["after"]["bpb_by_position"]
        ax.plot([p["start"] for p in pos], [p["bits_per_byte"] for p in pos], marker="o", ms=3, label=m)
    ax.set(
        xlabel="token position in the window",
        ylabel="bits per byte",
        title="After the fine-tune: bits per byte by position",
    )
    ax.legend(fontsize=7)
    figs.append(
        {
            "path": str(save_figure(fig, fig_dir / "bpb_by_position.png")),
            "caption": "Bits per byte by position in the longest window, after the fine-tune.",
        }
    )
    return figs


def collect(params: Any, show: bool = False) -> dict[str, Any]:
    """Write the metrics, figures, fragment and card; return the headline."""
    tb_path = params.report_path("context", "testbed.json")
    tb = json.loads(tb_path.read_text()) if tb_path.is_file() else None
    runs = _runs(params)
    paras, tables, head = [], [], {}
    verdicts: dict[str, Any] = {}
    if tb:
        p, verdicts = testbed_findings(tb)
        paras += p
        tables.append(_testbed_table(tb))
        task, top = tb["summary"]["task"], str(tb["summary"]["extended_len"])
        head |= {f"claim_{k}": v for k, v in verdicts["claims"].items() if k.startswith(task)}
        if verdicts["best_zero_shot"]:
            head |= {
                "testbed_best_zero_shot": verdicts["best_zero_shot"],
                "testbed_best_zero_shot_acc": tb["zero_shot"][verdicts["best_zero_shot"]][task][top]["acc"],
            }
    spread, why = seeds_for(params)
    if spread:
        p, t = seeds_section(spread, params.shared.seed)
        paras += p
        tables.append(t)
    elif tb:
        paras.append(f"The testbed across training seeds is not shown: {why}.")
    L = params.pretrain.seq_len
    rows = []
    for m, r in runs.items():
        longest = str(r["lengths"][-1])
        suite = r["after"].get("suite", {}).get(longest, {})
        rows.append(
            [
                m,
                r["length"],
                *[
                    f"{r['before']['bpb_by_length'][str(n)]:.3f} → {r['after']['bpb_by_length'][str(n)]:.3f}"
                    for n in r["lengths"]
                ],
                "—" if not suite else f"{suite.get('normalised_mean', float('nan')):.2f}",
            ]
        )
    lengths = next(iter(runs.values()))["lengths"]
    tables.append(
        table(
            rows,
            "The adapted model extended: bits per byte (test, long documents) zero-shot → after the fine-tune",
            columns=[
                "method",
                "fine-tune length",
                *[f"{n} tokens" for n in lengths],
                f"retrieval suite at {lengths[-1]}",
            ],
        )
    )
    extended = [m for m in runs if m not in (SHORT, "none")]
    longest = str(lengths[-1])
    best = min(extended, key=lambda m: runs[m]["after"]["bpb_by_length"][longest]) if extended else None
    if best:
        b = runs[best]
        paras.append(
            f"Of the extended models, {best} has the lowest bits per byte at {longest} tokens after the fine-tune "
            f"({b['after']['bpb_by_length'][longest]:.3f}; zero-shot {b['before']['bpb_by_length'][longest]:.3f}); at the "
            f"trained length {L} it scores {b['after']['bpb_by_length'][str(L)]:.3f}."
        )
        head |= {"best_method": best, f"best_bpb_{longest}": b["after"]["bpb_by_length"][longest]}
    if SHORT in runs and best:
        s = runs[SHORT]
        cost = runs[best]["after"]["bpb_by_length"][str(L)] - s["after"]["bpb_by_length"][str(L)]
        paras.append(
            f"What the extension costs at short context (Alfred's 2K baseline: the same fine-tune tokens at {L}): "
            f"{cost:+.3f} bits per byte at {L} tokens."
        )
        head["short_context_cost_bpb"] = cost
    paras.append(
        "The text retrieval suite measures what a 2.8M-parameter model can retrieve from real text: expect chance "
        "at this scale; the testbed is where the methods separate."
    )
    figs = _figures(params, tb, runs)
    write_fragment(
        params.shared.reports_dir,
        "context",
        80,
        "Context extension",
        paras,
        tables,
        figs,
        {"goals": verdicts.get("goals", {}), **head},
        findings=page_findings(tb, runs, head, L, spread),
        labels=_labels(head),
    )
    out = params.report_path("cards", "context")
    out.mkdir(parents=True, exist_ok=True)
    if best:
        write_text(out / "MODEL_CARD.md", card(params, runs[best]))
    return write_headline(params, "context", head)


LABELS = {
    "best_method": "extension method with the lowest bits per byte at the longest length",
    "short_context_cost_bpb": "cost of the extension at the trained length (bits per byte)",
    "testbed_best_zero_shot": "testbed: best method zero-shot at 4x L",
    "testbed_best_zero_shot_acc": "testbed: its exact match zero-shot at 4x L",
}


def _labels(head: dict) -> dict[str, str]:
    out = dict(LABELS)
    for k in head:
        if k.startswith("claim_"):
            out[k] = "testbed: Alfred's claim, " + k[6:].replace("_", " ").replace("ge yarn", ">= YaRN")
        elif k.startswith("best_bpb_"):
            out[k] = f"bits per byte of that method at {k[9:]} tokens"
    return out


def page_findings(tb: dict | None, runs: dict[str, dict], head: dict, L: int, spread: dict | None = None) -> list[str]:
    """At most four short sentences for the report's first page (``spread``: the testbed across seeds, if measured)."""
    out = []
    if tb:
        s = tb["summary"]
        task, top = s["task"], str(s["extended_len"])
        best, bft = s.get("best_zero_shot"), s.get("best_finetuned")
        if best:
            c = tb["zero_shot"][best][task][top]
            none = tb["zero_shot"].get("none", {}).get(task, {}).get(top)
            z = (spread or {}).get("across", {}).get("zero_shot_at_factor_L", {}).get(best)
            out.append(
                f"Testbed ({task}): zero-shot at {top} tokens, {best} is best with {_cell(c)}"
                + (f", none {_cell(none)}" if none and best != "none" else "")
                + (
                    f"; over {len(spread['seeds'])} training seeds {best} averages {z['mean']:.2f} "
                    f"({z['min']:.2f}–{z['max']:.2f})"
                    if z
                    else ""
                )
                + "."
            )
        if bft:
            out.append(f"Testbed after a fine-tune at {top}: {bft} {_cell(tb['finetuned'][bft][task][top])}.")
        a = s.get("alfred", {}).get(task, {})
        verdicts = [
            f"{name} {a[k]['verdict']}"
            for k, name in (
                ("yarn_best_zero_shot", "YaRN best zero-shot:"),
                ("ntk_family_ge_yarn_finetuned", "NTK family >= YaRN after fine-tuning:"),
            )
            if k in a
        ]
        if verdicts:
            out.append("Alfred-40B-1023's claims on the testbed: " + "; ".join(verdicts) + ".")
    if head.get("best_method"):
        longest = max(int(k[9:]) for k in head if k.startswith("best_bpb_"))
        out.append(
            f"The adapted model extended to {longest} tokens: {head['best_method']} ends lowest at "
            f"{head[f'best_bpb_{longest}']:.3f} bits per byte there"
            + (
                f", {head['short_context_cost_bpb']:+.3f} at {L} against the same fine-tune unextended."
                if "short_context_cost_bpb" in head
                else "."
            )
        )
    return out[:4]


def card(params: Any, r: dict) -> str:
    """The extended model's card: which method and length, what it scores."""
    lengths = r["lengths"]
    lines = [
        f"# {r['source_run']} extended to {r['length']} tokens with {r['method']}",
        "",
        f"The study's adapted model `{r['source_run']}` (trained at {r['trained_len']} tokens) with its rotary embeddings "
        f"extended by `{r['method']}` (factor {r['factor']}; `rope_parameters`: `{json.dumps(r['rope_parameters'])}`) and "
        f"fine-tuned for {r['tokens']:,} tokens on long {params.shared.target_lang} documents at {r['length']} tokens.",
        "",
        "| context length | bits per byte zero-shot | after the fine-tune |",
        "|---|---|---|",
        *[
            f"| {n} | {r['before']['bpb_by_length'][str(n)]:.3f} | {r['after']['bpb_by_length'][str(n)]:.3f} |"
            for n in lengths
        ],
        "",
        f'Load: `AutoModelForCausalLM.from_pretrained("{r["final"]}")` (plain transformers, safetensors).',
        "",
        "Limitations: a research artefact of a tiny study (one seed, CPU scale); not for use beyond it.",
    ]
    return "\n".join(lines) + "\n"
