"""Bits per byte of long documents by context length and by position in the window.

The convention is :mod:`warmstart.bpb`'s (summed NLL in nats / ln 2 / UTF-8
bytes of the predicted text; EOS separates documents and is read, never
scored), applied to one long stream: documents are tokenized, joined with
EOS (``[eos] d1 [eos] d2 ...``) and the stream is cut into consecutive,
non-overlapping windows of ``length`` tokens, each read from scratch (no
carried context) and scored on every non-EOS target. So a window of
``length`` tokens predicts positions 1..``length`` of its own context, and
the first window of a single short document is scored exactly as
:func:`warmstart.bpb.bits_per_byte` scores it.

* :func:`bpb_by_length` scores the same ``n_windows x max(lengths)`` tokens
  at every length (a shorter length only cuts the stream into more
  windows), so the lengths differ only in how much context each prediction
  has: a model that uses its context gains from a longer window, one that
  breaks past its trained length loses.
* :func:`bpb_by_position` splits the predicted positions of windows of one
  ``length`` into equal buckets: a context-extended model should not get
  worse at the late positions it was not trained on.

Each token's bytes come from the tokenizer's offsets (a running maximum of
character ends, so byte-level BPE tokens that share a character count it
once); a document's tokens add up to its UTF-8 size exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from warmstart.bpb import LN2


def _doc_tokens(text: str, tokenizer: Any) -> tuple[list[int], list[int]]:
    """(ids, bytes per token) of one document; the bytes sum to ``len(text.encode())``."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    nbytes, end, prev = [], 0, 0
    for _, e in offsets:
        end = max(end, int(e))
        cum = len(text[:end].encode("utf-8"))
        nbytes.append(cum - prev)
        prev = cum
    if nbytes:
        nbytes[-1] += len(text.encode("utf-8")) - prev  # trailing text no offset covers (stripped whitespace)
    return ids, nbytes


def token_stream(texts: Sequence[str], tokenizer: Any, n_tokens: int) -> tuple[list[int], list[int]]:
    """The first ``n_tokens + 1`` tokens of ``[eos] d1 [eos] d2 ...`` and their bytes (EOS: 0 bytes).

    Raises ValueError (naming ``texts``) when the documents are too short.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("tokenizer: bits per byte needs an eos token (the document separator)")
    ids, nbytes = [eos], [0]
    for text in texts:
        if len(ids) > n_tokens:
            break
        if not text:
            continue
        if len(ids) > 1:
            ids.append(eos)
            nbytes.append(0)
        d_ids, d_bytes = _doc_tokens(text, tokenizer)
        ids += d_ids
        nbytes += d_bytes
    if len(ids) < n_tokens + 1:
        raise ValueError(f"texts: {len(ids) - 1} tokens in all, {n_tokens} needed (give more or longer documents)")
    return ids[: n_tokens + 1], nbytes[: n_tokens + 1]


@torch.no_grad()
def _token_nll(model: Any, ids: list[int], eos: int, length: int, batch_size: int) -> torch.Tensor:
    """Per-target NLL (nats), shape ``[windows, length]``; EOS targets are 0 (never scored)."""
    x = torch.tensor(ids[:-1], dtype=torch.long).view(-1, length)
    y = torch.tensor(ids[1:], dtype=torch.long).view(-1, length)
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    out = []
    try:
        for b in range(0, x.shape[0], batch_size):
            xb, yb = x[b : b + batch_size].to(device), y[b : b + batch_size].to(device)
            logits = model(input_ids=xb, use_cache=False).logits.float()
            nll = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none").view(yb.shape)
            out.append(torch.where(yb == eos, torch.zeros_like(nll), nll).cpu())
    finally:
        model.train(was)
    return torch.cat(out)


def _check_lengths(lengths: Sequence[int]) -> list[int]:
    lengths = sorted({int(n) for n in lengths})
    if not lengths or lengths[0] < 1:
        raise ValueError(f"lengths must be positive integers, got {lengths}")
    return lengths


def bpb_by_length(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    lengths: Sequence[int],
    n_windows: int = 4,
    batch_size: int = 4,
) -> dict[int, float]:
    """``{length: bits_per_byte}`` on the same ``n_windows x max(lengths)`` tokens of the joined documents.

    Each length must divide the longest one (``L, 2L, 4L``), so every length
    scores exactly the same targets.
    """
    lengths = _check_lengths(lengths)
    top = lengths[-1]
    if any(top % n for n in lengths):
        raise ValueError(f"lengths must each divide the longest ({top}), got {lengths}")
    if n_windows < 1:
        raise ValueError(f"n_windows must be >= 1, got {n_windows}")
    ids, nbytes = token_stream(texts, tokenizer, n_windows * top)
    total_bytes = sum(nbytes[1:])
    if total_bytes == 0:
        raise ValueError("texts: the scored tokens hold no bytes")
    return {
        n: float(_token_nll(model, ids, tokenizer.eos_token_id, n, batch_size).sum()) / LN2 / total_bytes
        for n in lengths
    }


def bpb_by_position(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    length: int,
    buckets: int = 8,
    n_windows: int = 4,
    batch_size: int = 4,
) -> list[dict[str, float | int]]:
    """Bits per byte of windows of ``length`` tokens, by predicted position: one record per bucket.

    Each record: ``start``, ``end`` (positions ``[start, end)`` of the
    predicted token in its window, 1-based as "tokens of context + 1"),
    ``bits_per_byte``, ``tokens`` (scored), ``bytes``.
    """
    if length < 1 or not 1 <= buckets <= length:
        raise ValueError(f"need length >= 1 and 1 <= buckets <= length, got length={length}, buckets={buckets}")
    ids, nbytes = token_stream(texts, tokenizer, n_windows * length)
    nll = _token_nll(model, ids, tokenizer.eos_token_id, length, batch_size)
    byt = torch.tensor(nbytes[1:], dtype=torch.float64).view(-1, length)
    scored = torch.tensor(ids[1:]).view(-1, length) != tokenizer.eos_token_id
    edges = [round(b * length / buckets) for b in range(buckets + 1)]
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        b = float(byt[:, lo:hi].sum())
        out.append(
            {
                "start": lo + 1,
                "end": hi + 1,
                "bits_per_byte": float(nll[:, lo:hi].sum()) / LN2 / b if b else math.nan,
                "tokens": int(scored[:, lo:hi].sum()),
                "bytes": int(b),
            }
        )
    return out
