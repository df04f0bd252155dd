"""Pruning targets, parameter budgets and the plan of which units are kept.

Minitron (Muralidharan et al. 2024, "Compact Language Models via Pruning and
Knowledge Distillation") prunes every layer's width the same way (one target
hidden size, head count and MLP size for the whole model) and ranks units by
importance; depth pruning drops the least important whole layers. Llama-3.1-
Minitron (Sreenivas et al. 2024) compares width and depth at equal parameter
count; :func:`target_for_budget` gives either shape for a budget of
**non-embedding** parameters (in this project's tiny default the embeddings
and LM head are most of the model, so the fair comparison leaves them out).

Grouped-query attention: query heads are ranked *within* their key-value
group and every kept group keeps the same number of query heads (so the
pruned model is again a valid GQA model with the same head-to-group map);
with a ``kv_heads`` target whole groups are dropped first, ranked by the L2
norm of their query heads' scores.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from warmstart.prune.arch import Dims, check_model, dims_of, params_of
from warmstart.prune.importance import Importance


class PruneTarget(BaseModel):
    """The pruned shape; any subset of the fields (unset = keep the model's)."""

    model_config = ConfigDict(extra="forbid")

    hidden: int | None = Field(default=None, ge=1)
    intermediate: int | None = Field(default=None, ge=1)
    heads: int | None = Field(default=None, ge=1)  # query heads per layer
    kv_heads: int | None = Field(default=None, ge=1)
    layers: int | None = None  # layers kept

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"layers={v} would prune every layer: keep at least one")
        return v


def _as_target(target: PruneTarget | dict) -> PruneTarget:
    return target if isinstance(target, PruneTarget) else PruneTarget.model_validate(target)


def resolve_target(dims: Dims, target: PruneTarget | dict) -> Dims:
    """The pruned :class:`Dims`, or a ``ValueError`` naming what is impossible."""
    t = _as_target(target)
    for name, have in (
        ("hidden", dims.hidden),
        ("intermediate", dims.intermediate),
        ("heads", dims.heads),
        ("kv_heads", dims.kv_heads),
        ("layers", dims.layers),
    ):
        want = getattr(t, name)
        if want is not None and want > have:
            raise ValueError(f"target {name}={want} is larger than the model's {name} ({have})")
    kv = t.kv_heads or dims.kv_heads
    heads = t.heads if t.heads is not None else (kv * dims.group if t.kv_heads else dims.heads)
    if heads % kv:
        raise ValueError(
            f"target heads ({heads}) is not divisible by the {kv} KV groups (kv_heads): GQA pruning keeps "
            f"the same number of query heads in every key-value group"
        )
    if heads // kv > dims.group:
        raise ValueError(
            f"target heads ({heads}) over {kv} kv_heads means {heads // kv} query heads per KV group, "
            f"but the model's groups have {dims.group}: prune fewer KV groups or more heads"
        )
    return replace(
        dims,
        hidden=t.hidden or dims.hidden,
        intermediate=t.intermediate or dims.intermediate,
        heads=heads,
        kv_heads=kv,
        layers=t.layers or dims.layers,
    )


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` highest scores, ascending (ties: lower index kept)."""
    idx = torch.sort(scores, descending=True, stable=True).indices[:k]
    return torch.sort(idx).values


@dataclass
class PrunePlan:
    """Which units survive (indices into the original model, ascending).

    ``neurons`` ``[layers, intermediate']`` and ``heads`` ``[layers, heads']`` /
    ``kv_heads`` ``[layers, kv_heads']`` have a row for every *original*
    layer; ``layers`` lists the kept ones. Kept heads are in group order, so
    kept head ``j`` uses kept KV head ``j // (heads' / kv_heads')``.
    """

    dims: Dims
    new_dims: Dims
    hidden: torch.Tensor
    neurons: torch.Tensor
    heads: torch.Tensor
    kv_heads: torch.Tensor
    layers: list[int]
    method: str = "activation"

    def dropped(self) -> dict:
        """The pruned units (what the report lists)."""

        def rest(n: int, keep) -> list[int]:
            keep = set(torch.as_tensor(keep).tolist())
            return [i for i in range(n) if i not in keep]

        d = self.dims
        return {
            "hidden": rest(d.hidden, self.hidden),
            "layers": rest(d.layers, self.layers),
            "heads": {i: rest(d.heads, self.heads[i]) for i in self.layers},
            "kv_heads": {i: rest(d.kv_heads, self.kv_heads[i]) for i in self.layers},
            "neurons": {i: rest(d.intermediate, self.neurons[i]) for i in self.layers},
        }

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "source": self.dims.to_dict(),
            "pruned": self.new_dims.to_dict(),
            "params": {"source": params_of(self.dims), "pruned": params_of(self.new_dims)},
            "kept": {
                "hidden": self.hidden.tolist(),
                "layers": list(self.layers),
                "heads": self.heads.tolist(),
                "kv_heads": self.kv_heads.tolist(),
            },
            "dropped": self.dropped(),
        }


def make_plan(model_or_config, importance: Importance, target: PruneTarget | dict) -> PrunePlan:
    """Choose the units to keep: the most important ones, per layer for widths, GQA-aware for heads.

    Every check (architecture, target against the model, GQA, importance
    shapes) happens here, before anything is modified or written.
    """
    if hasattr(model_or_config, "named_parameters"):
        dims = check_model(model_or_config)
    else:
        dims = dims_of(model_or_config)
    new = resolve_target(dims, target)
    importance.check_against(dims)
    L = dims.layers
    neurons = torch.stack([_top(importance.neurons[i], new.intermediate) for i in range(L)])
    group, per_group = dims.group, new.heads // new.kv_heads
    heads, kvs = [], []
    for i in range(L):
        s = importance.heads[i].reshape(dims.kv_heads, group)
        keep_kv = _top(s.norm(dim=1), new.kv_heads)
        kvs.append(keep_kv)
        heads.append(torch.cat([g * group + _top(s[g], per_group) for g in keep_kv.tolist()]))
    return PrunePlan(
        dims=dims,
        new_dims=new,
        hidden=_top(importance.hidden, new.hidden),
        neurons=neurons,
        heads=torch.stack(heads),
        kv_heads=torch.stack(kvs),
        layers=_top(importance.layers, new.layers).tolist(),
        method=importance.method,
    )


def target_for_budget(
    config,
    non_embedding_params: int,
    axis: Literal["width", "depth"] = "width",
    *,
    multiple: int = 8,
    heads: int | None = None,
) -> PruneTarget:
    """A :class:`PruneTarget` whose non-embedding parameter count is as close as possible to the budget.

    * ``depth``: keep ``round((budget - final norm) / per-layer)`` layers.
    * ``width``: keep layers and heads (or prune heads to ``heads``); shrink
      hidden size and MLP size, each a multiple of ``multiple`` (or the full
      size), choosing the pair that meets the budget with the most similar
      keep ratios (Minitron-8B: hidden 6144 -> 4096 and MLP 24576 -> 16384,
      the same 2/3 ratio).

    ``ValueError`` if the budget is not below the model's size, or cannot
    be met with at least one layer / unit.
    """
    dims = dims_of(config)
    have = params_of(dims)["non_embedding"]
    budget = int(non_embedding_params)
    if budget > have:
        raise ValueError(f"budget of {budget:,} non-embedding parameters is larger than the model's {have:,}")
    if budget < 1:
        raise ValueError(f"budget must be positive, got {budget}")
    if axis == "depth":
        one = params_of(replace(dims, layers=1))["non_embedding"] - dims.hidden  # one layer, no final norm
        keep = round((budget - dims.hidden) / one)
        if keep < 1:
            raise ValueError(
                f"budget of {budget:,} non-embedding parameters would prune every layer (one layer has {one:,})"
            )
        return PruneTarget(layers=min(keep, dims.layers))
    if axis != "width":
        raise ValueError(f"axis must be 'width' or 'depth', got {axis!r}")
    base = resolve_target(dims, PruneTarget(heads=heads)) if heads else dims
    best = None
    for h in sorted({*range(multiple, dims.hidden + 1, multiple), dims.hidden}):
        p0 = params_of(replace(base, hidden=h, intermediate=0))["non_embedding"]
        slope = params_of(replace(base, hidden=h, intermediate=1))["non_embedding"] - p0
        x = (budget - p0) / slope
        if x < 1:
            continue
        x = min(dims.intermediate, max(1, round(x / multiple) * multiple if x >= multiple else round(x)))
        err = abs(params_of(replace(base, hidden=h, intermediate=x))["non_embedding"] - budget)
        key = (round(abs(h / dims.hidden - x / dims.intermediate), 6), err)
        if best is None or key < best[0]:
            best = (key, h, x)
    if best is None:
        raise ValueError(
            f"budget of {budget:,} non-embedding parameters is too small for width pruning "
            f"with {base.heads} heads in {dims.layers} layers; prune heads or depth too"
        )
    _, h, x = best
    return PruneTarget(
        hidden=h if h < dims.hidden else None, intermediate=x if x < dims.intermediate else None, heads=heads
    )
