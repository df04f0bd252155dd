"""The ``random`` method: rows sampled from a normal with the old rows' mean and covariance.

Hewitt's baseline. The covariance is the sample covariance; with fewer rows
than dimensions it is used through the centred rows themselves (exact,
rank-deficient), otherwise through a Cholesky factor with escalating jitter.
Seeded. Every other method falls back to these rows for tokens it cannot
initialise, and special tokens without counterpart get the mean row.
"""

from __future__ import annotations

import math

import torch

from warmstart.vocab_swap.plan import Combination, InitPlan, PlanRequest, _assemble

_ROW_CHUNK = 4096  # rows per block when copying / combining
#: Default number of old rows the covariance of ``random`` rows is estimated from.
COV_ROWS = 16384


def _mean_row(m: torch.Tensor) -> torch.Tensor:
    """float64 mean of the rows of ``m``, without a full float copy."""
    acc = torch.zeros(m.shape[1], dtype=torch.float64)
    for a in range(0, m.shape[0], _ROW_CHUNK):
        acc += m[a : a + _ROW_CHUNK].to(torch.float32).sum(0, dtype=torch.float64)
    return acc / max(m.shape[0], 1)


def _mvn_factor(m: torch.Tensor, cov_rows: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, F) such that ``mean + z @ F`` with ``z ~ N(0, I)`` has the rows' mean and covariance.

    The mean is over all rows. Fewer rows than dimensions: ``F`` is the
    centred rows / sqrt(n - 1) (exact sample covariance, rank n - 1, no
    factorisation). Otherwise the Cholesky factor of the sample covariance,
    with jitter added (1e-6 of the mean variance, times 10 until it
    factorises) when it is singular. With ``cov_rows`` the covariance is
    estimated from that many rows drawn without replacement (seeded): its
    cost is ``rows * d^2`` (all 131072 rows of a 5120-wide matrix: a minute on 2 cores).
    """
    n, d = m.shape
    mu = _mean_row(m)
    mu32 = mu.to(torch.float32)
    if n < 2:
        return mu, torch.zeros(1, d)
    if n <= d:
        return mu, (m.to(torch.float32) - mu32) / math.sqrt(n - 1)
    rows = None
    if cov_rows is not None and n > max(cov_rows, d + 1):
        g = torch.Generator().manual_seed(int(seed) + 7919)
        rows = torch.randperm(n, generator=g)[: max(cov_rows, d + 1)].sort().values
    n_cov = n if rows is None else rows.numel()
    cov = torch.zeros(d, d, dtype=torch.float64)
    for a in range(0, n_cov, _ROW_CHUNK):
        chunk = m[a : a + _ROW_CHUNK] if rows is None else m.index_select(0, rows[a : a + _ROW_CHUNK])
        xc = chunk.to(torch.float32) - mu32
        cov += (xc.T @ xc).to(torch.float64)
    cov /= n_cov - 1
    scale = float(cov.diagonal().mean()) or 1.0
    eye = torch.eye(d, dtype=torch.float64)
    jitter = 0.0
    for _ in range(12):
        chol, info = torch.linalg.cholesky_ex(cov + jitter * eye)
        if int(info) == 0:
            return mu, chol.T.to(torch.float32).contiguous()
        jitter = scale * 1e-6 if jitter == 0.0 else jitter * 10
    raise RuntimeError("covariance of the old rows could not be factorised")


def sample_like(m: torch.Tensor, n: int, seed: int, cov_rows: int | None = None) -> torch.Tensor:
    """``n`` rows from the normal with the mean and covariance of ``m``'s rows (float32, seeded).

    ``cov_rows``: estimate the covariance from at most that many rows (None: all)."""
    mu, f = _mvn_factor(m, cov_rows, seed)
    mu32 = mu.to(torch.float32)
    g = torch.Generator().manual_seed(int(seed))
    out = torch.empty(n, m.shape[1], dtype=torch.float32)
    for a in range(0, n, _ROW_CHUNK):
        b = min(a + _ROW_CHUNK, n)
        z = torch.randn(b - a, f.shape[0], generator=g, dtype=torch.float32)
        out[a:b] = torch.addmm(mu32, z, f)
    return out


def plan_random(req: PlanRequest) -> tuple[InitPlan, InitPlan]:
    """``random``: every non-special row sampled, exact matches included."""
    base = req.base
    rnd = list(base.matches) + base.rest
    plan = _assemble(base, {}, Combination.empty(), rnd)
    return plan, plan
