"""Training-throughput benchmark: plain transformers vs torch.compile vs fused kernels vs the full path.

One command (random weights from a config, nothing downloaded)::

    python -m warmstart.kernels.bench --model llama-3.2-1b --seq-len 4096     # on one H100/H200
    python -m warmstart.kernels.bench --tiny                                   # CPU smoke run (tests)

Configurations, each on a fresh, identically seeded model and the same
seeded token batches, one optimizer step (AdamW, fp32 master weights, bf16
autocast) per measured step:

* ``eager``: transformers + SDPA, no compile, no fused kernels;
* ``compile``: the same under ``torch.compile``;
* ``kernels``: attention dispatch + Liger fused RMSNorm/SwiGLU/RoPE/linear-CE, eager;
* ``full``: kernels + ``torch.compile``, same micro-batch as eager (the
  memory and loss comparison);
* ``full-max``: the same at the largest micro-batch that fits (doubling
  until CUDA runs out of memory; capped by ``--max-micro-batch``): the
  throughput and MFU figure.

Warm-up steps (compilation included) are excluded; step time is the median
over the measured steps. Reported per configuration: tokens/s, MFU
(:mod:`warmstart.flops`: ``tokens/s x (6 N + 12 L H Q T) / peak``, LM head in
N, peak from the device table or measured on CPU), peak memory (CUDA
allocator peak; ``None`` on CPU), mean loss over the measured steps, and the
ratio of each to ``eager`` from the same run. A Markdown record with device,
driver, versions, config and date goes to
``<out-dir>/<model>_<device>_<date>.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import platform
import re
import statistics
import time
from pathlib import Path

import torch

from warmstart import flops
from warmstart.kernels import KernelOptions, apply
from warmstart.model import build_model

MODELS: dict[str, dict] = {
    # Llama-3.2-1B's shape (tied embeddings, GQA 32/8, rope theta 500k); random weights
    "llama-3.2-1b": dict(
        vocab_size=128256,
        hidden=2048,
        layers=16,
        heads=32,
        kv_heads=8,
        intermediate=8192,
        tie_embeddings=True,
        rope_theta=500000.0,
    ),
    "tiny": dict(vocab_size=512, hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128),
}
CONFIGS = ("eager", "compile", "kernels", "full", "full-max")


def mfu_of(tokens_per_s: float, config, seq_len: int, peak: float) -> float:
    """MFU of a measured throughput (the one formula of :mod:`warmstart.flops`)."""
    return flops.mfu(tokens_per_s, flops.flops_per_token(config, seq_len), peak)


def device_name(device: torch.device) -> str:
    return (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU {platform.processor() or platform.machine()}"
    )


def device_slug(device: torch.device) -> str:
    if device.type != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(device)
    m = re.search(r"([A-Z]\d{2,4})", name)
    return (m.group(1) if m else name).lower().replace(" ", "-")


def _batch(step: int, mb: int, T: int, vocab: int, device, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randint(0, vocab, (mb, T), generator=g).to(device)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_config(
    name: str,
    spec: dict,
    seq_len: int,
    micro_batch: int,
    steps: int,
    warmup: int,
    device: torch.device,
    dtype: torch.dtype,
    max_micro_batch: int = 64,
    lr: float = 1e-4,
) -> dict:
    """Measure one configuration; returns its numbers and what was patched."""
    model = build_model(**spec, max_pos=max(seq_len, 2048)).to(device)
    model.config.use_cache = False
    opts = KernelOptions(attention="sdpa")
    if name in ("kernels", "full", "full-max"):
        opts = KernelOptions.all()
    patched = apply(model, opts, device=device, dtype=dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, fused=device.type == "cuda")
    fwd = torch.compile(model) if name in ("compile", "full", "full-max") else model
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def step(k: int, mb: int) -> float:
        x = _batch(k, mb, seq_len, spec["vocab_size"], device)
        with autocast:
            loss = fwd(input_ids=x, labels=x, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    mb = micro_batch
    if name == "full-max" and device.type == "cuda":  # largest micro-batch that fits: double until OOM
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        while mb * 2 <= max_micro_batch:
            try:
                step(0, mb * 2)
                _sync(device)
                mb *= 2
            except torch.OutOfMemoryError:
                break
            finally:
                opt.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
        model.load_state_dict(state)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, fused=True)
        del state
    for k in range(warmup):
        step(-1 - k, mb)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, losses = [], []
    for k in range(steps):
        t0 = time.perf_counter()
        loss = step(k, mb)
        _sync(device)
        times.append(time.perf_counter() - t0)
        losses.append(float(loss))
    med = statistics.median(times)
    return {
        "config": name,
        "micro_batch": mb,
        "step_s": med,
        "tokens_per_s": mb * seq_len / med,
        "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "loss": statistics.fmean(losses),
        "patched": patched,
        "model_config": model.config,
    }


def add_ratios(results: list[dict], seq_len: int, peak: float) -> list[dict]:
    """MFU per configuration and every ratio to ``eager`` (the first result must be eager)."""
    base = next(r for r in results if r["config"] == "eager")
    for r in results:
        r["mfu"] = mfu_of(r["tokens_per_s"], r["model_config"], seq_len, peak)
        r["speedup"] = r["tokens_per_s"] / base["tokens_per_s"]
        r["mem_ratio"] = r["peak_mem_gib"] / base["peak_mem_gib"] if base["peak_mem_gib"] else None
        r["loss_rel"] = r["loss"] / base["loss"] - 1.0
    return results


def _fmt(v, spec):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def table(results: list[dict]) -> str:
    head = "| config | micro-batch | tokens/s | x eager | MFU | peak mem GiB | x eager | mean loss | vs eager |"
    rows = [head, "|" + "---|" * 9]
    for r in results:
        rows.append(
            f"| {r['config']} | {r['micro_batch']} | {r['tokens_per_s']:.1f} | {r['speedup']:.2f} | {r['mfu']:.2%} | "
            f"{_fmt(r['peak_mem_gib'], '.2f')} | {_fmt(r['mem_ratio'], '.2f')} | {r['loss']:.4f} | {r['loss_rel']:+.3%} |"
        )
    return "\n".join(rows)


def record(results: list[dict], args, device: torch.device, peak: float, date: str) -> str:
    import transformers

    try:
        import triton

        triton_v = triton.__version__
    except ImportError:
        triton_v = "not installed"
    try:
        from importlib.metadata import version

        import liger_kernel  # noqa: F401

        liger_v = version("liger-kernel")
    except ImportError:
        liger_v = "not installed"
    driver = "n/a"
    if device.type == "cuda":
        driver = f"CUDA {torch.version.cuda}, capability {'.'.join(map(str, torch.cuda.get_device_capability(device)))}"
        try:
            import subprocess

            driver += (
                ", driver "
                + subprocess.run(
                    ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                    capture_output=True,
                    text=True,
                ).stdout.strip()
            )
        except OSError:
            pass
    patched = "\n".join(f"- {r['config']}: {r['patched']}" for r in results)
    return f"""# Training benchmark: {args.model} on {device_name(device)}

- date: {date}
- device: {device_name(device)} ({driver}); peak used for MFU: {peak:.4g} FLOP/s
- host: {platform.platform()}, {torch.get_num_threads()} torch threads
- versions: python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, triton {triton_v}, liger-kernel {liger_v}
- model: {args.model} {MODELS[args.model]} (random weights, seed 0)
- run: seq_len {args.seq_len}, micro-batch {args.micro_batch} (full-max: largest that fits), dtype {args.dtype},
  {args.warmup} warm-up steps excluded, median of {args.steps} measured steps, AdamW lr 1e-4
- command: `python -m warmstart.kernels.bench {" ".join(args.argv)}`

{table(results)}

What each configuration patched:
{patched}
"""


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m warmstart.kernels.bench", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="llama-3.2-1b", choices=sorted(MODELS))
    p.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny model, seq 128, 3 steps")
    p.add_argument("--seq-len", type=int, default=4096)
    p.add_argument("--micro-batch", type=int, default=1)
    p.add_argument("--max-micro-batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--peak", type=float, default=None, help="peak FLOP/s (default: device table, or measured)")
    p.add_argument("--out-dir", default="reports/bench")
    argv = list(argv) if argv is not None else None
    args = p.parse_args(argv)
    args.argv = argv if argv is not None else __import__("sys").argv[1:]
    if args.tiny:
        args.model, args.seq_len, args.steps, args.warmup = (
            "tiny",
            min(args.seq_len, 128),
            min(args.steps, 3),
            min(args.warmup, 1),
        )
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = set(configs) - set(CONFIGS)
    if unknown or "eager" not in configs:
        p.error(f"--configs must include eager and only name {CONFIGS}, got {configs}")
    configs = ["eager"] + [c for c in configs if c != "eager"]
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    peak = args.peak or flops.device_peak(device)
    results = []
    for name in configs:
        results.append(
            run_config(
                name,
                MODELS[args.model],
                args.seq_len,
                args.micro_batch,
                args.steps,
                args.warmup,
                device,
                dtype,
                args.max_micro_batch,
            )
        )
        if device.type == "cuda":
            torch.cuda.empty_cache()
    add_ratios(results, args.seq_len, peak)
    date = dt.date.today().isoformat()
    out = Path(args.out_dir) / f"{args.model}_{device_slug(device)}_{date}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(record(results, args, device, peak, date))
    print(table(results))
    print(f"written {out}")
    for r in results:
        r["path"] = str(out)
    return results


if __name__ == "__main__":
    main()
