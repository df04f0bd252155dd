"""Training-run mechanics shared by the study's stages (``warmstart.stages.base``, ``swap``, ``pretrain``).

Launching a :class:`~warmstart.train.config.TrainConfig` in-process or through
``accelerate launch``, the optimiser fields of a phase, the tiny base model's
spec and run config, log summaries and merging, bits-per-byte tables, reading
a finished run's ``run.json``; and ``python -m warmstart.train.launch bench`` (trainer
tokens/s over a bare loop). Which runs exist and where they live is
:mod:`warmstart.runs`; what each stage does is :mod:`warmstart.stages`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from warmstart.bpb import bits_per_byte, held_out_texts
from warmstart.config import Optim, Params
from warmstart.data.tokenize import token_dir
from warmstart.io import read_jsonl, write_json
from warmstart.model import ModelSpec
from warmstart.train.bench import benchmark_overhead
from warmstart.train.config import TrainConfig
from warmstart.train.distributed import launch_command
from warmstart.train.loop import train

# ---------------------------------------------------------------- paths


def fresh_dir(path: Path) -> Path:
    """An empty output dir (the stage's own output: DVC removes it too before running)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


# ---------------------------------------------------------------- launching


def launch(cfg: TrainConfig, num_processes: int = 1, resume: bool = False) -> None:
    """Train ``cfg``: in this process for one process, else through ``accelerate launch`` as a process; with
    ``resume``, from the latest checkpoint in its out_dir (if any)."""
    if num_processes == 1:
        train(cfg, resume=resume)
        return
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "launch_config.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    cmd = launch_command(path, num_processes, resume=resume)
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed with exit code {proc.returncode}")


def optim_fields(o: Optim, scale: float = 1.0) -> dict[str, Any]:
    steps = max(1, round(o.steps * scale))
    return {
        "steps": steps,
        "lr": o.lr,
        "warmup_steps": min(steps, round(o.warmup_steps * scale)),
        "lr_schedule": o.lr_schedule,
        "decay_steps": min(max(0, steps - round(o.warmup_steps * scale)), round(o.decay_steps * scale)),
        "min_lr_ratio": o.min_lr_ratio,
        "optimizer": o.optimizer,
        "weight_decay": o.weight_decay,
        "max_grad_norm": o.max_grad_norm,
        "betas": tuple(o.betas),
        "eps": o.eps,
        "no_decay": list(o.no_decay),
    }


def tiny_spec(params: Params) -> ModelSpec:
    m = params.base.model
    return ModelSpec(
        arch=m.arch,
        hidden=m.hidden,
        layers=m.layers,
        heads=m.heads,
        kv_heads=m.kv_heads,
        intermediate=m.intermediate,
        max_pos=m.max_pos,
        tie_embeddings=m.tie_embeddings,
        rope_theta=m.rope_theta,
        initializer_range=m.initializer_range,
        seed=params.shared.seed,
    )


def summarize_log(log: list[dict]) -> dict[str, Any]:
    """Mean throughput and MFU over logged steps (the first log record, with start-up, excluded)."""
    rows = [r for r in log if r.get("tokens_per_s")]
    rows = rows[1:] if len(rows) > 1 else rows

    def mean(key: str) -> float | None:
        vals = [r[key] for r in rows if r.get(key) is not None]
        return sum(vals) / len(vals) if vals else None

    losses = [r["loss"] for r in log if r.get("loss") is not None]
    return {
        "mean_tokens_per_s": mean("tokens_per_s"),
        "mean_mfu": mean("mfu"),
        "final_loss": losses[-1] if losses else None,
        "peak_mem_bytes": max((r.get("peak_mem_bytes") or 0 for r in log), default=None),
        "skipped_steps": sum(1 for r in log if r.get("skipped")),
    }


def bpb_table(
    model: Any, tokenizer: Any, params: Params, seq_len: int, max_bytes: int, split: str = "test"
) -> dict[str, float]:
    """Bits per byte on ``split`` of the source and target language."""
    langs = [params.shared.target_lang, params.shared.source_lang]
    return {
        lang: bits_per_byte(model, tokenizer, held_out_texts(params, lang, split, max_bytes), seq_len)["bits_per_byte"]
        for lang in langs
    }


# ---------------------------------------------------------------- base


def base_train_config(params: Params, out_dir: str | Path) -> TrainConfig:
    """The tiny base model's pretraining run on the source-language corpus."""
    b = params.base
    return TrainConfig(
        model=tiny_spec(params),
        tokenizer_path=str(params.path("tokenizer", "source")),
        train_files={"source": [str(token_dir(params, "base", "source"))]},
        seq_len=b.seq_len,
        micro_batch=b.micro_batch,
        grad_accum=b.grad_accum,
        **optim_fields(b.optim),
        out_dir=str(out_dir),
        checkpoint_every=b.checkpoint_every,
        log_every=b.log_every,
        seed=params.shared.seed,
        keep_last=1,
        export_final=False,
    )


# ---------------------------------------------------------------- vocabulary swap


# ---------------------------------------------------------------- pretraining runs


def merge_logs(phases: list[tuple[str, Path]]) -> tuple[list[dict], list[dict]]:
    """One log with global steps and cumulative counters; the phase table."""
    merged: list[dict] = []
    table = []
    off = {"step": 0, "samples": 0, "tokens": 0, "bytes": 0}
    for name, out in phases:
        recs = read_jsonl(out / "log.jsonl")
        steps = json.loads((out / "train_config.json").read_text())["steps"]
        table.append({"name": name, "start_step": off["step"] + 1, "steps": steps})
        last = dict(off)
        for r in recs:
            r = {**r, "phase": name}
            for k in off:
                if r.get(k) is not None:
                    r[k] = r[k] + off[k]
                    last[k] = r[k]
            merged.append(r)
        off = {**last, "step": off["step"] + steps}
    return merged, table


def read_run(params: Params, run: str) -> dict[str, Any]:
    path = params.path("logs", run, "run.json")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run the `{run}` stage first")
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> int:
    """``python -m warmstart.train.launch bench``: trainer tokens/s over a bare loop on the default base model."""
    import argparse
    import platform

    from warmstart.config import load_params

    ap = argparse.ArgumentParser(prog="python -m warmstart.train.launch", description=main.__doc__)
    ap.add_argument("cmd", choices=["bench"])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--steps", type=int, default=60, help="measured + warm-up steps (a multiple of --warmup)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--out", help="also write the result as JSON here")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    if not (params.path("tokenizer", "source") / "tokenizer.json").is_file():
        raise SystemExit("error: no data/tokenizer/source: run `dvc repro tokenizer` first")
    res = benchmark_overhead(base_train_config(params, "unused"), args.steps, args.warmup)
    res |= {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
        "config": {
            "seq_len": params.base.seq_len,
            "micro_batch": params.base.micro_batch,
            "model": params.base.model.model_dump(),
        },
    }
    print(json.dumps(res, indent=1))
    if args.out:
        write_json(args.out, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
