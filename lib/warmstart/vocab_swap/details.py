"""What the ``vocab_swap`` stage records of one swap (``reports/vocab_swap/<method>.json``): the swap report's
row counts and vocabulary sizes, step-0 bits per byte of the swapped and of the base model, and the
nearest-neighbour sanity table (:func:`~warmstart.vocab_swap.neighbours.nearest_neighbours`); and its headline
metrics. A ``tokdistil`` swap also records its start method and its distillation (``tokdistil``: the objective
curve, tokens distilled and without a snippet, time and FLOPs per token; :mod:`~warmstart.vocab_swap.tokdistil`);
an ``hf-default`` swap what transformers was asked (``hf``)."""

from __future__ import annotations

from typing import Any

# the swap report's fields the details keep as they are (``fallback_random`` is kept as ``random``)
KEEP = (
    "aligned",
    "decomposed",
    "mean_init",
    "specials_mapped",
    "padded_rows",
    "new_vocab",
    "padded_vocab",
    "old_vocab",
    "tied",
    "seconds",
)


def swap_details(
    method: str, report: Any, bpb: dict, base_bpb: dict, target: str, source: str, neighbours: Any
) -> dict[str, Any]:
    """The details of a swap by ``method``: ``report`` (a :class:`~warmstart.vocab_swap.plan.SwapReport`), the
    bits per byte by language of the swapped model at step 0 and of the base model, and the ``neighbours``
    table (a DataFrame) as records."""
    r = report.to_dict()
    extra = r.get("extra") or {}
    return {
        "method": method,
        **{k: r[k] for k in KEEP},
        "random": r["fallback_random"],
        "bpb_step0": bpb,
        "bpb_base": base_bpb,
        "languages": {"target": target, "source": source},
        "neighbours": neighbours.to_dict(orient="records"),
        **{k: extra[k] for k in ("start", "tokdistil", "hf") if k in extra},
    }


def swap_headline(details: dict[str, Any]) -> dict[str, Any]:
    """The headline of a swap from its :func:`swap_details`: row counts, new vocabulary, step-0 bits per byte;
    for ``tokdistil`` also the rows distilled and the new tokens without a snippet (they keep the start's rows)."""
    target, source = details["languages"]["target"], details["languages"]["source"]
    head = {
        "aligned_rows": details["aligned"],
        "decomposed_rows": details["decomposed"],
        "random_rows": details["random"],
        "new_vocab": details["new_vocab"],
        f"step0_bpb_{target}": details["bpb_step0"][target],
        f"step0_bpb_{source}": details["bpb_step0"][source],
    }
    td = details.get("tokdistil")
    if td:
        head["distilled_rows"] = td["distilled"]
        head["no_snippet_rows"] = td["without_snippet"]
    return head
