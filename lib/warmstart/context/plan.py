"""The real-scale path: plan (and dry-run) a context-extension fine-tune of a real checkpoint.

At 2.8M parameters the study's extension is a rehearsal; the same code extends a
real Mistral-family checkpoint, for instance from 4K to 16K tokens, on a GPU
node. :func:`plan` reads only the checkpoint's ``config.json`` (no weights) and
returns what the run needs and costs:

* the extended ``rope_parameters`` (:func:`warmstart.context.rope_scaling.rope_config`);
* a :class:`warmstart.train.loop.TrainConfig` for the fine-tune (attention through
  SDPA or FlashAttention-2, bf16 autocast, document-packed long rows) and the
  ``accelerate launch`` command for FSDP2 over ``processes`` devices;
* per-device memory: parameters, gradients and AdamW states (fp32 master
  weights: 4 + 4 + 8 bytes per parameter, sharded by FSDP2 over the
  processes), activations (Korthikanti et al. 2022, "Reducing Activation
  Recomputation": ``s b h (34 + 5 a s / h)`` bytes per layer in 16-bit, whose
  ``5 a s / h`` term, the attention matrix, SDPA and FlashAttention never
  materialise) and the logits (fp32, ``s b V`` times 4 bytes, twice for the
  loss), each stated separately because they are estimates; when they do not
  fit, with activation recomputation (the trainer's ``activation_checkpointing``:
  layer inputs kept, one layer's activations live), which the run config then
  turns on;
* time: training FLOPs per token (:func:`warmstart.flops.flops_per_token`, with
  the attention term at the new length) over an assumed MFU of the GPU's
  datasheet peak (``assumed_mfu``, stated in the output, never measured here).

``python -m warmstart.context plan --model DIR --method yarn --factor 4 --trained-len 4096 --processes 8
--out run.yaml`` prints the plan and writes the run config; ``--dry-run`` instead
extends a *tiny* model of the same architecture family and trains it two steps
at the extended length on this machine's CPU through the same code path (the
test does exactly this), so the recipe is exercised before GPU hours are spent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from warmstart.context.rope_scaling import rope_config
from warmstart.flops import GPU_PEAK, flops_per_token, shape

GIB = 1024**3
GPU_MEMORY_GIB = {"H100": 80, "H200": 141, "A100": 80}
ACCELERATE_CONFIGS = {1: "configs/accelerate/single_gpu.yaml", 8: "configs/accelerate/fsdp2_8gpu.yaml"}


def _config(model: str | Path | dict) -> Any:
    """The transformers config of a model dir (``config.json`` only, no weights) or of a config dict."""
    from transformers import AutoConfig

    if isinstance(model, dict):
        d = dict(model)
        return AutoConfig.for_model(d.pop("model_type"), **d)
    if not (Path(model) / "config.json").is_file():
        raise FileNotFoundError(
            f"model: {Path(model) / 'config.json'} does not exist (a Hugging Face model dir with config.json)"
        )
    return AutoConfig.from_pretrained(model)


def memory(config: Any, seq_len: int, micro_batch: int, processes: int, attention: str = "sdpa") -> dict[str, float]:
    """Per-device memory estimate in GiB (see the module docstring for each term)."""
    s = shape(config)
    n_params = _n_params(s, tie=bool(getattr(config, "tie_word_embeddings", False)))
    states = 16 * n_params / processes
    h, a, L, V = s["hidden"], s["heads"], s["layers"], s["vocab"]
    per_layer = (
        seq_len * micro_batch * h * (34 + (0 if attention in ("sdpa", "flash_attention_2") else 5 * a * seq_len / h))
    )
    acts = L * per_layer
    logits = 2 * 4 * seq_len * micro_batch * V
    recomputed = L * 2 * seq_len * micro_batch * h + per_layer  # layer inputs kept, one layer's activations live
    return {
        "params_grads_adam_gib": states / GIB,
        "activations_gib": acts / GIB,
        "logits_gib": logits / GIB,
        "total_gib": (states + acts + logits) / GIB,
        "total_with_recomputation_gib": (states + recomputed + logits) / GIB,
    }


def _n_params(s: dict, tie: bool) -> int:
    h, q = s["hidden"], s["head_dim"]
    layer = h * s["heads"] * q * 2 + 2 * h * s["kv_heads"] * q + 3 * h * s["intermediate"] + 2 * h
    return s["layers"] * layer + s["vocab"] * h * (1 if tie else 2) + h


def plan(
    model: str | Path | dict,
    method: str,
    factor: float,
    trained_len: int,
    *,
    processes: int = 8,
    micro_batch: int = 1,
    grad_accum: int = 1,
    steps: int = 1000,
    attention: str = "flash_attention_2",
    gpu: str = "H100",
    assumed_mfu: float = 0.35,
    lr: float = 2e-5,
    train_files: list[str] | None = None,
    out_dir: str = "runs/context-extension",
    **opts: Any,
) -> dict[str, Any]:
    """The fine-tune's rope parameters, run config, launch command, memory and time estimates (no weights read)."""
    if attention not in ("sdpa", "flash_attention_2", "eager"):
        raise ValueError(f"attention must be sdpa, flash_attention_2 or eager, got {attention!r}")
    if not 0 < assumed_mfu <= 1:
        raise ValueError(f"assumed_mfu must be in (0, 1], got {assumed_mfu}")
    cfg = _config(model)
    fields = rope_config(method, cfg, factor, trained_len, **opts)
    length = int(round(factor * trained_len))
    peak = next((p for k, p in GPU_PEAK.get("bf16", {}).items() if gpu in k), None)
    if peak is None:
        raise ValueError(f"gpu: no datasheet bf16 peak for {gpu!r}; known: {', '.join(GPU_PEAK.get('bf16', {}))}")
    tokens_per_step = length * micro_batch * grad_accum * processes
    fpt = flops_per_token(cfg, length)
    step_s = tokens_per_step * fpt / (assumed_mfu * peak * processes)
    run = {
        "model_path": str(model) if not isinstance(model, dict) else None,
        "train_files": {"long": train_files or ["long.jsonl"]},
        "seq_len": length,
        "micro_batch": micro_batch,
        "grad_accum": grad_accum,
        "steps": steps,
        "lr": lr,
        "warmup_steps": max(1, steps // 50),
        "lr_schedule": "cosine",
        "weight_decay": 0.0,
        "doc_mask": True,
        "attn_implementation": attention,
        "precision": "bf16",
        "out_dir": out_dir,
        "checkpoint_every": max(1, steps // 10),
    }
    mem = memory(cfg, length, micro_batch, processes, attention)
    device = GPU_MEMORY_GIB.get(gpu, 0)
    # activation recomputation only when the run does not fit without it (it costs about one more forward)
    run["activation_checkpointing"] = bool(mem["total_gib"] > device and mem["total_with_recomputation_gib"] <= device)
    launcher = ACCELERATE_CONFIGS.get(processes, "configs/accelerate/fsdp2_8gpu.yaml")
    return {
        "method": method,
        "trained_len": trained_len,
        "length": length,
        "factor": factor,
        **fields,
        "run_config": run,
        "launch": f"accelerate launch --config_file {launcher} --num_processes {processes} "
        f"-m warmstart.train --config run.yaml",
        "memory_per_device": {
            **mem,
            "device_gib": GPU_MEMORY_GIB.get(gpu),
            "fits": mem["total_gib"] <= device,
            "fits_with_recomputation": mem["total_with_recomputation_gib"] <= device,
            "activation_checkpointing": run["activation_checkpointing"],
        },
        "time": {
            "tokens_per_step": tokens_per_step,
            "flops_per_token": fpt,
            "gpu": gpu,
            "datasheet_peak_bf16": peak,
            "assumed_mfu": assumed_mfu,
            "seconds_per_step": step_s,
            "hours_total": step_s * steps / 3600,
            "note": "an estimate at the assumed MFU, not a measurement",
        },
    }


def describe(p: dict[str, Any]) -> str:
    """The plan as the lines ``python -m warmstart.context plan`` prints."""
    m, t = p["memory_per_device"], p["time"]
    return "\n".join(
        [
            f"{p['method']}: {p['trained_len']} -> {p['length']} tokens; rope_parameters {json.dumps(p['rope_parameters'])}",
            f"memory per device (estimate): states {m['params_grads_adam_gib']:.1f} GiB + activations {m['activations_gib']:.1f} GiB"
            f" + logits {m['logits_gib']:.1f} GiB = {m['total_gib']:.1f} GiB of {m['device_gib']} GiB: "
            + (
                "fits"
                if m["fits"]
                else f"does not fit; with activation recomputation {m['total_with_recomputation_gib']:.1f} GiB: "
                + (
                    "fits (the run config sets activation_checkpointing: true)"
                    if m["fits_with_recomputation"]
                    else "still does not fit: more processes or a shorter micro-batch"
                )
            ),
            f"time (estimate at {t['assumed_mfu']:.0%} MFU of {t['gpu']}'s {t['datasheet_peak_bf16'] / 1e12:.0f} TFLOP/s bf16): "
            f"{t['seconds_per_step']:.2f} s/step, {t['hours_total']:.1f} h for {p['run_config']['steps']} steps",
            f"launch: {p['launch']}",
        ]
    )


def dry_run(
    arch: str,
    method: str,
    factor: float,
    trained_len: int,
    out: Path,
    steps: int = 2,
    activation_checkpointing: bool | None = None,
    **opts: Any,
) -> dict:
    """Extend a tiny ``arch`` model and fine-tune it ``steps`` steps at the new length on CPU, through the
    real path (:func:`~warmstart.context.rope_scaling.extend_dir`, :func:`plan`'s run config, the trainer).
    ``activation_checkpointing`` overrides the plan's choice (a tiny model always fits)."""
    from warmstart.context.rope_scaling import extend_dir
    from warmstart.context.tasks import save_tokenizer
    from warmstart.io import write_jsonl
    from warmstart.model import build_model, save_model
    from warmstart.train.loop import TrainConfig, train

    out = Path(out)
    tok_dir = save_tokenizer(out / "tokenizer")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    model = build_model(arch=arch, vocab_size=len(tok), hidden=32, layers=2, heads=4, kv_heads=2, max_pos=trained_len)
    src = save_model(model, tok, out / "base")
    dst = extend_dir(src, out / "extended", method, factor, trained_len, **opts)
    p = plan(
        src,
        method,
        factor,
        trained_len,
        processes=1,
        micro_batch=2,
        steps=steps,
        attention="sdpa",
        gpu="H100",
        out_dir=str(out / "run"),
        train_files=[str(out / "long.jsonl")],
        **opts,
    )
    words = " ".join(tok.convert_ids_to_tokens(list(range(4, len(tok)))))
    write_jsonl(out / "long.jsonl", [{"text": " ".join([words] * 40)} for _ in range(8)])
    run = {
        **p["run_config"],
        "model_path": str(dst),
        "precision": "fp32",
        "log_every": 1,
        "tensorboard": False,
        "progress": False,
        "checkpoint_every": 0,
    }
    if activation_checkpointing is not None:
        run["activation_checkpointing"] = activation_checkpointing
    result = train(TrainConfig(**run))
    return {"plan": p, "final_loss": result.last_loss, "steps": result.step, "out": str(out)}
