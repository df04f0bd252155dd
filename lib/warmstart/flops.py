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
FLOPs per token over the peak of the devices in use: the vendor dense peak
for the dtype on GPUs (:data:`GPU_PEAK`; :data:`GPU_PEAK_BF16` is its bf16
column) and a measured ``torch.matmul`` peak on CPU.

**Credible throughput.** Tokens/s and achieved FLOP/s (tokens/s x FLOPs per
token) are measurements and always reported. MFU is a ratio to a *stated*
peak and is only as good as that peak:

* GPU: the datasheet peak for the dtype (:func:`peak_record` says which).
* CPU: no datasheet; :func:`measure_peak` times an ``n x n`` matmul in
  ``rounds`` rounds (best of ``repeats`` each) and keeps the **median**, with
  min, max and the relative spread ``(max - min) / median``. On a machine that
  other processes share, both the peak and the training steps are slowed at
  random, so :func:`throughput` flags MFU as unreliable (and does not state it)
  when the peak's spread, the run's step-throughput spread (IQR / median of the
  logged tokens/s) or the spread of the peaks the study's runs measured for
  themselves exceeds :data:`TOLERANCE`, and whenever it would exceed 100%.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import torch

# Dense (no sparsity) tensor-core peak per device and dtype, FLOP/s (SXM datasheets; fp32 = plain FP32 units).
GPU_PEAK: dict[str, dict[str, float]] = {
    "bf16": {"H100": 989e12, "H200": 989e12, "A100": 312e12},
    "fp16": {"H100": 989e12, "H200": 989e12, "A100": 312e12},
    "tf32": {"H100": 494.5e12, "H200": 494.5e12, "A100": 156e12},
    "fp32": {"H100": 66.9e12, "H200": 66.9e12, "A100": 19.5e12},
}
GPU_PEAK_BF16: dict[str, float] = GPU_PEAK["bf16"]
# Relative spread above which a measured peak or a run's step throughput marks the machine as shared and MFU
# as unreliable: (max - min) / median of the peak rounds; IQR / median of the logged tokens/s.
TOLERANCE = 0.10
DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


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


def _spread(values: list[float]) -> float:
    med = statistics.median(values)
    return (max(values) - min(values)) / med if med > 0 else math.inf


def measure_peak(
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    n: int = 1024,
    rounds: int = 9,
    repeats: int = 3,
    tolerance: float = TOLERANCE,
) -> dict[str, Any]:
    """A robust ``torch.matmul`` peak: ``rounds`` measurements (each the best of ``repeats`` products).

    Returns ``{"flops" (the median), "median", "min", "max", "spread", "samples", "rounds", "repeats", "n",
    "dtype", "device", "source": "measured", "tolerance", "reliable"}``; ``reliable`` is ``spread <=
    tolerance`` (a larger spread means something else was using the device while it was measured).
    """
    samples = [measured_matmul_peak(device, dtype, n=n, repeats=repeats) for _ in range(max(1, rounds))]
    spread = _spread(samples)
    med = statistics.median(samples)
    return {
        "flops": med,
        "median": med,
        "min": min(samples),
        "max": max(samples),
        "spread": spread,
        "samples": samples,
        "rounds": len(samples),
        "repeats": repeats,
        "n": n,
        "dtype": DTYPE_NAMES.get(dtype, str(dtype)),
        "device": device_name(device),
        "source": "measured",
        "tolerance": tolerance,
        "reliable": bool(spread <= tolerance),
    }


def device_name(device: str | torch.device = "cpu") -> str:
    """'NVIDIA H200', or the CPU model with its usable core count: 'AMD EPYC (2 cores)'."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from warmstart.hardware import cpu_model, usable_cores

    return f"{cpu_model()} ({usable_cores()} cores)"


def datasheet_peak(name: str, dtype: str = "bf16") -> float | None:
    """The vendor's dense peak of a GPU by name ('NVIDIA H100 80GB HBM3') and dtype, or None when unknown."""
    for key, peak in GPU_PEAK.get(dtype, {}).items():
        if key in name:
            return peak
    return None


def peak_record(device: str | torch.device = "cpu", dtype: str = "bf16", **measure: Any) -> dict[str, Any]:
    """The peak MFU is stated against, and where it comes from: a known GPU's datasheet peak for ``dtype``
    (``{"flops", "source": "datasheet", "device", "dtype", "reliable": True}``), else :func:`measure_peak`
    (``measure``: its keyword arguments; a GPU unknown to the table is measured in bf16 at n = 4096)."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = datasheet_peak(name, dtype)
        if peak is not None:
            return {"flops": peak, "source": "datasheet", "device": name, "dtype": dtype, "reliable": True}
        return measure_peak(device, **{"dtype": torch.bfloat16, "n": 4096, **measure})
    return measure_peak(device, **measure)


def device_peak(device: str | torch.device = "cpu") -> float:
    """Peak FLOP/s of one device: the datasheet for known GPUs, otherwise the median of a robust measurement."""
    return float(peak_record(device)["flops"])


# ---------------------------------------------------------------- throughput of a run


def _quantile(v: list[float], q: float) -> float:
    s = sorted(v)
    pos = (len(s) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def recorded_peaks(log: list[dict], flops_per_token: float) -> list[float]:
    """The peaks a run's trainer divided by, recovered from its log (``tokens_per_s x fpt / mfu``), one per
    distinct value (the trainer measures once per launch, so once per phase)."""
    out: list[float] = []
    for r in log:
        if r.get("mfu") and r.get("tokens_per_s"):
            p = r["tokens_per_s"] * flops_per_token / r["mfu"]
            if not any(abs(p - q) <= 1e-6 * q for q in out):
                out.append(p)
    return out


def throughput(
    log: list[dict],
    flops_per_token: float | None,
    peak: dict[str, Any] | None = None,
    n_devices: int = 1,
    tolerance: float = TOLERANCE,
    study_peaks: list[float] | None = None,
) -> dict[str, Any]:
    """What a run's step log says about its speed, and whether an MFU can be stated.

    ``log``: the trainer's records (``tokens_per_s``, optionally the ``mfu`` it computed); the first record (with
    start-up) is left out. ``peak``: a :func:`peak_record` (None: no peak, no MFU). ``study_peaks``: the peaks
    every run of the study recorded for itself (:func:`recorded_peaks`), for the shared-machine check.

    Returns ``tokens_per_s`` (median), ``tokens_per_s_iqr`` ``[p25, p75]``, ``step_spread`` (IQR / median),
    ``achieved_flops`` (median tokens/s x FLOPs per token), ``recorded_peaks``, ``mfu`` (achieved over the peak,
    or None), ``mfu_reliable`` and ``reasons`` (why not), ``mfu_stated`` (``mfu`` when reliable, else None),
    ``logged_mfu`` (the mean of the log's own ``mfu``, for reference only) and ``flags`` (what failed, by name:
    ``impossible``, ``peak_spread``, ``step_spread``, ``own_peaks_spread``, ``study_peaks_spread``, each with its
    value).
    """
    rows = [r for r in log if r.get("tokens_per_s")]
    rows = rows[1:] if len(rows) > 1 else rows
    tps = [float(r["tokens_per_s"]) for r in rows]
    out: dict[str, Any] = {
        "records": len(tps),
        "tokens_per_s": None,
        "tokens_per_s_iqr": None,
        "step_spread": None,
        "achieved_flops": None,
        "recorded_peaks": [],
        "mfu": None,
        "mfu_reliable": False,
        "mfu_stated": None,
        "reasons": [],
        "tolerance": tolerance,
        "peak": peak,
        "logged_mfu": None,
        "flags": {},
    }
    reasons: list[str] = out["reasons"]
    flags: dict[str, float] = out["flags"]
    if not tps:
        reasons.append("no throughput in the log")
        return out
    med = statistics.median(tps)
    p25, p75 = _quantile(tps, 0.25), _quantile(tps, 0.75)
    out.update(tokens_per_s=med, tokens_per_s_iqr=[p25, p75], step_spread=(p75 - p25) / med if med else None)
    logged = [float(r["mfu"]) for r in rows if r.get("mfu") is not None]
    out["logged_mfu"] = sum(logged) / len(logged) if logged else None
    if not flops_per_token:
        reasons.append("FLOPs per token unknown")
        return out
    out["achieved_flops"] = med * flops_per_token
    out["recorded_peaks"] = recorded_peaks(rows, flops_per_token)
    if not peak or not peak.get("flops"):
        reasons.append("no stated peak")
        return out
    out["mfu"] = out["achieved_flops"] / (peak["flops"] * n_devices)
    if peak.get("source") != "datasheet":
        if peak.get("spread") is not None and peak["spread"] > tolerance:
            flags["peak_spread"] = peak["spread"]
            reasons.append(
                f"the peak's {peak.get('rounds', '?')} timings spread {100 * peak['spread']:.0f}% "
                f"(> {100 * tolerance:.0f}%)"
            )
        if out["step_spread"] is not None and out["step_spread"] > tolerance:
            flags["step_spread"] = out["step_spread"]
            reasons.append(
                f"step throughput varied {100 * out['step_spread']:.0f}% (IQR / median > {100 * tolerance:.0f}%)"
            )
        own = out["recorded_peaks"]
        if len(own) > 1 and _spread(own) > tolerance:
            flags["own_peaks_spread"] = _spread(own)
            reasons.append(f"the peaks the run measured for itself spread {100 * _spread(own):.0f}%")
        if study_peaks and len(study_peaks) > 1 and _spread(study_peaks) > tolerance:
            flags["study_peaks_spread"] = _spread(study_peaks)
            reasons.append(
                f"the peaks the study's runs measured spread {100 * _spread(study_peaks):.0f}% "
                f"({min(study_peaks) / 1e9:.0f}–{max(study_peaks) / 1e9:.0f} GFLOP/s): a shared machine"
            )
    if out["mfu"] > 1:  # last: when the peak is unreliable, the reasons above say why first
        flags["impossible"] = out["mfu"]
        reasons.append(f"{100 * out['mfu']:.0f}% of the peak (impossible)")
    out["mfu_reliable"] = not reasons
    out["mfu_stated"] = out["mfu"] if not reasons else None
    return out
