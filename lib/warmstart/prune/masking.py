"""Masking: zero the pruned units in a full-size model, and the masking check.

Masking is the reference the slicer is tested against (the sliced model's
logits equal the masked model's to 1e-5) and the cheap way to ask, before
any retraining, whether the importance ranking of Minitron (Muralidharan et
al. 2024, "Compact Language Models via Pruning and Knowledge Distillation";
Sreenivas et al. 2024, Llama-3.1-Minitron) finds units that matter: masking
the least important 25% should cost much less than masking a random 25%.

Only standard modules are used (no wrappers), so a masked model is still a
plain ``*ForCausalLM``:

* **neuron** ``j``: column ``j`` of ``down_proj`` is zeroed;
* **head** ``h``: the ``head_dim`` columns of ``o_proj`` that read it are
  zeroed (a dropped KV group = all of its query heads);
* **layer**: ``o_proj`` and ``down_proj`` (weights and biases) are zeroed,
  so both residual branches add exactly 0 and the layer is the identity;
* **hidden channel** ``c``: the embedding column (and LM-head column),
  the rows of every ``o_proj`` / ``down_proj`` (and their biases) that write
  to ``c``, and the norm weights' entry ``c`` are zeroed, so channel ``c`` of
  the residual stream is exactly 0 everywhere. RMSNorm divides by the root
  mean square over *all* ``D`` channels, while the sliced model's norms
  average over the ``K`` kept ones: with pruned channels at 0,
  ``mean_D(x^2) = (K/D) mean_K(x^2)``. The masked norm therefore uses
  ``eps' = eps * K/D`` and kept weights ``w' = w * sqrt(K/D)``:
  ``w' x / sqrt(mean_D(x^2) + eps') = w x / sqrt(mean_K(x^2) + eps)``,
  exactly the sliced norm (an identity in real arithmetic, not an
  approximation). The epsilon lives on the modules (``variance_epsilon``),
  not in the config, so a masked model is for measuring, not for saving.
"""

from __future__ import annotations

import copy
import itertools
import math
import statistics
from collections.abc import Callable, Iterable

import torch

from warmstart.prune.arch import check_model, norms
from warmstart.prune.importance import Importance, _as_batch, random_importance
from warmstart.prune.plan import PrunePlan, PruneTarget, _top, make_plan


def _drop(n: int, keep: torch.Tensor | list[int]) -> torch.Tensor:
    mask = torch.ones(n, dtype=torch.bool)
    mask[torch.as_tensor(keep, dtype=torch.long)] = False
    return mask.nonzero().flatten()


def _zero_(t: torch.Tensor | None, idx: torch.Tensor | None = None, dim: int = 0) -> None:
    if t is None:
        return
    if idx is None:
        t.zero_()
    elif idx.numel():
        t.index_fill_(dim, idx.to(t.device), 0)


@torch.no_grad()
def apply_mask(model: torch.nn.Module, plan: PrunePlan) -> torch.nn.Module:
    """Zero, in place, every unit ``plan`` drops (see the module docstring); returns ``model``."""
    d = plan.dims
    hd = d.head_dim
    layers = model.model.layers
    for i, layer in enumerate(layers):
        attn, mlp = layer.self_attn, layer.mlp
        if i not in plan.layers:
            for lin in (attn.o_proj, mlp.down_proj):
                _zero_(lin.weight)
                _zero_(lin.bias)
            continue
        heads = _drop(d.heads, plan.heads[i])
        cols = (heads[:, None] * hd + torch.arange(hd)).reshape(-1)
        _zero_(attn.o_proj.weight, cols, dim=1)
        _zero_(mlp.down_proj.weight, _drop(d.intermediate, plan.neurons[i]), dim=1)
    k = len(plan.hidden)
    if k < d.hidden:
        gone = _drop(d.hidden, plan.hidden)
        _zero_(model.get_input_embeddings().weight, gone, dim=1)
        _zero_(model.get_output_embeddings().weight, gone, dim=1)
        for layer in layers:
            for lin in (layer.self_attn.o_proj, layer.mlp.down_proj):
                _zero_(lin.weight, gone, dim=0)
                _zero_(lin.bias, gone, dim=0)
        ratio = k / d.hidden
        for norm in norms(model):
            norm.weight.mul_(math.sqrt(ratio))
            _zero_(norm.weight, gone)
            norm.variance_epsilon = norm.variance_epsilon * ratio
    model.prune_mask_plan = plan
    return model


def mask_model(
    model: torch.nn.Module,
    importance: Importance,
    target: PruneTarget | dict,
    *,
    inplace: bool = False,
) -> torch.nn.Module:
    """The full-size model with the units :func:`~warmstart.prune.prune_model` would drop zeroed.

    Same checks and the same plan as ``prune_model``; a deep copy unless
    ``inplace``. Its logits equal the sliced model's (to float rounding).
    """
    plan = make_plan(model, importance, target)
    return apply_mask(model if inplace else copy.deepcopy(model), plan)


@torch.no_grad()
def lm_loss(model: torch.nn.Module, batches: Iterable[torch.Tensor]) -> float:
    """Mean next-token cross-entropy (nats per token) over ``batches`` of token ids."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, n = 0.0, 0
    try:
        for ids in batches:
            ids = _as_batch(ids, device)
            logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"
            )
            total += loss.item()
            n += ids[:, 1:].numel()
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("no evaluation tokens")
    return total / n


def _kept_plan(
    dims, *, method: str = "mask", neurons: torch.Tensor | None = None, heads: torch.Tensor | None = None
) -> PrunePlan:
    """A plan that keeps every unit but the ``[layers, kept]`` neurons or heads given (masking needs no valid shape)."""
    L = dims.layers
    return PrunePlan(
        dims=dims,
        new_dims=dims,
        hidden=torch.arange(dims.hidden),
        neurons=torch.arange(dims.intermediate).repeat(L, 1) if neurons is None else neurons,
        heads=torch.arange(dims.heads).repeat(L, 1) if heads is None else heads,
        kv_heads=torch.arange(dims.kv_heads).repeat(L, 1),
        layers=list(range(L)),
        method=method,
    )


def _fraction_plan(dims, importance: Importance, axis: str, fraction: float) -> PrunePlan:
    """Drop ``fraction`` of every layer's neurons or heads (heads ranked per layer, no GQA constraint:
    masking needs no valid shape)."""
    n = dims.intermediate if axis == "neurons" else dims.heads
    keep = n - round(fraction * n)
    scores = importance.neurons if axis == "neurons" else importance.heads
    kept = torch.stack([_top(scores[i], keep) for i in range(dims.layers)])
    return _kept_plan(dims, method=importance.method, **{axis: kept})


def masking_check(
    model: torch.nn.Module,
    batches_eval: Iterable[torch.Tensor] | None,
    importance: Importance,
    fraction: float = 0.25,
    seed: int = 0,
    *,
    eval_fn: Callable[[torch.nn.Module], float] | None = None,
    n_random: int = 3,
) -> dict:
    """Cost of masking the least important ``fraction`` of neurons (then of heads) against a random one.

    ``eval_fn(model) -> float`` is the metric, lower is better (the caller's
    bits per byte); by default the mean next-token loss on ``batches_eval``
    (a list, reused for every evaluation). For each axis, the least
    important ``fraction`` of every layer's units is masked, and ``n_random``
    random draws (seeds ``seed, seed+1, ...``) of the same size; the result
    has the metric of each, the increases over the unmasked model, their
    ratio, and ``pass`` when the least-important increase is below half the
    mean random one (the Minitron-stage goal).
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    dims = check_model(model)
    importance.check_against(dims)
    if eval_fn is None:
        if batches_eval is None:
            raise ValueError("masking_check needs batches_eval or an eval_fn")
        batches_eval = list(batches_eval)
        eval_fn = lambda m: lm_loss(m, batches_eval)  # noqa: E731
    base = float(eval_fn(model))
    out: dict = {"baseline": base, "fraction": fraction, "seed": seed, "n_random": n_random}
    for axis in ("neurons", "heads"):
        least = float(eval_fn(apply_mask(copy.deepcopy(model), _fraction_plan(dims, importance, axis, fraction))))
        rand = []
        for r in range(n_random):
            plan = _fraction_plan(dims, random_importance(model, seed + r), axis, fraction)
            rand.append(float(eval_fn(apply_mask(copy.deepcopy(model), plan))))
        rand_mean = sum(rand) / len(rand)
        inc_least, inc_rand = least - base, rand_mean - base
        out[axis] = {
            "masked": round(fraction * (dims.intermediate if axis == "neurons" else dims.heads)),
            "least": least,
            "random": rand,
            "random_mean": rand_mean,
            "least_increase": inc_least,
            "random_increase": inc_rand,
            "ratio": inc_least / inc_rand if inc_rand > 0 else float("inf"),
            "pass": inc_rand > 0 and inc_least < 0.5 * inc_rand,
        }
    return out


def head_mask_bound(
    model: torch.nn.Module,
    importance: Importance,
    eval_fn: Callable[[torch.nn.Module], float],
    fraction: float = 0.25,
    *,
    max_masks: int = 4096,
) -> dict:
    """Every head mask the masking check could draw, scored: the best ratio any head ranking can reach.

    The masking check drops the same ``round(fraction x heads)`` heads in
    every layer, so there are ``C(heads, k) ** layers`` possible masks; its
    random draws sample them uniformly, and the importance ranking picks
    one. Scoring all of them (only for small models: at most ``max_masks``)
    gives the exact mean a random draw estimates, the cheapest mask, and so
    the lowest ``least / random`` ratio *any* ranking could report: when
    that bound is above the goal's 0.5, no importance measure can meet it
    on this model. Also where the ranking's own mask falls (``rank``: how
    many masks cost strictly less).
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    dims = check_model(model)
    importance.check_against(dims)
    k = round(fraction * dims.heads)
    if k == 0:
        raise ValueError(f"fraction {fraction} of {dims.heads} heads rounds to 0 heads: nothing to mask")
    n_masks = math.comb(dims.heads, k) ** dims.layers
    if n_masks > max_masks:
        raise ValueError(
            f"{n_masks:,} head masks (C({dims.heads}, {k}) ** {dims.layers} layers) exceed max_masks "
            f"{max_masks:,}: the exhaustive bound is for small models"
        )
    base = float(eval_fn(model))
    ranked = tuple(
        tuple(_drop(dims.heads, _top(importance.heads[i], dims.heads - k)).tolist()) for i in range(dims.layers)
    )
    costs: dict[tuple, float] = {}
    for dropped in itertools.product(itertools.combinations(range(dims.heads), k), repeat=dims.layers):
        kept = torch.stack([_drop(dims.heads, list(d)) for d in dropped])
        costs[dropped] = float(eval_fn(apply_mask(copy.deepcopy(model), _kept_plan(dims, heads=kept)))) - base
    vals = sorted(costs.values())
    mean = sum(vals) / len(vals)
    best = min(costs, key=costs.get)
    return {
        "baseline": base,
        "fraction": fraction,
        "heads_masked_per_layer": k,
        "masks": n_masks,
        "mean_increase": mean,
        "median_increase": statistics.median(vals),
        "best_increase": costs[best],
        "best_mask": [list(d) for d in best],
        "worst_increase": vals[-1],
        "best_ratio": costs[best] / mean if mean > 0 else float("inf"),
        "ranked_mask": [list(d) for d in ranked],
        "ranked_increase": costs[ranked],
        "ranked_ratio": costs[ranked] / mean if mean > 0 else float("inf"),
        "ranked_rank": sum(v < costs[ranked] for v in vals),
        "importance": {"method": importance.method, "seq_agg": importance.seq_agg, "batch_agg": importance.batch_agg},
    }
