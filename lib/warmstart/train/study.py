"""One study run trained: ``scratch``, ``original``, a swap method or an arm, its phases, log and ``run.json``.

The pretrain stages (:mod:`warmstart.stages.pretrain`) train the DVC study's runs with ``shared.seed``; the
run-to-run spread (:mod:`warmstart.evaluate.seed_spread`) trains the same runs with other seeds, into
``data/seeds/s<seed>`` (:meth:`warmstart.runs.Run.at_seed`).

Every study run trains through the phases of ``pretrain.phases`` (an arm may change any phase field or append a
phase: :meth:`warmstart.config.sections.Pretrain.with_overrides`). The default has NorMistral's two (stage 2.2
then 2.3): ``phase1`` trains only the embeddings and LM head with the body frozen, ``phase2`` trains everything
from phase 1's result. Each phase starts from the previous phase's final model with a fresh optimiser and a
fresh data stream over its ``mix`` (row weights over named corpora: ``target``, ``source``, an extra language;
each read from the tokenize stage's shards for the run's tokenizer). The ``scratch`` run has nothing to
realign, so it trains every parameter in every phase, on the same schedule. ``original`` spends more tokens
on the same text (its tokenizer was not made for it), so its step counts are scaled by the measured ratio of
bytes per token (target tokenizer over the base tokenizer, on target training text): every run sees the same
target *bytes*, and curves are drawn against bytes.

Per run: ``data/runs/<name>/{init,<phase>...}`` (trainer out dirs) and
``data/logs/<name>/``: ``log.jsonl`` (every phase's step log with global
``step``, cumulative ``tokens``/``bytes`` and a ``phase`` field) and ``run.json``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from warmstart.bpb import first_bytes
from warmstart.data.corpus import iter_split_texts
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
    pt = params.pretrain
    if pt.scratch_init_range is not None:
        config.initializer_range = pt.scratch_init_range
    if pt.scratch_rope_theta is not None:
        set_rope_theta(config, pt.scratch_rope_theta)
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
    sample = first_bytes(iter_split_texts(params, params.shared.target_lang, "train"), 200_000)
    new_tok = AutoTokenizer.from_pretrained(params.path("tokenizer", "target"))
    return fertility(new_tok, sample)["bytes_per_token"] / fertility(tok, sample)["bytes_per_token"]


def set_rope_theta(config: Any, theta: float) -> None:
    """RoPE's base on a transformers config (``rope_parameters`` in transformers 5, ``rope_theta`` before)."""
    rp = getattr(config, "rope_parameters", None)
    if isinstance(rp, dict):
        config.rope_parameters = {**rp, "rope_theta": float(theta)}
    else:
        config.rope_theta = float(theta)


def run_phases(params: Any, name: str) -> list[dict[str, Any]]:
    """The phases run ``name`` trains, resolved: ``pretrain.phases`` with its arm's overrides, the parameters
    each trains (every one for scratch) and each mix's corpora mapped to their languages; no paths, so it is
    also what decides the run's results (:func:`warmstart.evaluate.seed_spread.run_fingerprint`)."""
    r = get_run(params, name)
    pt = params.pretrain_for(name if r.kind == "arm" else None)
    out = []
    for ph in pt.phases:
        d = ph.model_dump(mode="json")
        d["train"] = [] if r.kind == "scratch" else list(ph.train)
        d["mix"] = {c: ph.mix[c] for c in ph.corpora}
        d["masked_share"] = pt.masked_share if ph.masked_share is None else ph.masked_share
        out.append(d)
    return out


def _check_trainable(init: Path, phases: list[dict[str, Any]], name: str, trust_remote_code: bool) -> None:
    """Every phase trains at least one parameter of the run's model (checked on the meta device, no weights)."""
    import re

    from transformers import AutoConfig, AutoModelForCausalLM

    if not (init / "config.json").is_file():
        raise FileNotFoundError(f"run {name!r} starts from {init}, which is not a model dir (run its stage first)")
    config = AutoConfig.from_pretrained(init, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    names = [n for n, _ in model.named_parameters()]
    for ph in phases:
        if ph["train"] and not any(re.search(rx, n) for rx in ph["train"] for n in names):
            raise ValueError(
                f"run {name}: pretrain.phases[{ph['name']}].train {ph['train']} matches no parameter of "
                f"{init} (its parameters are named like {names[:3]})"
            )


def _phase_done(out: Path, cfg: TrainConfig) -> bool:
    """The phase's trainer finished with exactly this config (its final model and ``train_config.json``)."""
    done = out / "final" / "config.json"
    recorded = out / "train_config.json"
    return done.is_file() and recorded.is_file() and recorded.read_text() == cfg.to_json()


def train_run(params: Any, name: str, seed: int | None = None, resume: bool = False) -> TrainedRun:
    """One study run: its phases, the merged log and ``run.json``. With ``seed``: the run trained with that seed
    in its own directories (``data/seeds/s<seed>``); else the DVC study's run with ``shared.seed``.

    ``resume``: continue an interrupted run instead of starting afresh: a phase whose final model was written
    by the same config is kept, the phase that was running resumes from its latest checkpoint (bit-identical
    to an uninterrupted run: the trainer's exact resume), the later ones run."""
    from transformers import AutoTokenizer

    from warmstart.train.config import BatchRamp

    t0 = time.perf_counter()
    r = get_run(params, name)
    if seed is not None:
        r = r.at_seed(seed)
    p = params.pretrain_for(name if r.kind == "arm" else None)
    plan = run_phases(params, name)
    seed = params.shared.seed if seed is None else seed
    tokenizer = "base" if r.kind == "original" else "target"
    shards = {}
    for ph in plan:
        for corpus in ph["mix"]:
            d = token_dir(params, tokenizer, params.mix_language(corpus))
            if not (d / "manifest.json").is_file():
                raise FileNotFoundError(
                    f"run {name}: pretrain.phases[{ph['name']}].mix.{corpus} reads {d}, which the tokenize stage has "
                    f"not written: add {corpus} to tokenize.corpora.{tokenizer} and run the tokenize stage"
                )
            shards[corpus] = str(d)
    if r.kind != "scratch":  # before anything is written (scratch trains every parameter)
        _check_trainable(Path(r.init_dir(params)), plan, name, params.base.trust_remote_code)
    out = r.dir(params)
    if not (resume and out.is_dir()):
        fresh_dir(out)
    if r.kind == "scratch":
        scratch = out / "init"
        init = scratch if resume and (scratch / "config.json").is_file() else build_scratch(params, scratch, seed)
    else:
        init = r.init_dir(params)
    if not (Path(init) / "config.json").is_file():
        raise FileNotFoundError(f"run {name!r} starts from {init}, which is not a model dir (run its stage first)")
    tok = AutoTokenizer.from_pretrained(init)
    scale = step_scale(params, r.kind, tok)
    common = dict(
        tokenizer_path=str(init),
        seq_len=p.seq_len,
        micro_batch=p.micro_batch,
        grad_accum=p.grad_accum,
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
    for ph, spec in zip(plan, p.phases, strict=True):
        tag = max(1, round(p.tag_every * scale)) if p.tag_every else None
        mix = ph["mix"]
        cfg = TrainConfig(
            model_path=str(start),
            out_dir=str(out / ph["name"]),
            train_only=ph["train"],
            tag_every=tag,
            # one corpus: a plain stream (the log's corpus field names it); several: mixed row by row
            train_files={c: [shards[c]] for c in mix},
            mix=dict(mix) if len(mix) > 1 else None,
            masked_share=ph["masked_share"],
            batch_ramp=BatchRamp(**spec.batch_ramp.model_dump()) if spec.batch_ramp else None,
            **optim_fields(spec, scale),
            **common,
        )
        pdir = out / ph["name"]
        if resume and _phase_done(pdir, cfg):
            pass  # finished with this very config
        else:
            recorded = pdir / "train_config.json"
            if pdir.exists() and not (resume and recorded.is_file() and recorded.read_text() == cfg.to_json()):
                shutil.rmtree(pdir)  # another config's (or a fresh run's) leftovers: never resumed from
            resume = resume and pdir.exists()  # the later phases start from this one's new model
            launch(cfg, p.num_processes, resume=resume)
        phases.append((ph["name"], out / ph["name"]))
        start = out / ph["name"] / "final"
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
        "masked_share": max(ph["masked_share"] for ph in plan),
        "plan": plan,
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
