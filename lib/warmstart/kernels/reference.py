"""Plain-torch references for every fused op (the ground truth the kernels are tested against).

Semantics follow transformers' Llama/Mistral modules exactly:

* :func:`rms_norm`: ``LlamaRMSNorm`` (variance in fp32, cast back, then scale).
* :func:`swiglu`: ``silu(gate) * up`` (the body of ``LlamaMLP``).
* :func:`rope`: ``apply_rotary_pos_emb`` (rotate-half convention, ``cos``/``sin``
  of shape ``[batch, T, head_dim]`` broadcast over heads).
* :func:`linear_cross_entropy`: ``ForCausalLMLoss(lm_head(h), labels)``, i.e. the
  next-token shift, ``ignore_index=-100``, fp32 logits, mean over counted
  tokens (or sum / ``num_items_in_batch``), computed in chunks of tokens under
  activation checkpointing, so neither forward nor backward holds more than
  one chunk of logits (``chunk x vocab``) at a time. This is also the CPU
  fallback of the fused op when Triton is not usable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int = 1):
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """``labels[:, 1:]`` padded with ``-100``: position ``i`` predicts token ``i + 1`` (transformers' shift)."""
    return F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]


def _chunk_ce_sum(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
    logits = F.linear(h, weight, bias).float()
    return F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum")


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    bias: torch.Tensor | None = None,
    num_items_in_batch: int | torch.Tensor | None = None,
    shift: bool = True,
    chunk: int = 4096,
) -> torch.Tensor:
    """Causal-LM loss of ``hidden @ weight.T (+ bias)`` without materialising all the logits."""
    y = shift_labels(labels) if shift else labels
    h, y = hidden.reshape(-1, hidden.shape[-1]), y.reshape(-1).to(hidden.device)
    total = hidden.new_zeros((), dtype=torch.float32)
    for lo in range(0, h.shape[0], chunk):
        hs, ys = h[lo : lo + chunk], y[lo : lo + chunk]
        if torch.is_grad_enabled() and (hs.requires_grad or weight.requires_grad):
            total = total + checkpoint(_chunk_ce_sum, hs, weight, bias, ys, use_reentrant=False)
        else:
            total = total + _chunk_ce_sum(hs, weight, bias, ys)
    if num_items_in_batch is None:
        denom = (y != IGNORE_INDEX).sum()
    else:
        denom = torch.as_tensor(num_items_in_batch, device=total.device)
    return total / denom.to(total.dtype)
