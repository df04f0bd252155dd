"""Lexical methods: new rows made from old rows of the same string.

``exact``
    CSMPT7b's vocabulary swap: tokens whose *normalised strings* match are
    copied bit for bit (``aligned`` in the report); the rest as ``random``.
``fvt``
    Fast Vocabulary Transfer (Gee et al. 2022): each new token's string is
    segmented by the OLD tokenizer's model and gets the mean of those rows
    (so an exactly matching token copies itself); strings the old tokenizer
    cannot segment fall back to ``random``.
"""

from __future__ import annotations

import numpy as np

from warmstart.vocab_swap.plan import Combination, InitPlan, PlanRequest, _assemble


def plan_exact(req: PlanRequest) -> tuple[InitPlan, InitPlan]:
    """``exact``: exact matches copied, the rest sampled."""
    base = req.base
    plan = _assemble(base, base.matches, Combination.empty(), base.rest)
    return plan, plan


def plan_fvt(req: PlanRequest) -> tuple[InitPlan, InitPlan]:
    """``fvt``: the rest is the mean of the old rows the old tokenizer segments it into."""
    old, new, base, old_rows = req.old, req.new, req.base, req.old_rows
    rows, pieces, rnd = [], [], []
    for i in base.rest:
        p = old.segment(new.keys[i])  # type: ignore[arg-type]
        p = [j for j in p if j < old_rows]
        if p:
            rows.append(i)
            pieces.append(p)
        else:
            rnd.append(i)
    combo = Combination.from_lists(rows, pieces, None, mean=True)
    req.extra["mean_pieces"] = float(np.mean([len(p) for p in pieces])) if pieces else 0.0
    plan = _assemble(base, base.matches, combo, rnd)
    return plan, plan
