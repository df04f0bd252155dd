"""The ``focus`` method: FOCUS (Dobler & de Melo 2023).

Overlapping tokens are copied; every other new token is the
sparsemax-weighted combination of the overlapping tokens' rows, with weights
``sparsemax(cos(f(t), f(o_j)))`` over fastText vectors ``f`` trained (gensim)
on target text tokenised with the NEW tokenizer. New tokens absent from that
text fall back to ``random``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from warmstart.vocab_swap.fasttext import _vectors_for, train_fasttext
from warmstart.vocab_swap.plan import Combination, InitPlan, PlanRequest, _assemble, _long
from warmstart.vocab_swap.tokens import VocabSwapError

log = logging.getLogger("warmstart.vocab_swap")  # the package's logger, as before the split into modules


def sparsemax(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Sparsemax (Martins & Astudillo 2016): the Euclidean projection of ``z`` onto the simplex.

    ``out = max(z - tau, 0)`` with ``tau`` such that ``out`` sums to 1 along ``dim``.
    """
    z = z.transpose(dim, -1)
    zs, _ = torch.sort(z, dim=-1, descending=True)
    k = torch.arange(1, z.shape[-1] + 1, dtype=z.dtype, device=z.device)
    cs = zs.cumsum(-1) - 1
    support = k * zs > cs
    kz = support.sum(-1, keepdim=True)
    tau = cs.gather(-1, kz - 1) / kz.to(z.dtype)
    return torch.clamp(z - tau, min=0).transpose(dim, -1)


def _cosines(tn: torch.Tensor, an_t: torch.Tensor) -> torch.Tensor:
    """``tn @ an_t`` on one thread: the same bits whatever ``torch.get_num_threads()``.

    MKL's sgemm splits small products (both sides up to a hundred or so rows)
    differently for different thread counts, and the sums then round
    differently; large ones (a chunk against a few thousand anchors, as in the
    study) give the single-threaded bits on any thread count (1 to 16
    measured), so pinning one thread changes no result there.
    """
    n = torch.get_num_threads()
    if n == 1:
        return tn @ an_t
    torch.set_num_threads(1)
    try:
        return tn @ an_t
    finally:
        torch.set_num_threads(n)


def focus_weights(targets: torch.Tensor, anchors: torch.Tensor, chunk: int = 1024) -> Combination:
    """Sparsemax over the cosine similarities of each target vector to the anchor vectors.

    Returns a :class:`Combination` whose ``rows`` are target positions and
    ``src`` anchor positions (the caller maps both to token ids). The same
    bits whatever the thread count (:func:`_cosines`).
    """
    tn = targets / targets.norm(dim=1, keepdim=True).clamp_min(1e-12)
    an = anchors / anchors.norm(dim=1, keepdim=True).clamp_min(1e-12)
    an_t = an.T
    rows, srcs, ws, counts = [], [], [], []
    for a in range(0, tn.shape[0], chunk):
        w = sparsemax(_cosines(tn[a : a + chunk], an_t))
        r, c = w.nonzero(as_tuple=True)
        rows.append(r + a)
        srcs.append(c)
        ws.append(w[r, c])
        counts.append((w > 0).sum(1))
    if not rows:
        return Combination.empty()
    cnt = torch.cat(counts)
    ptr = torch.zeros(cnt.numel() + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(cnt, 0)
    return Combination(torch.arange(cnt.numel()), ptr, torch.cat(srcs), torch.cat(ws).to(torch.float32))


def plan_focus(req: PlanRequest) -> tuple[InitPlan, InitPlan]:
    """``focus``: exact matches copied (the anchors), the rest combined from them by fastText similarity."""
    new, base, extra = req.new, req.base, req.extra
    anchors_new = sorted(base.matches)
    fasttext_vectors = req.fasttext_vectors
    if fasttext_vectors is None:
        if req.texts is None:
            raise VocabSwapError("method 'focus' needs target texts (texts=..., CLI --fasttext-texts)")
        t0 = time.perf_counter()
        info: dict[str, Any] = {}
        fasttext_vectors = train_fasttext(req.texts, new, req.fasttext, seed=req.seed, info=info)
        extra["fasttext_seconds"] = round(time.perf_counter() - t0, 3)
        extra["fasttext_blas"] = info["blas"]  # the vectors' bits depend on the kernel (FastTextOptions)
    names_a = [new.tokens[i] for i in anchors_new]
    names_t = [new.tokens[i] for i in base.rest]
    pos_a, vec_a = _vectors_for(fasttext_vectors, names_a)  # type: ignore[arg-type]
    pos_t, vec_t = _vectors_for(fasttext_vectors, names_t)  # type: ignore[arg-type]
    extra["anchors"] = len(pos_a)
    extra["targets_without_vector"] = len(base.rest) - len(pos_t)
    if not pos_a or not pos_t:
        log.warning("focus: %d anchors and %d targets with fastText vectors", len(pos_a), len(pos_t))
        plan = _assemble(base, base.matches, Combination.empty(), base.rest)
        return plan, plan
    w = focus_weights(vec_t, vec_a)
    anchor_old = _long(base.matches[anchors_new[j]] for j in pos_a)
    target_new = _long(base.rest[j] for j in pos_t)
    combo = Combination(target_new[w.rows], w.ptr, anchor_old[w.src], w.weights)
    extra["mean_support"] = float(w.src.numel() / max(len(w), 1))
    have = set(target_new.tolist())
    plan = _assemble(base, base.matches, combo, [i for i in base.rest if i not in have])
    return plan, plan
