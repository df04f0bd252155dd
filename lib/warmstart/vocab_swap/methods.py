"""The method registry: each method's name and the function that plans it.

:data:`PLANNERS` maps a method name to its planner, a function from a
:class:`~warmstart.vocab_swap.plan.PlanRequest` to the (embedding, head)
plans; :data:`METHODS` are its names, in order. :func:`build_plan` is the one
entry: it checks the method, makes the split every method starts from and
hands it to the method's planner.

``tokdistil``'s planner is its start method's (``tokdistil_start``): its rows are learned afterwards, on the
model (:func:`~warmstart.vocab_swap.surgery.swap_model`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import MappingProxyType
from typing import Any

import torch

from warmstart.vocab_swap.fasttext import FastTextOptions
from warmstart.vocab_swap.focus import plan_focus
from warmstart.vocab_swap.hf_default import plan_hf_default
from warmstart.vocab_swap.lexical import plan_exact, plan_fvt
from warmstart.vocab_swap.omp import plan_omp
from warmstart.vocab_swap.plan import PAD_MULTIPLE, InitPlan, PlanRequest, _base
from warmstart.vocab_swap.sampling import plan_random
from warmstart.vocab_swap.tokdistil import STARTS
from warmstart.vocab_swap.tokens import VocabSwapError, _view

#: A method's planner: the (embedding plan, head plan) for a request; it may add to ``req.extra``.
Planner = Callable[[PlanRequest], tuple[InitPlan, InitPlan]]


def _plan_tokdistil(req: PlanRequest) -> tuple[InitPlan, InitPlan]:
    """``tokdistil``: the plan of its start method (the rows it learns from there are the model's business)."""
    if req.tokdistil_start not in STARTS:
        raise VocabSwapError(
            f"tokdistil start method {req.tokdistil_start!r} is not available: it starts from one of "
            + ", ".join(STARTS)
        )
    req.extra["start"] = req.tokdistil_start
    return PLANNERS[req.tokdistil_start](req)


#: method name -> its planner (read-only).
PLANNERS: MappingProxyType[str, Planner] = MappingProxyType(
    {
        "random": plan_random,
        "exact": plan_exact,
        "fvt": plan_fvt,
        "focus": plan_focus,
        "omp": plan_omp,
        "hf-default": plan_hf_default,
        "tokdistil": _plan_tokdistil,
    }
)
METHODS: tuple[str, ...] = tuple(PLANNERS)


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise VocabSwapError(f"unknown method {method!r}: allowed methods are {', '.join(METHODS)}")
    return method


def build_plan(
    old_tok: Any,
    new_tok: Any,
    method: str,
    *,
    old_rows: int,
    pad_multiple: int = PAD_MULTIPLE,
    texts: Iterable[str] | None = None,
    fasttext: FastTextOptions = FastTextOptions(),  # noqa: B008  (immutable options)
    fasttext_vectors: Any = None,
    donor_embed: torch.Tensor | None = None,
    donor_head: torch.Tensor | None = None,
    omp_k: int = 8,
    seed: int = 0,
    tokdistil_start: str = "focus",
) -> tuple[InitPlan, InitPlan, dict[str, Any]]:
    """(embedding plan, head plan, extras) for ``method``. The two plans differ
    only for ``omp`` with an untied donor head."""
    _check_method(method)
    old, new = _view(old_tok), _view(new_tok)
    if old_rows < old.size:
        raise VocabSwapError(
            f"the old embedding has {old_rows} rows but the old tokenizer has ids up to {old.size - 1}"
        )
    req = PlanRequest(
        old,
        new,
        old_rows,
        _base(old, new, old_rows, pad_multiple),
        seed=seed,
        texts=texts,
        fasttext=fasttext,
        fasttext_vectors=fasttext_vectors,
        donor_embed=donor_embed,
        donor_head=donor_head,
        omp_k=omp_k,
        tokdistil_start=tokdistil_start,
    )
    plan, head_plan = PLANNERS[method](req)
    return plan, head_plan, req.extra
