"""What the study found, in sentences with their numbers: the report's first page and the model card's claims.

Everything here is computed from the stages' records, never typed: the flat
headline metrics (``reports/metrics/*.json``, what ``dvc metrics show``
prints) first; the details beside them (``reports/evaluate/eval.json`` with
its intervals, ``swap_study.json``, ``checkpoints.csv``, ``reports/spikes``)
where they exist; the run-to-run spread (``reports/metrics/seed_spread.json``,
:func:`warmstart.evaluate.intervals.seed_spread`) when it has been measured; and every
fragment's ``findings`` (the headline sentences a later stage writes,
:mod:`warmstart.fragments`). A record that is missing makes its sentence
shorter or says what is missing; it never makes up a number.

Every number printed is a :class:`~warmstart.report.evidence.Number` that remembers its file, its key and
how it was formatted, so a test can read the file again and check the page
(:func:`~warmstart.report.evidence.resolve`, :meth:`~warmstart.report.evidence.Summary.numbers`); the ranking of
the runs is :func:`warmstart.report.evidence.ranking`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from warmstart.describe import ModelInfo, base_model, join_words, language, size_label
from warmstart.evaluate import intervals as stats
from warmstart.report.evidence import Finding, Number, Summary, _Records, format_value, ranking, ranking_sentence
from warmstart.report.labels import arm_changes

# Counts of items below which a probe cannot tell a model from a guesser, and models small enough that their
# results are a toy-scale test of the pipeline.
SMALL_MODEL = 1e9


# ---------------------------------------------------------------- the summary


def study_summary(
    params: Any,
    fragments: Sequence[Mapping] = (),
    prov: Mapping | None = None,
    base: ModelInfo | None = None,
    throughput: Mapping | None = None,
) -> Summary:
    """The summary of the run whose records are under ``params.shared.reports_dir`` (see the module docstring).

    ``throughput``: the report's throughput analysis (for the limitation on MFU), if made."""
    R = _Records(params.shared.reports_dir)
    sh = params.shared
    src, tgt = language(sh.source_lang), language(sh.target_lang)
    s, t = src.code, tgt.code
    base = base or base_model(params)
    ev_head = R.get("metrics/evaluate.json")
    ev = R.get("evaluate/eval.json")
    runs = [k.removeprefix("final_bpb_") for k in ev_head if k.startswith("final_bpb_")]
    final = {r: ev_head[f"final_bpb_{r}"] for r in runs}
    from warmstart.evaluate.seed_spread import spread_for

    spread, seed_why = spread_for(params)  # a spread may cover only some runs: then seed_why names the others
    seed_file = "reports/metrics/seed_spread.json" if spread else seed_why
    rk = ranking(final, ev, spread)
    low = rk["lowest"]

    def ci(run: str, key: str) -> list | None:
        c = ((ev.get("runs") or {}).get(run) or {}).get(f"{key}_ci")
        return c if c and all(x is not None for x in c) else None

    def ci_text(c: list | None, spec: str) -> str:
        return f" [95% CI {format_value(c[0], spec)}–{format_value(c[1], spec)}]" if c else ""

    question = (
        f"Does swapping the vocabulary of {base.title_phrase()} pretrained on {src.name} for a {tgt.name} "
        f"tokenizer, with well-initialised new embeddings, reach a given {tgt.name} bits per byte with less "
        f"{tgt.name} training text than training from scratch or keeping the {src.name} tokenizer; which "
        f"initialisation does it best; and what does it cost in {src.name}?"
    )

    # ---- setup
    nums: list[Number] = []
    parts = []
    n_params = R.num("metrics/base.json", "params", "int")
    if n_params:
        nums.append(n_params)
        parts.append(f"Model: {base.describe(src)} ({n_params.text} parameters).")
    else:
        parts.append(f"Model: {base.describe(src)}.")
    tb = R.num("metrics/corpus.json", f"train_bytes_{t}", "mb")
    sb = R.num("metrics/corpus.json", f"train_bytes_{s}", "mb")
    corpus_txt = f"Languages: {src} → {tgt}"
    if tb:
        nums.append(tb)
        corpus_txt += f"; {tb.text} of {tgt.name} training text"
        if sb:
            nums.append(sb)
            corpus_txt += f" ({sb.text} of {src.name} for the base model)"
    parts.append(corpus_txt + ".")
    ref_run = low or (runs[0] if runs else None)
    seen = R.num(f"metrics/pretrain/{ref_run}.json", "training_bytes", "mb") if ref_run else None
    pt = params.pretrain
    phases = ", ".join(
        f"{ph.name} trains {', '.join(ph.train) if ph.train else 'the whole model'} for {ph.steps} steps"
        for ph in pt.phases
    )
    budget = f"Budget: {phases}; batches of {pt.micro_batch * pt.grad_accum} × {pt.seq_len} tokens"
    if seen:
        nums.append(seen)
        budget += f": every run sees about {seen.text} of {tgt.name} text"
        if tb and tb.value:
            budget += f" ({seen.value / tb.value:.1f} passes over its training text)"
        if "original" in runs:
            budget += ", the original-tokenizer run with more steps for the same bytes"
    parts.append(budget + f"; {len(runs)} runs, {'one seed each' if not spread else 'one seed each in this study'}.")
    hw = _hardware(prov, fragments, (throughput or {}).get("run_seconds") or {})
    if hw:
        parts.append(f"Hardware: {hw}.")
    setup = Finding("Setup", " ".join(parts), nums)

    results: list[Finding] = []
    # ---- fertility
    tpw_s = R.num("metrics/tokenizer.json", f"tokens_per_word_{t}_source_tokenizer", "f3")
    tpw_t = R.num("metrics/tokenizer.json", f"tokens_per_word_{t}_target_tokenizer", "f3")
    ratio = R.num("metrics/tokenizer.json", f"fertility_ratio_{t}", "f3")
    if tpw_s and tpw_t and ratio:
        verb = "cuts" if ratio.value < 1 else "raises"
        results.append(
            Finding(
                "Fertility",
                f"The {tgt.name} tokenizer {verb} the tokens per {tgt.name} word from "
                f"{tpw_s.text} (the {src.name} tokenizer) to {tpw_t.text}, a ratio of {ratio.text}.",
                [tpw_s, tpw_t, ratio],
                "tokenizer",
            )
        )

    # ---- step 0
    step0 = {m: R.num(f"metrics/vocab_swap/{m}.json", f"step0_bpb_{t}", "f3") for m in params.vocab_swap.methods}
    step0 = {m: n for m, n in step0.items() if n}
    if step0:
        lo_m, hi_m = min(step0, key=lambda m: step0[m].value), max(step0, key=lambda m: step0[m].value)
        text = (
            f"Before any training, the swapped models score {step0[lo_m].text} ({lo_m}) to {step0[hi_m].text} "
            f"({hi_m}) {tgt.code} bits per byte"
        )
        used = [step0[lo_m], step0[hi_m]]
        orig0 = R.num("evaluate/eval.json", "runs.original.bpb_target_step0", "f3")
        if orig0:
            text += f", against {orig0.text} for the base model with its own tokenizer"
            used.append(orig0)
        results.append(Finding("Initialisation", text + ".", used, "vocab_swap"))

    # ---- final bits per byte and the ranking
    if low:
        fn = {r: Number(final[r], "f3", "metrics/evaluate.json", f"final_bpb_{r}") for r in rk["order"]}
        rest = [r for r in rk["order"][1:]]
        text = f"Lowest final {t} bits per byte"
        if seen:
            text += f" after {seen.text}"
        text += f": {low} {fn[low].text}{ci_text(ci(low, 'bpb_target'), 'f3')}"
        if rest:
            text += "; then " + ", ".join(f"{r} {fn[r].text}" for r in rest)
        text += ". " + ranking_sentence(rk, t, spread, seed_file)
        results.append(Finding("Final bits per byte", text, [fn[low], *(fn[r] for r in rest)], "evaluate"))

    # ---- speed-up
    best_run = ev_head.get("best_run")
    sp = R.num("metrics/evaluate.json", "best_speedup_vs_scratch", "x2")
    if best_run and sp and "scratch" in final:
        scratch_final = Number(final["scratch"], "f3", "metrics/evaluate.json", "final_bpb_scratch")
        text = (
            f"{best_run} reaches scratch's final {t} bits per byte ({scratch_final.text}) with {sp.text} fewer "
            f"training bytes than scratch{ci_text(ci(best_run, 'speedup_vs_scratch'), 'x2')}"
        )
        used = [sp, scratch_final]
        others = [r for r in rk["order"] if r not in (best_run, "scratch")][:3]
        o_nums = [R.num("evaluate/eval.json", f"runs.{r}.speedup_vs_scratch", "x2") for r in others]
        o_nums = [(r, n) for r, n in zip(others, o_nums) if n]
        if o_nums:
            text += "; the next runs by final bits per byte: " + ", ".join(
                f"{r} {n.text}{ci_text(ci(r, 'speedup_vs_scratch'), 'x2')}" for r, n in o_nums
            )
            used += [n for _, n in o_nums]
        results.append(Finding("Speed-up over scratch", text + ".", used, "evaluate"))

    # ---- forgetting
    if best_run:
        fin_src = R.num(f"metrics/pretrain/{best_run}.json", f"final_bpb_{s}", "f3")
        base_src = R.num("evaluate/eval.json", "runs.original.bpb_source_step0", "f3") or R.num(
            "evaluate/checkpoints.csv", "run=original;step=0;column=bpb_source", "f3"
        )
        where = "on the same test text"
        if not base_src:
            base_src = R.num("metrics/base.json", f"val_bpb_{s}", "f3")
            where = "on validation text"
        if fin_src and base_src:
            delta = fin_src.value - base_src.value
            text = (
                f"{best_run}'s {s} bits per byte rises from {base_src.text} (the base model, {where}) "
                f"to {fin_src.text}{ci_text(ci(best_run, 'bpb_source'), 'f3')}, {delta:+.3f}"
            )
            used = [base_src, fin_src]
            orig = R.num("metrics/pretrain/original.json", f"final_bpb_{s}", "f3")
            if orig:
                text += f"; the original run, which keeps the {src.name} tokenizer, ends at {orig.text}"
                used.append(orig)
            results.append(Finding("Forgetting", text + ".", used, "evaluate"))

    # ---- probes
    probe = _probe_finding(R, ev, runs, t)
    if probe:
        results.append(probe)

    # ---- arms (study.arms): what each costs and buys against the run it starts from
    for name, d in (ev.get("arms") or {}).items():
        results.append(_arm_finding(R, ev, params, name, d, t, ci_text))

    # ---- later stages' headlines
    for f in fragments:
        for sentence in f.get("findings") or []:
            results.append(Finding(str(f.get("title", f.get("stage"))), sentence, [], f.get("stage")))

    goals = _goals(R, ev, params, t)
    limits = _limitations(R, ev, base, n_params, seen, spread, seed_file, probe, throughput, params)
    if spread and seed_why:
        limits.append(
            f"Seeds: {seed_why[0].upper() + seed_why[1:]}; the ranking compares such runs with the median "
            "run-to-run spread of the measured runs."
        )
    return Summary(question, setup, results, goals, limits, rk)


def _hardware(prov: Mapping | None, fragments: Sequence[Mapping], run_seconds: Mapping[str, float]) -> str:
    """'AMD EPYC CPU, 2 cores, no GPU; 9.8 min of recorded stage and training time' (the stages' fragments and the
    runs' records; notebook start-up and untimed stages not included)."""
    recs = [f.get("provenance") or {} for f in fragments if f.get("provenance")] or ([prov] if prov else [])
    if not recs:
        return ""
    r = recs[0]
    gpus = r.get("gpus") or []
    gpu = f"{len(gpus)} × {gpus[0]}" if gpus else "no GPU"
    stages = {f.get("stage"): float(f.get("seconds") or 0) for f in fragments}
    # the base stage's time includes the base model's training run
    total = sum(stages.values()) + sum(float(v) for k, v in run_seconds.items() if k != "base" or "base" not in stages)
    cpu = f"{r.get('cpu') or '?'} CPU, {r.get('cpu_count')} cores, {gpu}"
    return cpu + (f"; {total / 60:.1f} min of recorded stage and training time" if total else "")


def _arm_finding(R: _Records, ev: Mapping, params: Any, name: str, d: Mapping, t: str, ci_text: Any) -> Finding:
    """An arm against its reference run: the paired difference in final target bits per byte, and the
    masked-token accuracy of both when measured (the hybrid objective's cost and gain)."""
    ref = d["reference"]
    arm = params.study.arms.get(name)
    what = arm_changes(arm) if arm else "changed settings"
    diff = R.num("evaluate/eval.json", f"arms.{name}.target.diff", "+f3")
    tgt = d.get("target") or {}
    verdict = {True: "beyond evaluation-text noise", False: "within evaluation-text noise", None: "no interval"}[
        tgt.get("distinguishable")
    ]
    text = (
        f"{name} ({ref} trained with {what}) ends {diff.text} {t} bits per byte from {ref}"
        f"{ci_text(tgt.get('ci'), '+f3')}, {verdict} (paired bootstrap)"
    )
    used = [diff]
    er = ev.get("runs") or {}
    acc = {
        r: R.num("evaluate/eval.json", f"runs.{r}.masked_acc", "f3")
        for r in (name, ref)
        if "masked_acc" in (er.get(r) or {})
    }
    if len(acc) == 2:
        cis = {r: (er[r] or {}).get("masked_acc_ci") for r in acc}
        text += (
            f"; masked-token accuracy {acc[name].text}{ci_text(cis[name], 'f3')} against {acc[ref].text}"
            f"{ci_text(cis[ref], 'f3')} for {ref}"
        )
        used += [acc[name], acc[ref]]
    return Finding(f"Arm: {name}", text + ".", used, "evaluate")


def _probe_finding(R: _Records, ev: Mapping, runs: Sequence[str], t: str) -> Finding | None:
    er = ev.get("runs") or {}
    n = (ev.get("cloze_items") or {}).get("target")
    accs = {r: (er.get(r) or {}).get("cloze_acc_target") for r in runs}
    accs = {r: a for r, a in accs.items() if a is not None}
    if not n or not accs:
        return None
    chance = (ev.get("chance") or {}).get("cloze", 0.25)
    lo_r, hi_r = min(accs, key=accs.get), max(accs, key=accs.get)
    n_lo = Number(accs[lo_r], "f3", "evaluate/eval.json", f"runs.{lo_r}.cloze_acc_target")
    n_hi = Number(accs[hi_r], "f3", "evaluate/eval.json", f"runs.{hi_r}.cloze_acc_target")
    above = [r for r, a in accs.items() if stats.accuracy_interval(a, n, chance)["above_chance"]]
    guess = stats.wilson(stats.successes(chance, n), n)
    text = (
        f"{t} cloze accuracy {n_lo.text} ({lo_r}) to {n_hi.text} ({hi_r}) on {n} items; chance is "
        f"{chance:.2f} and a guesser scores {guess[0]:.2f}–{guess[1]:.2f} (95%)"
    )
    text += ": no run is above chance." if not above else f"; above chance: {join_words(above)}."
    chrf = {r: (er.get(r) or {}).get("chrf") for r in runs}
    chrf = {r: v for r, v in chrf.items() if v is not None}
    used = [n_lo, n_hi]
    if chrf:
        mx = max(chrf, key=chrf.get)
        n_c = Number(chrf[mx], "f1", "evaluate/eval.json", f"runs.{mx}.chrf")
        used.append(n_c)
        text += (
            f" Translation chrF is {n_c.text} for every run."
            if all(v == chrf[mx] for v in chrf.values())
            else f" Translation chrF at most {n_c.text} ({mx})."
        )
    f = Finding("Probes", text, used, "evaluate")
    f.status = "chance" if not above else "above"
    return f


def _goal(heading: str, ok: bool | None, text: str, nums: list[Number]) -> Finding:
    status = {True: "met", False: "missed", None: "unknown"}[ok]
    return Finding(heading, text, nums, "evaluate", status)


def _goals(R: _Records, ev: Mapping, params: Any, t: str) -> list[Finding]:
    """The study's goals (``swap_study.json``'s, as the evaluate stage states them), with their numbers."""
    study = R.get("evaluate/swap_study.json")
    goals_rec = study.get("goals") or {}
    out = []
    rnd = R.num("metrics/vocab_swap/random.json", f"step0_bpb_{t}", "f3")
    for m in ("fvt", "focus"):
        if m not in params.vocab_swap.methods or "random" not in params.vocab_swap.methods:
            continue
        n = R.num(f"metrics/vocab_swap/{m}.json", f"step0_bpb_{t}", "f3")
        ok = goals_rec.get(f"{m}_step0_below_random")
        if ok is None and n and rnd:
            ok = bool(n.value < rnd.value)
        text = f"{m} starts below random at step 0" + (f" ({n.text} vs {rnd.text} bits per byte)" if n and rnd else "")
        out.append(_goal(f"{m} below random at step 0", ok, text + ".", [x for x in (n, rnd) if x]))
    best_sp = R.num("evaluate/swap_study.json", "best_speedup", "x2")
    best_sw = study.get("best_swapped")
    ok = goals_rec.get("best_speedup_at_least_3")
    if best_sp and best_sw:
        c = ((ev.get("runs") or {}).get(best_sw) or {}).get("speedup_vs_scratch_ci")
        text = f"The best swapped run needs at least 3× fewer bytes than scratch: {best_sw} {best_sp.text}"
        if c and all(x is not None for x in c):
            text += f" [95% CI {c[0]:.2f}×–{c[1]:.2f}×]"
            if ok and c[0] < 3:
                text += ", an interval that reaches below 3×"
        out.append(_goal("speed-up ≥ 3×", ok, text + ".", [best_sp]))
    else:
        sp = R.num("metrics/evaluate.json", "best_speedup_vs_scratch", "x2")
        if sp:
            run = R.get("metrics/evaluate.json").get("best_run")
            out.append(
                _goal(
                    "speed-up ≥ 3×",
                    None,
                    f"At least 3× fewer bytes than scratch: {run}, the lowest final "
                    f"bits per byte, needs {sp.text} (other runs' speed-ups are in the evaluate stage's "
                    "details, not found).",
                    [sp],
                )
            )
    return out


def _limitations(
    R: _Records,
    ev: Mapping,
    base: ModelInfo,
    n_params: Number | None,
    seen: Number | None,
    spread: Mapping | None,
    seed_file: str,
    probe: Finding | None,
    throughput: Mapping | None,
    params: Any,
) -> list[str]:
    out = []
    size = base.params or (n_params.value if n_params else None)
    if size and size < SMALL_MODEL:
        out.append(
            f"Scale: a {size_label(int(size))}-parameter model trained on "
            f"{seen.text if seen else 'a few MB'} per run tests the pipeline and the order of the methods at "
            "toy scale; absolute numbers and small differences need not carry over to billion-parameter "
            "models and gigabytes of text."
        )
    meth = ev.get("intervals") or {}
    texts = (meth.get("texts") or {}).get("target")
    chapters = (meth.get("chapters") or {}).get("target")
    eb = params.evaluate.eval_bytes
    if texts:
        out.append(
            f"Evaluation text: {eb:,} bytes per language ({texts} paragraphs"
            + (f" from {chapters} chapter{'s' if chapters != 1 else ''}" if chapters else "")
            + "); the intervals resample those paragraphs, which are not independent, and cover "
            "evaluation-text noise only."
        )
    else:
        out.append(
            f"Evaluation text: {eb:,} bytes per language. No bits-per-byte interval: the evaluate stage's "
            "outputs predate per-text losses (rerun the evaluate stage for bootstrap intervals)."
        )
    if not spread:
        out.append(
            f"Seeds: one seed per run and no run-to-run spread for this configuration ({seed_file}): "
            "differences between runs of a few hundredths of a bit per byte may be noise."
        )
    if probe is not None and probe.status == "chance":
        out.append(
            "Probes: they cannot separate the runs at this scale: cloze accuracies are within chance and "
            "translation chrF is at or near zero."
        )
    sp_detail = R.get("spikes/spikes.json")
    records = [r.get("records") for r in (sp_detail.get("runs") or {}).values() if r.get("records")]
    window = params.spikes.score_window
    if records and max(records) < window:
        total = R.get("metrics/spikes.json").get("total_spikes")
        out.append(
            f"Loss spikes: {total if total is not None else 'no'} spikes, but each run logged at most "
            f"{max(records)} records, fewer than the {window}-record window of the spike score: the runs are "
            "too short for the spike analysis to say much."
        )
    if throughput and throughput.get("limitation"):
        out.append(throughput["limitation"])
    return out
