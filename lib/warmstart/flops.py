"""Theoretical training FLOPs and model FLOP/s utilisation (MFU).

One formula, used everywhere (DESIGN.md, after PaLM appendix B)::

    FLOPs per token = 6 * N + 12 * L * H * Q * T

* ``N``: the number of **matmul weights** a token goes through, i.e. every
  ``nn.Linear`` weight of the decoder layers (q, k, v, o, gate, up, down)
  **plus the LM head** (``vocab x hidden``, counted even when it is tied to
  the input embedding, because the output projection is a real matmul).
  Not counted: the input embedding lookup (a gather, no FLOPs), norm weights
  and biases (element-wise, negligible).
* ``L`` layers, ``H`` query heads, ``Q`` head dimension, ``T`` sequence length.
  The attention term counts QK^T and AV for the full T x T square (forward
  2 * 2 * T * H * Q per token and layer, times 3 for forward + backward); the
  causal half is *not* subtracted, as in PaLM.

``6 N`` is forward (2 N) plus backward (4 N). MFU is achieved tokens/s times
FLOPs per token over the peak of the devices in use: the vendor bf16 dense
peak on GPUs (:data:`GPU_PEAK_BF16`) and a measured ``torch.matmul`` peak on
CPU (:func:`measured_matmul_peak`).
"""

from __future__ import annotations

import time
from typing import Any

import torch

# Dense (no sparsity) bf16 tensor-core peak per device, FLOP/s.
GPU_PEAK_BF16: dict[str, float] = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def _get(config: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        value = config.get(name) if isinstance(config, dict) else getattr(config, name, None)
        if value is not None:
            return value
    return default


def shape(config: Any) -> dict[str, int]:
    """Shape of a transformers Llama/Mistral-style config (or an equivalent dict)."""
    hidden = _get(config, "hidden_size")
    heads = _get(config, "num_attention_heads")
    return {
        "vocab": _get(config, "vocab_size"),
        "hidden": hidden,
        "layers": _get(config, "num_hidden_layers"),
        "heads": heads,
        "kv_heads": _get(config, "num_key_value_heads", default=heads),
        "head_dim": _get(config, "head_dim", default=hidden // heads),
        "intermediate": _get(config, "intermediate_size"),
    }


def matmul_params(config: Any) -> int:
    """``N``: decoder-layer matmul weights plus the LM head (see module docstring)."""
    s = shape(config)
    h, q = s["hidden"], s["head_dim"]
    attn = h * s["heads"] * q + 2 * h * s["kv_heads"] * q + s["heads"] * q * h  # q, k, v, o
    mlp = 3 * h * s["intermediate"]  # gate, up, down (SwiGLU)
    return s["layers"] * (attn + mlp) + s["vocab"] * h


def matmul_params_of_model(model: torch.nn.Module) -> int:
    """``N`` counted on a model instance: every ``nn.Linear`` weight (LM head included)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def flops_per_token(config: Any, seq_len: int) -> int:
    """Training FLOPs per token: ``6 N + 12 L H Q T``."""
    s = shape(config)
    return 6 * matmul_params(config) + 12 * s["layers"] * s["heads"] * s["head_dim"] * seq_len


def run_flops(config: Any, seq_len: int, tokens: int) -> int:
    """Total theoretical FLOPs of training on ``tokens`` tokens."""
    return flops_per_token(config, seq_len) * int(tokens)


def mfu(tokens_per_s: float, flops_per_token: float, peak: float, n_devices: int = 1) -> float:
    """Model FLOP/s utilisation: achieved FLOP/s over the peak of all devices."""
    return tokens_per_s * flops_per_token / (peak * n_devices)


def measured_matmul_peak(
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    n: int = 1024,
    repeats: int = 5,
) -> float:
    """Best observed ``torch.matmul`` FLOP/s for an ``n x n`` product (2 n^3 FLOPs).

    One warm-up product, then the fastest of ``repeats`` timed ones. On CPU
    this is the peak MFU is reported against; ``n`` between 1024 and 2048
    saturates a few cores without taking more than a second or two.
    """
    device = torch.device(device)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.matmul(a, b)
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def device_peak(device: str | torch.device = "cpu") -> float:
    """Peak FLOP/s of one device: table lookup for known GPUs, otherwise measured."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in GPU_PEAK_BF16.items():
            if key in name:
                return peak
        return measured_matmul_peak(device, torch.bfloat16, n=4096)
    return measured_matmul_peak(device)
