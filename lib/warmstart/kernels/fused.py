"""Fused Triton ops (Liger-Kernel) behind plain-torch fallbacks.

Liger-Kernel (``liger-kernel``, the optional ``gpu`` extra) provides the four
fused ops: RMSNorm, SwiGLU, RoPE and the fused linear + cross-entropy that
never materialises the ``tokens x vocab`` logits. No home-made Triton kernel
is shipped: none has been measured to beat Liger's yet (that needs a GPU).

:func:`triton_usable` says whether Triton kernels can run on a device: CUDA
with ``triton`` and ``liger_kernel`` importable, or any device when the
Triton interpreter is on (``TRITON_INTERPRET=1``, set before triton is
imported; tests only, it is slow). Every function here takes the reference
path (:mod:`warmstart.kernels.reference`) when that is false.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from warmstart.kernels import reference

_LIGER = all(importlib.util.find_spec(m) is not None for m in ("triton", "liger_kernel"))


def liger_installed() -> bool:
    return _LIGER  # a constant, so torch.compile traces through the dispatch without a graph break


def interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def triton_usable(device: torch.device | str) -> bool:
    device = torch.device(device)
    return liger_installed() and (device.type == "cuda" or interpreter_on())


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    if not triton_usable(x.device):
        return reference.rms_norm(x, weight, eps)
    from liger_kernel.ops.rms_norm import LigerRMSNormFunction

    # casting_mode "llama": variance in fp32, cast to the input dtype before the weight, like LlamaRMSNorm.
    return LigerRMSNormFunction.apply(x, weight, eps, 0.0, "llama", False)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    if not triton_usable(gate.device):
        return reference.swiglu(gate, up)
    from liger_kernel.ops.swiglu import LigerSiLUMulFunction

    return LigerSiLUMulFunction.apply(gate, up)


def rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int = 1):
    if not triton_usable(q.device) or unsqueeze_dim != 1:
        return reference.rope(q, k, cos, sin, unsqueeze_dim)
    from liger_kernel.ops.rope import LigerRopeFunction

    return LigerRopeFunction.apply(q, k, cos, sin)


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    bias: torch.Tensor | None = None,
    num_items_in_batch: int | torch.Tensor | None = None,
    shift: bool = True,
) -> torch.Tensor:
    """Causal-LM loss of ``hidden @ weight.T`` (same semantics as :func:`reference.linear_cross_entropy`)."""
    if not triton_usable(hidden.device):
        return reference.linear_cross_entropy(hidden, weight, labels, bias, num_items_in_batch, shift)
    from liger_kernel.ops.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyFunction

    y = reference.shift_labels(labels) if shift else labels
    h, y = hidden.reshape(-1, hidden.shape[-1]), y.reshape(-1).to(hidden.device)
    reduction = "mean" if num_items_in_batch is None else "sum"
    out = LigerFusedLinearCrossEntropyFunction.apply(
        h, weight, y, bias, None, reference.IGNORE_INDEX, 0.0, 0.0, reduction
    )
    loss = out[0] if isinstance(out, tuple) else out
    if num_items_in_batch is not None:
        loss = loss / torch.as_tensor(num_items_in_batch, device=loss.device).to(loss.dtype)
    return loss
