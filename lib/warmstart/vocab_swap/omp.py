"""The ``omp`` method: orthogonal matching pursuit (mergekit's ``tokensurgeon``).

In a donor model that already uses the new tokenizer, each non-shared
token's donor row is approximated by ``k`` donor rows of shared (anchor)
tokens; the same coefficients are applied to the original model's anchor
rows. Batched OMP in torch with a precomputed Gram matrix.
"""

from __future__ import annotations

import time

import torch

from warmstart.vocab_swap.plan import Combination, InitPlan, PlanRequest, _assemble, _long
from warmstart.vocab_swap.tokens import VocabSwapError


def batch_omp(
    targets: torch.Tensor,
    atoms: torch.Tensor,
    k: int,
    *,
    chunk: int = 256,
    gram_limit_bytes: int = 2 << 30,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched orthogonal matching pursuit.

    Approximates every row ``x`` of ``targets`` (B, d) as ``sum_j c_j atoms[idx_j]``
    with ``k`` atoms chosen greedily by absolute correlation of the residual
    with the normalised atoms, the coefficients refitted by least squares after
    each pick (Batch-OMP: correlations are updated through the Gram matrix
    ``G = D D^T`` when it fits in ``gram_limit_bytes``, else recomputed from
    the residual). Returns ``(idx (B, k), coef (B, k), rel_err (B,))`` with
    coefficients for the *unnormalised* atoms and the relative residual norm.
    """
    targets = targets.to(torch.float32)
    atoms = atoms.to(torch.float32)
    n_atoms = atoms.shape[0]
    if n_atoms == 0:
        raise VocabSwapError("OMP needs at least one anchor token shared by both vocabularies")
    k = max(1, min(int(k), n_atoms))
    norms = atoms.norm(dim=1)
    valid = norms > 0
    dn = atoms / norms.clamp_min(torch.finfo(torch.float32).tiny)[:, None]
    dn[~valid] = 0
    gram = dn @ dn.T if n_atoms * n_atoms * 4 <= gram_limit_bytes else None
    n = targets.shape[0]
    idx_out = torch.zeros(n, k, dtype=torch.long)
    coef_out = torch.zeros(n, k, dtype=torch.float32)
    err_out = torch.zeros(n, dtype=torch.float32)
    ridge = 1e-10 * torch.eye(k, dtype=torch.float64)
    invalid = None if bool(valid.all()) else ~valid
    # Gram rows of the atoms picked so far, one gathered per step (reused across chunks)
    grows_buf = torch.empty(min(chunk, n), k, n_atoms) if gram is not None else None
    from tqdm.auto import tqdm

    for a in tqdm(range(0, n, chunk), desc="omp", unit="chunk", disable=True if n <= 16 * chunk else None):
        x = targets[a : a + chunk]
        p = x @ dn.T  # (b, A) correlations with the atoms
        corr = p
        nb = x.shape[0]
        sel = torch.zeros(nb, 0, dtype=torch.long)
        c = torch.zeros(nb, 0, dtype=torch.float64)
        grows = grows_buf[:nb] if grows_buf is not None else None
        for t in range(k):
            score = corr.abs()
            if invalid is not None:
                score[:, invalid] = -1.0
            score.scatter_(1, sel, -1.0)
            pick = score.argmax(1, keepdim=True)
            sel = torch.cat([sel, pick], 1)
            if grows is not None:
                grows[:, t] = gram[pick[:, 0]]
                gss = grows[:, : t + 1].gather(2, sel.unsqueeze(1).expand(nb, t + 1, t + 1))
            else:
                ds = dn[sel]
                gss = ds @ ds.transpose(1, 2)
            rhs = p.gather(1, sel).to(torch.float64)
            c = torch.linalg.solve(gss.to(torch.float64) + ridge[: t + 1, : t + 1], rhs)
            if t < k - 1:
                if grows is not None:
                    corr = p - torch.bmm(c.to(torch.float32).unsqueeze(1), grows[:, : t + 1]).squeeze(1)
                else:
                    resid = x - torch.bmm(c.to(torch.float32).unsqueeze(1), dn[sel]).squeeze(1)
                    corr = resid @ dn.T
        recon = torch.bmm(c.to(torch.float32).unsqueeze(1), dn[sel]).squeeze(1)
        err_out[a : a + chunk] = (x - recon).norm(dim=1) / x.norm(dim=1).clamp_min(1e-30)
        idx_out[a : a + chunk] = sel
        coef_out[a : a + chunk] = (c / norms[sel].to(torch.float64).clamp_min(1e-300)).to(torch.float32)
    return idx_out, coef_out, err_out


def plan_omp(req: PlanRequest) -> tuple[InitPlan, InitPlan]:
    """``omp``: exact matches copied (the anchors), the rest combined from them with the donor's OMP coefficients."""
    new, base, extra = req.new, req.base, req.extra
    donor_embed, donor_head, omp_k = req.donor_embed, req.donor_head, req.omp_k
    anchors_new = sorted(base.matches)
    if donor_embed is None:
        raise VocabSwapError("method 'omp' needs a donor model that uses the new tokenizer (--donor DIR)")
    if donor_embed.shape[0] < new.size:
        raise VocabSwapError(
            f"the donor embedding has {donor_embed.shape[0]} rows but the new tokenizer has ids up to {new.size - 1}: "
            "the donor must use the new tokenizer"
        )

    def omp_combo(donor: torch.Tensor, tag: str) -> tuple[Combination, list[int]]:
        rest = _long(base.rest)
        nonzero = (donor[rest] != 0).any(1) if len(base.rest) else torch.zeros(0, dtype=torch.bool)
        tgt, zero = rest[nonzero].tolist(), rest[~nonzero].tolist()  # a zero donor row: nothing to express
        if not tgt or not anchors_new:
            return Combination.empty(), base.rest
        t0 = time.perf_counter()
        idx, coef, err = batch_omp(donor[_long(tgt)], donor[_long(anchors_new)], omp_k)
        extra[f"{tag}_omp_seconds"] = round(time.perf_counter() - t0, 3)
        extra[f"{tag}_omp_rel_error"] = float(err.mean())
        anchor_old = _long(base.matches[i] for i in anchors_new)
        kk = idx.shape[1]
        ptr = torch.arange(len(tgt) + 1, dtype=torch.long) * kk
        return Combination(_long(tgt), ptr, anchor_old[idx.reshape(-1)], coef.reshape(-1)), zero

    combo, rnd = omp_combo(donor_embed.detach(), "embed")
    extra["anchors"] = len(anchors_new)
    extra["omp_k"] = int(min(omp_k, max(len(anchors_new), 1)))
    plan = _assemble(base, base.matches, combo, rnd)
    if donor_head is None:
        return plan, plan
    if donor_head.shape[0] < new.size:
        raise VocabSwapError(f"the donor LM head has {donor_head.shape[0]} rows, fewer than the new vocabulary")
    hcombo, hrnd = omp_combo(donor_head.detach(), "head")
    head_plan = _assemble(base, base.matches, hcombo, hrnd)
    return plan, head_plan
