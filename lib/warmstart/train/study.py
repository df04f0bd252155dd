"""One study run trained: ``scratch``, ``original``, a swap method or an arm, both phases, log and ``run.json``.

The pretrain stages (:mod:`warmstart.stages.pretrain`) train the DVC study's runs with ``shared.seed``; the
run-to-run spread (:mod:`warmstart.evaluate.seed_spread`) trains the same runs with other seeds, into
``data/seeds/s<seed>`` (:meth:`warmstart.runs.Run.at_seed`).

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

Per run: ``data/runs/<name>/{init,phase1,phase2}`` (trainer out dirs) and
``data/logs/<name>/``: ``log.jsonl`` (both phases' step logs with global
``step``, cumulative ``tokens``/``bytes`` and a ``phase`` field) and ``run.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from warmstart.bpb import first_bytes
from warmstart.data.corpus import load_texts
from warmstart.data.tokenize import token_dir
from warmstart.flops import flops_per_token
from warmstart.io import write_json, write_jsonl
from warmstart.model import count_params, load_model
from warmstart.runs import base_model_dir, get_run
from warmstart.tokenizer import fertility
from warmstart.train.checkpoint import list_checkpoints
from warmstart.train.config import TrainConfig
from warmstart.train.launch import fresh_dir, launch, merge_logs, optim_fields, summarize_log


@dataclass
class TrainedRun:
    """A trained study run: its ``run.json`` record, its final model and its tokenizer."""

    info: dict[str, Any]
    model: Any
    tokenizer: Any


def build_scratch(params: Any, out: Path, seed: int) -> Path:
    """The base architecture with the target tokenizer, randomly initialised with ``seed``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from warmstart.model import save_model
    from warmstart.vocab_swap import padded_size

    tok = AutoTokenizer.from_pretrained(params.path("tokenizer", "target"))
    config = AutoConfig.from_pretrained(base_model_dir(params), trust_remote_code=params.base.trust_remote_code)
    config.vocab_size = padded_size(len(tok), params.vocab_swap.pad_multiple)
    for role in ("bos", "eos", "pad"):
        setattr(config, f"{role}_token_id", getattr(tok, f"{role}_token_id"))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    return save_model(model, tok, out)


def run_checkpoints(init: Path, out: Path, log: list[dict], table: list[dict]) -> list[dict]:
    """Step 0 (the initial model) and every step-tagged checkpoint, with global step, tokens and bytes."""
    checkpoints = [{"step": 0, "phase": "init", "tokens": 0, "bytes": 0, "path": str(init)}]
    by_step = {
        (r["phase"], r["step"] - ph["start_step"] + 1): r for ph in table for r in log if r["phase"] == ph["name"]
    }
    for ph in table:
        for ck in list_checkpoints(out / ph["name"] / "checkpoints"):
            local = int(ck.name[4:])
            rec = by_step.get((ph["name"], local))
            state = json.loads((ck / "trainer_state.json").read_text())
            checkpoints.append(
                {
                    "step": ph["start_step"] - 1 + local,
                    "phase": ph["name"],
                    "tokens": (rec or {}).get("tokens", state.get("tokens")),
                    "bytes": (rec or {}).get("bytes", state.get("bytes")),
                    "path": str(ck),
                }
            )
    return checkpoints


def step_scale(params: Any, kind: str, tok: Any) -> float:
    """How many more steps than the schedule's the run takes: for ``original``, the target tokenizer's bytes per
    token over the base tokenizer's on target training text (every run sees the same target bytes); else 1."""
    from transformers import AutoTokenizer

    if kind != "original":
        return 1.0
    sample = first_bytes(load_texts(params, params.shared.target_lang, "train"), 200_000)
    new_tok = AutoTokenizer.from_pretrained(params.path("tokenizer", "target"))
    return fertility(new_tok, sample)["bytes_per_token"] / fertility(tok, sample)["bytes_per_token"]


def train_run(params: Any, name: str, seed: int | None = None) -> TrainedRun:
    """One study run: both phases, the merged log and ``run.json``. With ``seed``: the run trained with that seed
    in its own directories (``data/seeds/s<seed>``); else the DVC study's run with ``shared.seed``."""
    from transformers import AutoTokenizer

    t0 = time.perf_counter()
    r = get_run(params, name)
    if seed is not None:
        r = r.at_seed(seed)
    p = params.pretrain.model_copy(update=dict(r.overrides)) if r.overrides else params.pretrain
    seed = params.shared.seed if seed is None else seed
    out = fresh_dir(r.dir(params))
    init = build_scratch(params, out / "init", seed) if r.kind == "scratch" else r.init_dir(params)
    if not (Path(init) / "config.json").is_file():
        raise FileNotFoundError(f"run {name!r} starts from {init}, which is not a model dir (run its stage first)")
    tok = AutoTokenizer.from_pretrained(init)
    scale = step_scale(params, r.kind, tok)
    common = dict(
        tokenizer_path=str(init),
        train_files={"target": [str(token_dir(params, "base" if r.kind == "original" else "target", "target"))]},
        seq_len=p.seq_len,
        micro_batch=p.micro_batch,
        grad_accum=p.grad_accum,
        masked_share=p.masked_share,
        doc_mask=p.doc_mask,
        log_every=p.log_every,
        signals_every=p.signals_every,
        z_loss=p.z_loss,
        precision=p.precision,
        seed=seed,
        keep_last=1,
        trust_remote_code=params.base.trust_remote_code,
    )
    phases = []
    start = Path(init)
    for phase, optim in (("phase1", p.phase1), ("phase2", p.phase2)):
        train_only = list(p.phase1_train_only) if (phase == "phase1" and r.kind != "scratch") else []
        tag = max(1, round(p.tag_every * scale)) if p.tag_every else None
        cfg = TrainConfig(
            model_path=str(start),
            out_dir=str(out / phase),
            train_only=train_only,
            tag_every=tag,
            **optim_fields(optim, scale),
            **common,
        )
        launch(cfg, p.num_processes)
        phases.append((phase, out / phase))
        start = out / phase / "final"
    log, table = merge_logs(phases)
    fresh_dir(r.record_dir(params))
    write_jsonl(r.log(params), log)
    final = load_model(start)
    info = {
        "name": name,
        "kind": r.kind,
        "method": r.method,
        "tokenizer": str(init),
        "init": str(init),
        "checkpoints": run_checkpoints(Path(init), out, log, table),
        "phases": table,
        "final": str(start),
        "log": str(r.log(params)),
        "masked_share": p.masked_share,
        "seq_len": p.seq_len,
        "seed": seed,
        "overrides": dict(r.overrides),
        "step_scale": scale,
        "params_count": count_params(final),
        "vocab_size": len(tok),
        "model_config": json.loads(final.config.to_json_string()),
        "flops_per_token": flops_per_token(final.config, p.seq_len),
        **summarize_log(log),
        "tokens": log[-1]["tokens"] if log else 0,
        "bytes": log[-1]["bytes"] if log else 0,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(r.record(params), info)
    return TrainedRun(info, final, tok)
