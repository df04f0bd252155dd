"""Attention masks of packed rows: block-diagonal per document, causal or bidirectional per row.

The dense boolean form every backend takes (SDPA, eager via :func:`additive_mask`);
FlexAttention's block masks (:mod:`warmstart.kernels.attention`) are proved equal to it.
"""

from __future__ import annotations

import torch


def document_attention_mask(
    doc_ids: torch.Tensor, bidirectional: bool | torch.Tensor = False, causal_across: bool = False
) -> torch.Tensor:
    """Boolean ``[batch, 1, T, T]`` mask, True where query ``i`` may attend key ``j``.

    Tokens attend only within their own document (same ``doc_ids``);
    ``bidirectional`` (a bool, or one bool per row) lifts the causal
    constraint inside documents (masked-LM rows). ``causal_across=True``
    gives the plain causal mask over the whole row instead of the
    block-diagonal one (packing without document masking). transformers
    uses a 4D mask as given; sdpa takes booleans, eager attention needs the
    additive form from :func:`additive_mask`.
    """
    b, T = doc_ids.shape
    same = doc_ids[:, :, None] == doc_ids[:, None, :]
    causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()
    bidi = torch.as_tensor(bidirectional, device=doc_ids.device).reshape(-1, 1, 1).expand(b, 1, 1)
    if causal_across:
        mask = torch.where(bidi, same, causal.expand(b, T, T))
    else:
        mask = same & (causal | bidi)
    return mask[:, None]


def additive_mask(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Boolean mask -> additive float mask (0 where allowed, dtype minimum elsewhere)."""
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return out.masked_fill_(~mask, torch.finfo(dtype).min)
