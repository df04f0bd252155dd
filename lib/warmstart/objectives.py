"""The trainer's hybrid masked-causal objective (NorMistral): which rows are masked, and what the model sees.

Each row of a global batch is a masked-next-token row with probability
``masked_share``, drawn from a generator seeded by ``(seed, step)``: exact on
resume and independent of the number of processes. Such a row gets spans of
input tokens replaced by the mask token, bidirectional attention inside each
packed document (blocked across documents), and labels only at the masked
positions. The loss goes through the same LM head with the usual next-token
shift (the output at ``i - 1`` predicts the masked token at ``i``, as in
NorMistral's card). Other rows are plain causal LM rows.

:func:`hybrid_batch` draws the rows and spans for one global batch;
:func:`model_inputs` turns a micro-batch of it into model kwargs (packed
``position_ids`` and the per-backend attention mask from
``warmstart.kernels.attention``).
"""

from __future__ import annotations

from typing import Any

import torch

from warmstart.data.packing import PackedBatch
from warmstart.kernels.attention import attention_inputs


def resolve_mask_id(mask_token_id: int | None, tokenizer: Any, masked_share: float) -> int | None:
    """The mask token of the objective: the configured id, else the tokenizer's; required when ``masked_share > 0``."""
    mask_id = mask_token_id if mask_token_id is not None else tokenizer.mask_token_id
    if masked_share > 0 and mask_id is None:
        raise ValueError("masked_share > 0 needs mask_token_id or a tokenizer with a mask token")
    return mask_id


def hybrid_batch(
    input_ids: torch.Tensor,
    doc_ids: torch.Tensor,
    step: int,
    seed: int,
    share: float,
    mask_prob: float,
    span: int,
    mask_id: int | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs, labels and the per-row masked flag for one global batch.

    Causal rows: inputs unchanged, labels = inputs (transformers shifts).
    Masked rows: span starts drawn with probability ``mask_prob / span``,
    spans of ``span`` tokens that stay inside their document; the first
    token of each document piece is never masked (it has no earlier position
    in its document to be predicted from); at least one token per masked row
    is masked; labels are -100 except at masked positions.
    """
    n, T = input_ids.shape
    if share <= 0:
        return input_ids, input_ids, torch.zeros(n, dtype=torch.bool)
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    masked_rows = torch.rand(n, generator=g) < share
    if not masked_rows.any():
        return input_ids, input_ids, masked_rows
    if mask_id is None:
        raise ValueError("masked_share > 0 needs mask_token_id (or a tokenizer with a mask token)")
    starts = torch.rand(n, T, generator=g) < mask_prob / span
    first = torch.ones(n, T, dtype=torch.bool)
    first[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    m = starts.clone()
    for k in range(1, span):
        m[:, k:] |= starts[:, :-k] & (doc_ids[:, k:] == doc_ids[:, :-k])
    m &= ~first & masked_rows[:, None]
    score = torch.rand(n, T, generator=g).masked_fill(first, -1.0)
    need = masked_rows & ~m.any(1) & (~first).any(1)
    m[need, score[need].argmax(1)] = True
    inputs = torch.where(m, torch.full_like(input_ids, mask_id), input_ids)
    labels = torch.where(masked_rows[:, None] & ~m, torch.full_like(input_ids, -100), input_ids)
    return inputs, labels, masked_rows


def model_inputs(
    attn_implementation: str,
    batch: PackedBatch,
    labels: torch.Tensor,
    masked: torch.Tensor,
    inputs: torch.Tensor,
    doc_mask: bool,
    device: torch.device,
) -> dict:
    """Model kwargs of one micro-batch: inputs, labels, and the attention inputs its rows need."""
    # use_cache=False matters beyond memory: with a cache object transformers ignores packed position_ids.
    out = {"input_ids": inputs.to(device), "labels": labels.to(device), "use_cache": False}
    # packed position_ids when doc_mask; a 4D document/bidirectional mask (a BlockMask on warmstart_flex)
    out.update(attention_inputs(attn_implementation, batch.doc_ids, batch.position_ids, masked, doc_mask, device))
    return out
