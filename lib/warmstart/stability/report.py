"""What the study reports: headline numbers, findings (a)-(d) and tables (the figures: :mod:`.figures`)."""

from __future__ import annotations

from typing import Any

from warmstart.stability.analysis import WORTSMAN_SIGNALS, finite, sensitivity_reduction_pct

LABELS = {
    "baseline": "baseline (Llama)",
    "qk_norm": "qk-norm (Qwen3)",
    "z_loss": "z-loss",
    "qk_norm+z_loss": "qk-norm + z-loss",
}
SIGNAL_LABELS = {
    "attn_logit_max": "max attention logit",
    "log_z_mean": "log Z (mean)",
    "log_z_max": "log Z (max)",
    "update_ratio": "update/weight ratio",
    "grad_norm": "gradient norm",
}


def _f(x: Any, nd: int = 3) -> str:
    if not finite(x):
        return "n/a"
    return f"{x:.{nd}f}" if abs(x) < 1e4 else f"{x:.3g}"


def _sens(result: dict, variant: str, init: str) -> dict | None:
    return next((s for s in result["sensitivity"] if (s["variant"], s["init"]) == (variant, init)), None)


def _runs(result: dict, **kw: Any) -> list[dict]:
    return sorted([r for r in result["sweep"] if all(r[k] == v for k, v in kw.items())], key=lambda r: r["lr"])


def qk_reduction(result: dict) -> dict[str, float | None]:
    """Per init: how much lower qk-norm's LR sensitivity is than the baseline's (%)."""
    out = {}
    for init in result["config"]["inits"]:
        b, q = _sens(result, "baseline", init), _sens(result, "qk_norm", init)
        out[init] = sensitivity_reduction_pct(q["lr_sensitivity"], b["lr_sensitivity"]) if b and q else None
    return out


def goal_runs(result: dict) -> list[dict]:
    """Runs the detector flagged whose attention-logit or log Z signal moved before the loss (the issue's goal)."""
    return [r for r in result["sweep"] if r["spiked"] and r["moved"] and r["moved"]["wortsman_before_loss"]]


def headline(result: dict, max_keys: int = 12) -> dict[str, Any]:
    """At most ``max_keys`` flat numbers for ``reports/metrics/stability.json`` (most important first); no wall
    time (it is in the fragment's provenance), so that ``dvc metrics diff`` shows only changed results."""
    h: dict[str, Any] = {}
    red = [v for v in qk_reduction(result).values() if v is not None]
    h["qk_norm_sensitivity_reduction_pct"] = sum(red) / len(red) if red else None
    h["spiking_runs"] = sum(r["spiked"] for r in result["sweep"])
    h["diverged_runs"] = sum(r["diverged"] for r in result["sweep"])
    h["signal_moved_before_loss"] = bool(goal_runs(result))
    ind = result.get("induced")
    if ind:
        h["induced_final_loss_unmitigated"] = ind["unmitigated"]["final_loss"]
        h["induced_final_loss_mitigated"] = ind["mitigated"]["final_loss"]
    for s in result["sensitivity"]:
        if len(h) >= max_keys:
            break
        h[f"lr_sensitivity_{s['variant']}_{s['init']}"] = s["lr_sensitivity"]
    return h


# ---------------------------------------------------------------- tables


def table_rows(result: dict) -> list[dict]:
    """One row per sweep run, human column labels with units (losses in nats per token, held-out)."""
    rows = []
    for r in result["sweep"]:
        mv = r["moved"]
        first = "-"
        if mv and mv["first"]:
            lead = mv["lead_steps"]
            first = f"{SIGNAL_LABELS.get(mv['first'], mv['first'])} ({lead} step{'s' if lead != 1 else ''} "
            first += "before)" if lead > 0 else "with the loss)"
        rows.append(
            {
                "Variant": LABELS.get(r["variant"], r["variant"]),
                "Init": r["init"],
                "Learning rate": f"{r['lr']:g}",
                "Initial loss (nats)": r["init_loss"],
                "Final held-out loss (nats)": r["final_loss"],
                "Diverged": "yes" if r["diverged"] else "no",
                "Spikes (detector)": r["n_spikes"],
                "Max attention logit": r["attn_logit_max_max"],
                "End log Z (nats)": r["log_z_mean_end"],
                "First signal to move": first,
            }
        )
    return rows


def sensitivity_rows(result: dict) -> list[dict]:
    """One row per (variant, init): LR sensitivity (own initial-loss clip and the common ln|V| clip)."""
    return [
        {
            "Variant": LABELS.get(s["variant"], s["variant"]),
            "Init": s["init"],
            "Initial loss (nats)": s["init_loss"],
            "Best loss (nats)": s["best_loss"],
            "Best learning rate": f"{s['best_lr']:g}" if s["best_lr"] else "-",
            "LR sensitivity (nats)": s["lr_sensitivity"],
            "LR sensitivity, ln|V| clip (nats)": s["lr_sensitivity_uniform_cap"],
            "Diverged runs": s["diverged"],
            "Spiking runs": s["spiked"],
        }
        for s in result["sensitivity"]
    ]


# ---------------------------------------------------------------- findings


def findings(result: dict) -> list[str]:
    """Paragraphs: setup, (a)-(d) with numbers (whichever way each falls), the goal, the induced spike."""
    c = result["config"]
    lrs = sorted(c["lrs"])
    m = c["model"]
    kind = "synthetic language pair sharing one grammar" if result["data"]["kind"] == "toy" else "corpus files"
    out = [
        f"Setup: {result['data']['kind']} data ({kind}, "
        f"|V| = {result['vocab_size']}); {m['layers']}-layer, {m['hidden']}-wide models; every run {c['steps']} AdamW steps "
        f"({c['warmup_steps']} warm-up, {c['lr_schedule']} to {c['min_lr_ratio']:g} x), {c['micro_batch']} x {c['seq_len']} tokens per "
        f"step; learning rates {', '.join(f'{x:g}' for x in lrs)}; warm starts from a base pretrained {c['base_steps']} steps on the "
        f"source language (one per architecture). Final loss = held-out cross-entropy on {result['eval_rows']} target rows "
        f"(nats/token). LR sensitivity (Wortsman et al. 2023) = mean over the sweep of min(final, initial) - best; "
        f"wall time {result['seconds']['total']:.0f} s.",
    ]
    variants, inits = c["variants"], c["inits"]
    # (a) warm vs scratch
    if {"warm", "scratch"} <= set(inits):
        parts, more = [], []
        for v in variants:
            w, s = _sens(result, v, "warm"), _sens(result, v, "scratch")
            parts.append(
                f"{LABELS[v]}: warm {_f(w['lr_sensitivity'])} vs scratch {_f(s['lr_sensitivity'])} "
                f"(ln|V| clip: {_f(w['lr_sensitivity_uniform_cap'])} vs {_f(s['lr_sensitivity_uniform_cap'])})"
            )
            more.append(
                w["lr_sensitivity"] > s["lr_sensitivity"]
                and w["lr_sensitivity_uniform_cap"] > s["lr_sensitivity_uniform_cap"]
            )
        ref = "baseline" if "baseline" in variants else variants[0]
        worse = [
            f"{rw['lr']:g}"
            for rw, rs in zip(_runs(result, variant=ref, init="warm"), _runs(result, variant=ref, init="scratch"))
            if finite(rw["final_loss"]) and finite(rs["final_loss"]) and rw["final_loss"] > rs["final_loss"]
        ]
        sp = {i: sum(r["spiked"] for r in result["sweep"] if r["init"] == i) for i in inits}
        own = {
            i: sum(r["spiked"] and not r.get("shared_with") for r in result["sweep"] if r["init"] == i) for i in inits
        }
        base_more = more[variants.index("baseline")] if "baseline" in variants else more[0]
        verdict = (
            "reproduces" if base_more and all(more) else "partly reproduces" if any(more) else "does not reproduce"
        )
        out.append(
            f"(a) Warm start more LR-sensitive than scratch (CSMPT): {verdict} at this scale. LR sensitivity (nats), "
            + "; ".join(parts)
            + f". {LABELS[ref]}: the warm start ends worse than scratch at learning rate(s) "
            f"{', '.join(worse) if worse else 'none'}. Runs the detector flagged: warm {sp.get('warm', 0)}, scratch "
            f"{sp.get('scratch', 0)}; of these, not recurring within 2 steps in another architecture (same batches, same "
            f"schedule): warm {own.get('warm', 0)}, scratch {own.get('scratch', 0)} (CSMPT saw spikes only in continued "
            "pretraining)."
        )
    # (b) attention-logit growth and spikes without qk-norm
    if "baseline" in variants:
        b = _runs(result, variant="baseline")
        lo = [r for r in b if r["lr"] == lrs[0]]
        hi = [r for r in b if r["lr"] == lrs[-1]]
        amax = lambda rs: max((r["attn_logit_max_max"] for r in rs if finite(r["attn_logit_max_max"])), default=None)  # noqa: E731
        q = _runs(result, variant="qk_norm") if "qk_norm" in variants else []
        qhi = [r for r in q if r["lr"] == lrs[-1]]
        growth = amax(lo) and amax(hi) and amax(hi) >= 10 * amax(lo)
        bad = [r for r in b if r["spiked"] or r["diverged"]]
        qbad = [r for r in q if r["spiked"] or r["diverged"]]
        thr = c["moved"]["attn_logit_threshold"]
        over = sorted(
            {r["lr"] for r in b if finite(r["attn_logit_max_max"]) and thr and r["attn_logit_max_max"] >= thr}
        )
        qover = sorted(
            {r["lr"] for r in q if finite(r["attn_logit_max_max"]) and thr and r["attn_logit_max_max"] >= thr}
        )
        hi_bad = [r for r in bad if r["lr"] >= lrs[len(lrs) // 2]]
        verdict = (
            "reproduces"
            if growth and hi_bad
            else "partly reproduces (attention-logit growth; no baseline spike or "
            f"divergence at lr >= {lrs[len(lrs) // 2]:g})"
            if growth
            else "does not reproduce"
        )
        best = min((r["final_loss"] for r in b if finite(r["final_loss"])), default=None)
        hi2 = lrs[-min(2, len(lrs))]
        top2 = [r for r in b if r["lr"] >= hi2]
        txt = (
            f"(b) High learning rates produce attention-logit growth and loss spikes without qk-norm: {verdict}. Baseline max "
            f"attention logit {_f(amax(lo), 1)} at lr {lrs[0]:g} and {_f(amax(hi), 1)} at lr {lrs[-1]:g}"
            + (f" (qk-norm: {_f(amax(qhi), 1)} at lr {lrs[-1]:g})" if qhi else "")
            + f"; it exceeds {thr:g} at lr {', '.join(f'{x:g}' for x in over) or 'none'}"
            + (f" (qk-norm: {', '.join(f'{x:g}' for x in qover) or 'none'})" if q else "")
            + f". Baseline final held-out loss at lr >= {hi2:g}: "
            + ", ".join(f"{r['init']} lr {r['lr']:g} {_f(r['final_loss'], 2)}" for r in top2)
            + f" (best of the sweep {_f(best, 2)})"
            + f". Baseline runs the detector flagged or that diverged: {', '.join(_tag(r) for r in bad) or 'none'}"
            + (f"; qk-norm: {', '.join(_tag(r) for r in qbad) or 'none'}." if q else ".")
        )
        out.append(txt)
    # (c) qk-norm lowers LR sensitivity
    if {"baseline", "qk_norm"} <= set(variants):
        red = qk_reduction(result)
        parts = [
            f"{i}: {_f(_sens(result, 'baseline', i)['lr_sensitivity'])} -> {_f(_sens(result, 'qk_norm', i)['lr_sensitivity'])} "
            f"({'lower' if (red[i] or 0) >= 0 else 'higher'} by {_f(abs(red[i] or 0), 1)} %)"
            for i in inits
        ]
        met = [i for i, v in red.items() if v is not None and v >= 30]
        lower = [i for i, v in red.items() if v is not None and v > 0]
        if len(met) == len(red):
            verdict = "reproduces, meeting the >= 30 % goal for every init"
        elif lower:
            verdict = (
                "reproduces in direction; the >= 30 % goal is met for "
                + (", ".join(met) if met else "no init")
                + " and missed for "
                + ", ".join(i for i in red if i not in met)
            )
        else:
            verdict = "does not reproduce"
        out.append(
            f"(c) qk-norm lowers LR sensitivity: {verdict}. Baseline -> qk-norm LR sensitivity (nats), "
            + "; ".join(parts)
            + "."
        )
    # (d) z-loss keeps log Z near 0
    if "z_loss" in variants and "baseline" in variants:

        def zend(v: str) -> list[float]:
            return [r["log_z_mean_end"] for r in result["sweep"] if r["variant"] == v and finite(r["log_z_mean_end"])]

        zb, zz = zend("baseline"), zend("z_loss")
        mb = sum(abs(x) for x in zb) / len(zb) if zb else None
        mz = sum(abs(x) for x in zz) / len(zz) if zz else None
        near = mz is not None and mz < 1.0
        closer = mz is not None and mb is not None and mz < mb
        verdict = (
            "reproduces"
            if near
            else (
                f"does not reproduce in {c['steps']} steps (log Z is "
                f"{'closer to 0 than' if closer else 'no closer to 0 than'} the baseline's)"
            )
        )
        out.append(
            f"(d) z-loss (coefficient {c['z_loss_coef']:g}) keeps log Z near 0: {verdict}. Mean |log Z| over the last 10 % "
            f"of each run, averaged over the sweep: z-loss {_f(mz, 2)}, baseline {_f(mb, 2)} nats (ln|V| = "
            f"{_f(result['uniform_loss'], 2)}); range z-loss {_f(min(zz, default=None), 2)} .. {_f(max(zz, default=None), 2)}, "
            f"baseline {_f(min(zb, default=None), 2)} .. {_f(max(zb, default=None), 2)}."
        )
    out.append(goal_paragraph(result))
    if result.get("induced"):
        out.append(induced_paragraph(result["induced"]))
    return out


def _tag(r: dict) -> str:
    what = (
        ("diverged" if r["diverged"] else "")
        + ("; " if r["diverged"] and r["spiked"] else "")
        + (f"{r['n_spikes']} spike(s)" if r["spiked"] else "")
    )
    return f"{r['init']} lr {r['lr']:g} ({what})"


def goal_paragraph(result: dict) -> str:
    c = result["config"]
    flagged = [r for r in result["sweep"] if r["spiked"] or r["diverged"]]
    if not flagged:
        return (
            f"Goal: no configuration spiked or diverged, up to learning rate {max(c['lrs']):g} over {c['steps']} steps "
            "(every variant and init)."
        )
    hits = goal_runs(result)
    m = c["moved"]
    lines = []
    for r in flagged:
        mv = r["moved"]
        if not mv:
            lines.append(f"{LABELS[r['variant']]} {_tag(r)}: no loss onset found")
            continue
        src = "detector event" if mv["onset_source"] == "detector" else "loss jump"
        desc = f"{LABELS[r['variant']]} {_tag(r)}: onset at step {mv['onset']} ({src}"
        desc += (
            f", the loss itself moved at step {mv['loss_step']}); "
            if mv.get("loss_move")
            else "; the loss's own rule did not fire before it); "
        )
        if mv["first"]:
            lead = mv["lead_steps"]
            when = (
                f"({lead} step(s) before the loss)"
                if lead > 0
                else "(with the loss)"
                if lead == 0
                else f"({-lead} step(s) after the loss)"
            )
            desc += f"first to move: {SIGNAL_LABELS.get(mv['first'], mv['first'])} at step {mv['first_step']} {when}"
        else:
            desc += "no signal moved in the look-back window"
        thr = [
            f"{SIGNAL_LABELS[n]} past its threshold from step {v['threshold_step']}"
            for n, v in mv["signals"].items()
            if v["threshold_step"] is not None and v["threshold_step"] < mv["loss_step"]
        ]
        if thr:
            desc += "; " + ", ".join(thr)
        if r.get("shared_with"):
            desc += (
                f"; an event within 2 steps in {', '.join(LABELS.get(v, v) for v in r['shared_with'])} too (same batches "
                "and schedule, another architecture)"
            )
        lines.append(desc)
    rates = result.get("move_rates") or {}
    base = ", ".join(
        f"{SIGNAL_LABELS.get(n, n)} {100 * v['rate']:.2f} %" for n, v in rates.items() if v.get("rate") is not None
    )

    def jumped(r: dict) -> bool:
        mv = r["moved"]
        return any(
            v["jump"] is not None and v["jump"]["step"] < mv["loss_step"]
            for n, v in mv["signals"].items()
            if n in WORTSMAN_SIGNALS
        )

    n_jump = sum(jumped(r) for r in hits)
    thr = m["attn_logit_threshold"]
    calm_over = [
        r
        for r in result["sweep"]
        if not (r["spiked"] or r["diverged"])
        and thr
        and finite(r["attn_logit_max_max"])
        and r["attn_logit_max_max"] >= thr
    ]
    head = (
        f"Goal ({'met' if hits else 'not met'}): {len(hits)} of {len(flagged)} flagged run(s) had an attention-logit or log Z "
        f"signal move before the loss: {n_jump} by a jump within the look-back window, {len(hits) - n_jump} by the "
        f"attention-logit threshold alone (not specific: the attention logit also passes {thr:g} in {len(calm_over)} runs "
        f"that never spiked or diverged). 'Moved' = {m['k']:g} robust units (1.4826 MAD) above the median of the previous "
        f"{m['window']} records (both ways for log Z mean), looked for up to {m['lookback']} steps before the onset; or "
        f"the attention logit past {m['attn_logit_threshold']:g} / |log Z| past {m['log_z_threshold']:g} any time before. "
        + (
            f"The rule's false-alarm rate per record in the runs without any event: {base}; over a {m['lookback']}-step window "
            "a chance move of one signal is that rate times the window. "
            if base
            else ""
        )
    )
    return head + " ".join(x + "." for x in lines)


def induced_paragraph(ind: dict) -> str:
    u, m = ind["unmitigated"], ind["mitigated"]
    rb = ", ".join(
        f"step {x['step']} (spike from {x['spike_start']}) -> {x['rollback_to'] or 'no checkpoint'}"
        for x in m["rollbacks"]
    )
    return (
        f"Induced spike: {LABELS.get(ind['variant'], ind['variant'])}, {ind['init']} start, lr {ind['lr']:g}, batches "
        f"{', '.join(map(str, ind['bad_batches']))} replaced by random tokens. Final held-out loss: clean control "
        f"{_f(ind['control']['final_loss'])}, without mitigation {_f(u['final_loss'])} ({u['n_spikes']} spike(s) detected), "
        f"with rollback-and-skip {_f(m['final_loss'])} ({m['spike_rollbacks']} rollback(s){': ' + rb if rb else ''}; "
        f"{m['skipped_batches']} batch(es) skipped; {m['n_spikes']} spike(s) detected in its log)."
    )
