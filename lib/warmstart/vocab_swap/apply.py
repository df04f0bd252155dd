"""Applying a plan: the new matrix made from the old rows."""

from __future__ import annotations

import warnings

import torch

from warmstart.vocab_swap.plan import Combination, InitPlan
from warmstart.vocab_swap.sampling import _ROW_CHUNK, COV_ROWS, _mean_row, sample_like

_SLAB_BYTES = 256 << 20  # float32 bytes of one column slab when combining rows


def _combine(old: torch.Tensor, combo: Combination, out: torch.Tensor) -> None:
    """Write the combined rows of ``combo`` into ``out``.

    One sparse (CSR) x dense product in float32 over the distinct source
    rows, in column slabs so that neither the gathered rows nor the result
    exceed ``_SLAB_BYTES``; duplicate (row, source) pairs add up.
    """
    m = len(combo)
    if m == 0:
        return
    uniq, inv = torch.unique(combo.src, return_inverse=True)
    seg = torch.repeat_interleave(torch.arange(m), combo.ptr[1:] - combo.ptr[:-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        coo = torch.sparse_coo_tensor(torch.stack([seg, inv]), combo.weights.to(torch.float32), (m, uniq.numel()))
        csr = coo.coalesce().to_sparse_csr()
        d = old.shape[1]
        slab = max(1, min(d, _SLAB_BYTES // (4 * max(m, uniq.numel()))))
        for a in range(0, d, slab):
            b = min(a + slab, d)
            res = csr @ old[:, a:b].index_select(0, uniq).to(torch.float32)
            if combo.div is not None:
                res.div_(combo.div[:, None])
            out[combo.rows, a:b] = res.to(out.dtype)


def apply_plan(
    old: torch.Tensor,
    plan: InitPlan,
    seed: int,
    cov_rows: int | None = COV_ROWS,
    random_values: torch.Tensor | None = None,
) -> torch.Tensor:
    """The new matrix (``plan.n_rows`` rows, ``old``'s dtype) made from ``old`` by ``plan``.

    ``random_values``: the rows of ``plan.random_rows`` (in that order) made elsewhere (``hf-default``: by
    transformers); None: sampled here (:func:`~warmstart.vocab_swap.sampling.sample_like`)."""
    old = old.detach()
    with torch.no_grad():
        out = torch.zeros(plan.n_rows, old.shape[1], dtype=old.dtype)
        for a in range(0, plan.copy_new.numel(), _ROW_CHUNK):
            sl = slice(a, a + _ROW_CHUNK)
            out.index_copy_(0, plan.copy_new[sl], old.index_select(0, plan.copy_old[sl]))
        if len(plan.combo):
            _combine(old, plan.combo, out)
        if plan.mean_rows.numel():
            out[plan.mean_rows] = _mean_row(old).to(old.dtype)
        if plan.random_rows.numel():
            if random_values is not None:
                if random_values.shape != (plan.random_rows.numel(), old.shape[1]):
                    raise ValueError(
                        f"random_values has shape {tuple(random_values.shape)}, "
                        f"the plan needs ({plan.random_rows.numel()}, {old.shape[1]})"
                    )
                out[plan.random_rows] = random_values.to(old.dtype)
            else:
                out[plan.random_rows] = sample_like(old, plan.random_rows.numel(), seed, cov_rows).to(old.dtype)
        if plan.zero_rows.numel():
            out[plan.zero_rows] = 0
    return out
