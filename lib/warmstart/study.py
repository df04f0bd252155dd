"""The warm-start study: base model, vocabulary swaps and the pretraining runs.

Stage functions called by the notebooks (``notebooks/03_base``, ``04_vocab_swap``,
``05_pretrain``); each turns validated :class:`~warmstart.config.Params` into
:class:`~warmstart.train.TrainConfig` runs of the project's trainer and writes
its outputs whole.

Runs (``data/runs/<name>/``):

``base``
    The source model. ``base.source: tiny`` pretrains the tiny Llama of
    ``base.model`` on the source-language corpus with the source tokenizer;
    ``base.source: hf`` loads ``base.model_id`` (safetensors only). Either way
    ``data/models/base`` is a Hugging Face model dir with its tokenizer.
``scratch``
    Same architecture as the base model, the target tokenizer, random init.
``original``
    The base model with its own tokenizer, no swap (continued pretraining).
``<method>``
    The base model after ``vocab_swap`` with ``method`` (``data/models/swap-<method>``).

Every study run has the same two phases (NorMistral's stage 2.2 then 2.3):
phase 1 trains only ``pretrain.phase1_train_only`` (embeddings and LM head)
with the body frozen, phase 2 trains everything from phase 1's result. The
``scratch`` run has nothing to realign, so its phase 1 trains the whole model
on the phase-1 schedule: the schedule is the same for every run. All runs
read the target-language training text. ``original`` spends more tokens on
the same text (its tokenizer was not made for it), so its step counts are
scaled by the measured ratio of bytes per token (target tokenizer over the
base tokenizer, on target training text): every run sees the same target
*bytes*, and curves are drawn against bytes.

Per run: ``phase1/`` and ``phase2/`` (trainer out dirs), ``log.jsonl`` (both
phases' step logs with global ``step``, cumulative ``tokens``/``bytes`` and a
``phase`` field) and ``run.json`` (see :func:`run_pretrain`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import yaml

from warmstart.bpb import bits_per_byte, first_bytes, held_out_texts
from warmstart.config import Optim, Params
from warmstart.data.corpus import load_texts
from warmstart.flops import flops_per_token
from warmstart.io import read_jsonl, write_json, write_jsonl
from warmstart.model import ModelSpec, count_params, load_model
from warmstart.tokenizer import fertility
from warmstart.train import TrainConfig, export_checkpoint, launch_command, list_checkpoints, train

SPECIAL_RUNS = ("scratch", "original")


# ---------------------------------------------------------------- paths


def run_dir(params: Params, name: str) -> Path:
    return params.path("runs", name)


def base_model_dir(params: Params) -> Path:
    return params.path("models", "base")


def swap_model_dir(params: Params, method: str) -> Path:
    return params.path("models", f"swap-{method}")


def corpus_file(params: Params, lang: str, split: str = "train") -> str:
    return str(params.path("corpus", lang, f"{split}.jsonl"))


def study_runs(params: Params) -> list[str]:
    """Every run of the study, in report order."""
    return ["scratch", "original", *params.vocab_swap.methods]


def _fresh(path: Path) -> Path:
    """An empty output dir (the stage's own output: DVC removes it too before running)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


# ---------------------------------------------------------------- launching


def launch(cfg: TrainConfig, num_processes: int = 1) -> None:
    """Train ``cfg``: in this process for one process, else through ``accelerate launch`` as a process."""
    if num_processes == 1:
        train(cfg)
        return
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "launch_config.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    cmd = launch_command(path, num_processes)
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed with exit code {proc.returncode}")


def _optim_fields(o: Optim, scale: float = 1.0) -> dict[str, Any]:
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
    }


def tiny_spec(params: Params) -> ModelSpec:
    m = params.base.model
    return ModelSpec(
        arch=m.arch, hidden=m.hidden, layers=m.layers, heads=m.heads, kv_heads=m.kv_heads,
        intermediate=m.intermediate, max_pos=m.max_pos, tie_embeddings=m.tie_embeddings, seed=params.shared.seed,
    )  # fmt: skip


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


def bpb_table(model: Any, tokenizer: Any, params: Params, seq_len: int, max_bytes: int, split: str = "test") -> dict[str, float]:
    """Bits per byte on ``split`` of the source and target language."""
    langs = [params.shared.target_lang, params.shared.source_lang]
    return {lang: bits_per_byte(model, tokenizer, held_out_texts(params, lang, split, max_bytes), seq_len)["bits_per_byte"] for lang in langs}


# ---------------------------------------------------------------- base


def base_train_config(params: Params, out_dir: str | Path) -> TrainConfig:
    """The tiny base model's pretraining run on the source-language corpus."""
    b = params.base
    return TrainConfig(
        model=tiny_spec(params), tokenizer_path=str(params.path("tokenizer", "source")),
        train_files={"source": [corpus_file(params, params.shared.source_lang)]},
        seq_len=b.seq_len, micro_batch=b.micro_batch, grad_accum=b.grad_accum, **_optim_fields(b.optim),
        out_dir=str(out_dir), checkpoint_every=b.checkpoint_every, log_every=b.log_every, seed=params.shared.seed,
        keep_last=1, export_final=False,
    )  # fmt: skip


def run_base(params: Params) -> dict[str, Any]:
    """The base stage: ``data/models/base``, ``data/runs/base`` and ``reports/metrics/base.json``."""
    from transformers import AutoTokenizer

    t0 = time.perf_counter()
    b = params.base
    out = _fresh(run_dir(params, "base"))
    model_dir = base_model_dir(params)
    if b.source == "hf":
        from warmstart.model import save_model

        model = load_model(b.model_id, trust_remote_code=b.trust_remote_code)
        tok = AutoTokenizer.from_pretrained(b.tokenizer_id or b.model_id, trust_remote_code=b.trust_remote_code)
        save_model(model, tok, model_dir)
        log: list[dict] = []
        write_json(out / "run.json", {"name": "base", "kind": "hf", "model_id": b.model_id})
    else:
        launch(base_train_config(params, out))
        export_checkpoint(list_checkpoints(out / "checkpoints")[-1], model_dir)
        log = read_jsonl(out / "log.jsonl")
        model = load_model(model_dir)
        tok = AutoTokenizer.from_pretrained(model_dir)
    seq_len = b.seq_len if b.source == "tiny" else min(1024, model.config.max_position_embeddings)
    metrics = {
        "source": b.source,
        "model": str(model_dir),
        "params": count_params(model),
        "vocab_size": len(tok),
        "flops_per_token": flops_per_token(model.config, seq_len),
        "val_bits_per_byte": bpb_table(model, tok, params, seq_len, params.vocab_swap.eval_bytes, split="val"),
        "steps": len(log) and log[-1]["step"],
        "tokens": len(log) and log[-1]["tokens"],
        **summarize_log(log),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(params.report_path("metrics", "base.json"), metrics)
    return {"metrics": metrics, "log": log, "model": model, "tokenizer": tok}


# ---------------------------------------------------------------- vocabulary swap


def probe_tokens(tokenizer: Any, texts: list[str], n: int, min_chars: int = 4) -> list[int]:
    """The ``n`` most frequent whole-word tokens of ``texts`` (alphabetic, ``min_chars`` letters or more)."""
    counts: Counter[int] = Counter()
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        counts.update(ids)
    out = []
    for i, _ in counts.most_common():
        text = tokenizer.decode([i]).strip()
        if len(text) >= min_chars and text.isalpha():
            out.append(i)
            if len(out) == n:
                break
    return out


def run_swap(params: Params, method: str) -> dict[str, Any]:
    """The vocab_swap stage for one method: ``data/models/swap-<method>`` and its metrics."""
    from transformers import AutoTokenizer

    from warmstart import vocab_swap as vs

    v = params.vocab_swap
    target, source = params.shared.target_lang, params.shared.source_lang
    report = vs.swap_model_dir(
        base_model_dir(params), params.path("tokenizer", "target"), swap_model_dir(params, method), method,
        donor_dir=read_run(params, "scratch")["final"] if method == "omp" else None,
        seed=params.shared.seed, pad_multiple=v.pad_multiple, omp_k=v.omp_k,
        texts=load_texts(params, target, "train") if method == "focus" else None,
        fasttext=vs.FastTextOptions(dim=v.fasttext_dim, epochs=v.fasttext_epochs, min_count=3),
        trust_remote_code=params.base.trust_remote_code,
    )  # fmt: skip
    model = load_model(swap_model_dir(params, method))
    tok = AutoTokenizer.from_pretrained(swap_model_dir(params, method))
    base = load_model(base_model_dir(params))
    base_tok = AutoTokenizer.from_pretrained(base_model_dir(params))
    seq_len = params.base.seq_len
    bpb = bpb_table(model, tok, params, seq_len, v.eval_bytes)
    base_bpb = bpb_table(base, base_tok, params, seq_len, v.eval_bytes)
    probes = probe_tokens(tok, held_out_texts(params, target, "test", v.eval_bytes), v.neighbours)
    nn = vs.nearest_neighbours(model, tok, base, base_tok, probes, k=3)
    r = report.to_dict()
    metrics = {
        "method": method,
        **{k: r[k] for k in ("aligned", "decomposed", "mean_init", "specials_mapped", "padded_rows", "new_vocab", "padded_vocab", "old_vocab", "tied", "seconds")},
        "random": r["fallback_random"],
        "bpb_step0": bpb,
        "bpb_base": base_bpb,
        "languages": {"target": target, "source": source},
    }
    write_json(params.report_path("metrics", "vocab_swap", f"{method}.json"), metrics)
    return {"metrics": metrics, "report": report, "neighbours": nn}


# ---------------------------------------------------------------- pretraining runs


def init_model_dir(params: Params, run: str) -> Path:
    """The step-0 model of a study run."""
    if run == "original":
        return base_model_dir(params)
    if run == "scratch":
        return run_dir(params, "scratch") / "init"
    return swap_model_dir(params, run)


def _build_scratch(params: Params, out: Path) -> Path:
    """The base architecture with the target tokenizer, randomly initialised (seeded)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from warmstart.model import save_model
    from warmstart.vocab_swap import padded_size

    tok = AutoTokenizer.from_pretrained(params.path("tokenizer", "target"))
    config = AutoConfig.from_pretrained(base_model_dir(params), trust_remote_code=params.base.trust_remote_code)
    config.vocab_size = padded_size(len(tok), params.vocab_swap.pad_multiple)
    for role in ("bos", "eos", "pad"):
        setattr(config, f"{role}_token_id", getattr(tok, f"{role}_token_id"))
    torch.manual_seed(params.shared.seed)
    model = AutoModelForCausalLM.from_config(config)
    return save_model(model, tok, out)


def _merge_logs(phases: list[tuple[str, Path]]) -> tuple[list[dict], list[dict]]:
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


def run_pretrain(params: Params, run: str) -> dict[str, Any]:
    """One study run (``scratch``, ``original`` or a swap method): both phases, log, ``run.json``, metrics."""
    from transformers import AutoTokenizer

    t0 = time.perf_counter()
    p = params.pretrain
    if run not in study_runs(params):
        raise ValueError(f"unknown run {run!r}; the study's runs are {study_runs(params)}")
    out = _fresh(run_dir(params, run))
    init = _build_scratch(params, out / "init") if run == "scratch" else init_model_dir(params, run)
    if not (Path(init) / "config.json").is_file():
        raise FileNotFoundError(f"run {run!r} starts from {init}, which is not a model dir (run its stage first)")
    tok = AutoTokenizer.from_pretrained(init)
    target = params.shared.target_lang
    scale = 1.0
    if run == "original":
        sample = first_bytes(load_texts(params, target, "train"), 200_000)
        new_tok = AutoTokenizer.from_pretrained(params.path("tokenizer", "target"))
        scale = fertility(new_tok, sample)["bytes_per_token"] / fertility(tok, sample)["bytes_per_token"]
    common = dict(
        tokenizer_path=str(init), train_files={"target": [corpus_file(params, target)]}, seq_len=p.seq_len,
        micro_batch=p.micro_batch, grad_accum=p.grad_accum, masked_share=p.masked_share, doc_mask=p.doc_mask,
        log_every=p.log_every, precision=p.precision, seed=params.shared.seed, keep_last=1,
        trust_remote_code=params.base.trust_remote_code,
    )  # fmt: skip
    phases = []
    start = Path(init)
    for name, optim in (("phase1", p.phase1), ("phase2", p.phase2)):
        fields = _optim_fields(optim, scale)
        train_only = p.phase1_train_only if (name == "phase1" and run != "scratch") else []
        tag = max(1, round(p.tag_every * scale)) if p.tag_every else None
        cfg = TrainConfig(model_path=str(start), out_dir=str(out / name), train_only=train_only, tag_every=tag, **fields, **common)
        launch(cfg, p.num_processes)
        phases.append((name, out / name))
        start = out / name / "final"
    log, table = _merge_logs(phases)
    write_jsonl(out / "log.jsonl", log)
    checkpoints = [{"step": 0, "phase": "init", "tokens": 0, "bytes": 0, "path": str(init)}]
    by_step = {(r["phase"], r["step"] - ph["start_step"] + 1): r for ph in table for r in log if r["phase"] == ph["name"]}
    for ph in table:
        for ck in list_checkpoints(out / ph["name"] / "checkpoints"):
            local = int(ck.name[4:])
            rec = by_step.get((ph["name"], local))
            state = json.loads((ck / "trainer_state.json").read_text())
            checkpoints.append({
                "step": ph["start_step"] - 1 + local, "phase": ph["name"],
                "tokens": (rec or {}).get("tokens", state.get("tokens")), "bytes": (rec or {}).get("bytes", state.get("bytes")),
                "path": str(ck),
            })  # fmt: skip
    final = load_model(start)
    info = {
        "name": run,
        "kind": run if run in SPECIAL_RUNS else "swap",
        "method": None if run in SPECIAL_RUNS else run,
        "tokenizer": str(init),
        "init": str(init),
        "checkpoints": checkpoints,
        "phases": table,
        "final": str(start),
        "log": str(out / "log.jsonl"),
        "masked_share": p.masked_share,
        "seq_len": p.seq_len,
        "step_scale": scale,
        "params_count": count_params(final),
        "flops_per_token": flops_per_token(final.config, p.seq_len),
        **summarize_log(log),
        "tokens": log[-1]["tokens"] if log else 0,
        "bytes": log[-1]["bytes"] if log else 0,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(out / "run.json", info)
    metrics = {k: info[k] for k in ("name", "kind", "step_scale", "tokens", "bytes", "final_loss", "mean_tokens_per_s", "mean_mfu", "seconds")}
    metrics["final_bits_per_byte"] = bpb_table(final, tok, params, p.seq_len, params.vocab_swap.eval_bytes)
    write_json(params.report_path("metrics", "pretrain", f"{run}.json"), metrics)
    return {"info": info, "metrics": metrics, "log": log}


def read_run(params: Params, run: str) -> dict[str, Any]:
    path = run_dir(params, run) / "run.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run the `{run}` stage first")
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> int:
    """``python -m warmstart.study bench``: trainer tokens/s over a bare loop on the default base model."""
    import argparse
    import platform

    from warmstart.config import load_params
    from warmstart.train import benchmark_overhead

    ap = argparse.ArgumentParser(prog="python -m warmstart.study", description=main.__doc__)
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
    res |= {"machine": platform.machine(), "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
            "config": {"seq_len": params.base.seq_len, "micro_batch": params.base.micro_batch, "model": params.base.model.model_dump()}}  # fmt: skip
    print(json.dumps(res, indent=1))
    if args.out:
        write_json(args.out, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
