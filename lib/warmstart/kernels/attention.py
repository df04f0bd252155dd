"""Attention backend dispatch and the masks each backend needs.

Backends are transformers 5 attention implementations, chosen through its
``AttentionInterface`` registry (no monkey-patching of modeling code):

* ``flash_attention_2``: the ``flash-attn`` package (optional ``gpu`` extra),
  used when it is installed, the device is CUDA with compute capability
  >= 8.0 and the dtype is bf16/fp16. It handles plain causal rows and packed
  documents (transformers' varlen path from ``position_ids``), not the hybrid
  objective's bidirectional rows.
* ``sdpa``: PyTorch ``scaled_dot_product_attention``, everywhere else; on
  CPU it is the only choice (the CPU default study keeps it).
* ``warmstart_flex``: FlexAttention, registered here, for the masks SDPA
  cannot run fast on GPU (SDPA with a dense ``[B, 1, T, T]`` mask falls back
  to the slow kernels): document masking of packed rows, and the hybrid
  objective (bidirectional inside a document, blocked across documents).
  The mask is a ``BlockMask`` built from ``doc_ids`` in O(T) memory; the
  kernel is ``torch.compile``d on CUDA. FlexAttention has no CPU backward,
  so it is never chosen on CPU (its CPU forward is still tested).

Mask kinds (what the trainer's params make): ``"causal"`` (no document
mask, no masked rows), ``"document"`` (``doc_mask``, causal rows only),
``"hybrid"`` (``masked_share > 0``: rows are causal or bidirectional;
with ``doc_mask=False`` causal rows see the whole row, as today).
:func:`attention_inputs` builds, for a backend, exactly the mask the
trainer's current path gives (``document_attention_mask``); a test proves
the outputs equal.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Literal

import torch

from warmstart.kernels.masks import additive_mask, document_attention_mask

MaskKind = Literal["causal", "document", "hybrid"]
FLEX = "warmstart_flex"
_LOW_PRECISION = (torch.bfloat16, torch.float16)


@functools.cache
def flash_attn_installed() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def mask_kind(doc_mask: bool, masked_share: float) -> MaskKind:
    """The mask kind a training config produces."""
    return "hybrid" if masked_share > 0 else ("document" if doc_mask else "causal")


def choose_attention(
    device: torch.device | str,
    dtype: torch.dtype,
    kind: MaskKind = "causal",
    flash_available: bool | None = None,
    capability: tuple[int, int] | None = None,
) -> str:
    """The attention implementation for a device, a compute dtype and a mask kind.

    ``flash_available`` / ``capability`` default to what this machine has
    (tests pass them to check every branch without a GPU).
    """
    device = torch.device(device)
    if device.type != "cuda":
        return "sdpa"
    if flash_available is None:
        flash_available = flash_attn_installed()
    if capability is None:
        capability = torch.cuda.get_device_capability(device)
    flash = flash_available and dtype in _LOW_PRECISION and capability >= (8, 0)
    if kind == "hybrid":
        return FLEX
    if flash:
        return "flash_attention_2"
    return FLEX if kind == "document" else "sdpa"


# ---------------------------------------------------------------- masks


def mask_mod_for(doc_ids: torch.Tensor, bidirectional: torch.Tensor, causal_across: bool = False):
    """FlexAttention ``mask_mod`` equal to :func:`document_attention_mask` (same arguments)."""
    bidi = torch.as_tensor(bidirectional, device=doc_ids.device).reshape(-1).expand(doc_ids.shape[0])

    def mask_mod(b, h, q, kv):
        same = doc_ids[b, q] == doc_ids[b, kv]
        causal = q >= kv
        if causal_across:
            return torch.where(bidi[b], same, causal)
        return same & (causal | bidi[b])

    return mask_mod


def block_mask(doc_ids: torch.Tensor, bidirectional: bool | torch.Tensor = False, causal_across: bool = False):
    """A FlexAttention ``BlockMask`` for packed rows (``[B, T]`` doc ids)."""
    from torch.nn.attention.flex_attention import create_block_mask

    b, T = doc_ids.shape
    mod = mask_mod_for(doc_ids, torch.as_tensor(bidirectional), causal_across)
    return create_block_mask(mod, b, None, T, T, device=doc_ids.device, _compile=doc_ids.is_cuda)


def attention_inputs(
    backend: str,
    doc_ids: torch.Tensor,
    position_ids: torch.Tensor,
    masked: torch.Tensor,
    doc_mask: bool,
    device: torch.device | str,
) -> dict:
    """``position_ids`` / ``attention_mask`` model kwargs for a micro-batch, per backend.

    Same semantics as the trainer's current ``_model_inputs``: packed
    ``position_ids`` when ``doc_mask``; a 4D mask from
    :func:`document_attention_mask` when some row is bidirectional (additive
    for ``eager``); on ``warmstart_flex`` a ``BlockMask`` whenever documents
    or bidirectional rows are involved.
    """
    out: dict = {}
    if doc_mask:
        out["position_ids"] = position_ids.to(device)
    if backend == FLEX and (doc_mask or masked.any()):
        out["attention_mask"] = block_mask(doc_ids.to(device), masked.to(device), causal_across=not doc_mask)
    elif masked.any():
        mask = document_attention_mask(doc_ids, masked, causal_across=not doc_mask).to(device)
        out["attention_mask"] = additive_mask(mask, torch.float32) if backend == "eager" else mask
    return out


# ---------------------------------------------------------------- the flex backend


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention-interface function: FlexAttention with a ``BlockMask`` (or none: causal)."""
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    if dropout:
        raise ValueError("warmstart_flex does not implement attention dropout")
    if attention_mask is None:
        attention_mask = block_mask(torch.zeros(query.shape[0], query.shape[2], dtype=torch.long, device=query.device))
    if not isinstance(attention_mask, BlockMask):
        raise TypeError("warmstart_flex needs a BlockMask (build it with warmstart.kernels.attention_inputs)")
    fn = _compiled_flex() if query.is_cuda else flex_attention
    out = fn(query, key, value, block_mask=attention_mask, scale=scaling, enable_gqa=query.shape[1] != key.shape[1])
    return out.transpose(1, 2).contiguous(), None


def _flex_mask_passthrough(*args, **kwargs):
    """Mask hook for ``warmstart_flex``: masks come from :func:`attention_inputs`; none means causal."""
    return None


@functools.cache
def register_flex() -> str:
    """Register ``warmstart_flex`` with transformers (idempotent); returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(FLEX, flex_attention_forward)
    AttentionMaskInterface.register(FLEX, _flex_mask_passthrough)
    return FLEX
