"""Training engine: an ``accelerate`` loop with exact resume, for Hugging Face causal LMs.

Run it in-process for one CPU/GPU process (``train(cfg)``), or as a process
on any number of devices through accelerate's own launcher (DDP, FSDP2 or
DeepSpeed come from the accelerate config, never from here)::

    python -m warmstart.train --config run.yaml [--resume]
    accelerate launch --multi_gpu --num_processes 2 -m warmstart.train --config run.yaml
        # (on a machine without CUDA this is DDP over gloo on CPU: accelerate 1.x's
        #  --cpu flag starts one process only, its multi-CPU mode needs MPI)
    python -m warmstart.train --export data/runs/x/checkpoints/step0000500 --out data/models/x

What one optimizer step is (step numbers are 1-based: step ``k`` is the
``k``-th update, as logged and as checkpoint ``stepK`` names it):

1. Every rank draws the same *global* batch (``micro_batch x world x accum``
   rows) from the packed stream (``warmstart.data.packing``) and keeps its
   own micro-batches, so the data, its position and the result do not depend
   on the number of processes. ``accum`` is ``grad_accum``, or follows the
   Megatron/Lucie batch ramp-up (:func:`ramp_batch_rows`).
2. Optional hybrid masked-causal objective (NorMistral): each row is a
   masked-next-token row with probability ``masked_share`` (seeded by
   ``(seed, step)``, so it is exact on resume and independent of the world
   size). Such rows get spans of input tokens replaced by the mask token,
   bidirectional attention inside each packed document (blocked across
   documents), and labels only at the masked positions; the loss goes
   through the same LM head with the usual next-token shift (the output at
   ``i - 1`` predicts the masked token at ``i``, as in NorMistral's card).
3. Forward/backward per micro-batch (DDP ``no_sync`` except the last; the
   loss of each micro-batch is divided by ``accum``), gradient clipping
   (``accelerator.clip_grad_norm_``; the norm is logged even without
   clipping), then the optimizer step, unless the loss or the gradient norm
   is not finite: then the step is skipped (gradients dropped, data and LR
   schedule move on) and logged, and after ``max_bad_steps`` in a row the
   model and optimizer are rolled back to the last checkpoint while the data
   stream keeps going (PaLM-style: the offending batches are skipped).

Checkpoints (``<out_dir>/checkpoints/step0000500/``) are built in a temp dir
``.tmp-step0000500`` and renamed into place, so a crash never leaves a broken
checkpoint; ``latest`` is the highest-numbered complete dir. Each holds a
Hugging Face model (``config.json``, ``model.safetensors``, tokenizer),
``optimizer.pt``, ``scheduler.pt``, ``rng_state_<rank>.pt`` (python, numpy,
torch, cuda) and ``trainer_state.json`` (step, samples, tokens, bytes, data
stream position), written last. Everything is loaded back with
``weights_only=True``. A CPU run resumed after SIGKILL ends bit-identical to
an uninterrupted one (tests/test_train.py checks it).

Logs: ``<out_dir>/log.jsonl`` (one JSON object per logged step, see
:data:`LOG_FIELDS`), TensorBoard scalars in ``<out_dir>/tb``, a tqdm bar.
On resume, log records past the checkpoint are dropped and TensorBoard purges
them, so the logs of a resumed run read like those of an uninterrupted one.

Tested here on CPU: one process and DDP (gloo). FSDP2/DeepSpeed go through
``accelerator.get_state_dict``/``save_state`` in checkpoints; untested here.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import json
import math
import os
import random
import re
import resource
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from warmstart.data.packing import CorpusStream, PackedBatch, PackedStream
from warmstart.flops import device_peak, flops_per_token, mfu
from warmstart.kernels.attention import attention_inputs
from warmstart.io import atomic_dir
from warmstart.model import ModelSpec, load_model

# Step log record (log.jsonl, one per logged step, every skipped step, and "rollback_to" when one happened):
# step (1-based update index), samples/tokens/bytes (cumulative, global; bytes = UTF-8 bytes of the text
# consumed, for curves against bytes), loss (global mean of this step; null if not finite), lr (used by this
# update), grad_norm (before clipping), update_cos (cosine between this and the previous update; null when
# the previous one was not captured), tokens_per_s (global, since the last log, checkpoint time excluded),
# mfu (flops.py formula over the per-device peak x processes), peak_mem_bytes (CUDA max allocated or CPU
# peak RSS), data_state (stream position, as checkpointed), skipped, corpus (hot-swap corpus or "mix"),
# batch_rows (global rows of this step, ramp-aware), masked_rows (hybrid objective), elapsed_s.
# With spike_mitigation, a step where the online detector fired and the run rolled back is always logged and
# also has spike_start (first step of the spike), rollback_to (checkpoint name, null if none was old enough)
# and skipped_batches (batches discarded after it).
KERNEL_ATTENTION = ("auto", "sdpa", "eager", "flash_attention_2", "warmstart_flex")  # through warmstart.kernels
CKPT_RE = re.compile(r"^step(\d+)$")
TRAINER_FILES = ("optimizer.pt", "scheduler.pt", "trainer_state.json")
LOG_FIELDS = (
    "step", "samples", "tokens", "bytes", "loss", "lr", "grad_norm", "update_cos", "tokens_per_s", "mfu",
    "peak_mem_bytes", "data_state", "skipped", "corpus", "batch_rows", "masked_rows", "elapsed_s",
)  # fmt: skip


# ---------------------------------------------------------------- config


class BatchRamp(BaseModel):
    """Megatron ``--rampup-batch-size start increment samples`` (Lucie: 256, 64, 10M samples).

    Rows per optimizer step start at ``start`` and grow by ``increment`` in
    equal steps until ``samples`` rows have been consumed, ending at the full
    global batch ``micro_batch x world x grad_accum``.
    """

    model_config = ConfigDict(extra="forbid")
    start: int = Field(ge=1)
    increment: int = Field(ge=1)
    samples: int = Field(ge=1)


class TrainConfig(BaseModel):
    """One training run. Unknown keys are errors; every bound names itself."""

    model_config = ConfigDict(extra="forbid")

    # model and tokenizer
    model_path: str | None = None  # HF model dir or id to start from (safetensors only) ...
    model: ModelSpec | None = None  # ... or a fresh tiny model (vocab_size defaults to len(tokenizer))
    trust_remote_code: bool = False
    tokenizer_path: str | None = None  # defaults to model_path
    attn_implementation: str | None = None  # "sdpa" (default), "eager", "flash_attention_2", "warmstart_flex", "auto"
    fused_kernels: bool = False  # Liger RMSNorm/SwiGLU/RoPE + fused linear-CE where the device allows (warmstart.kernels)
    # data: corpus name -> jsonl files (or globs) with a text field
    train_files: dict[str, list[str]] = Field(min_length=1)
    text_field: str = "text"
    corpus_schedule: list[tuple[int, str]] = []  # hot-swap: [(step, corpus)], first at step 0
    mix: dict[str, float] | None = None  # or: fixed mixing weights over the corpora
    add_bos: bool = False  # prepend BOS to every document (EOS is always appended)
    shuffle: bool = True  # fresh seeded document order every epoch
    doc_mask: bool = False  # attention (and positions) restricted to each packed document
    seq_len: int = Field(ge=2)
    # batch
    micro_batch: int = Field(ge=1)
    grad_accum: int = Field(default=1, ge=1)
    batch_ramp: BatchRamp | None = None
    steps: int = Field(ge=1)
    # optimisation
    optimizer: Literal["adamw", "lion"] = "adamw"
    lr: float = Field(default=3e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(default=1e-8, gt=0)
    weight_decay: float = Field(default=0.1, ge=0)
    no_decay: list[str] = [r"norm", r"\.bias$", r"embed_tokens"]  # regexes on parameter names
    lr_schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup_steps: int = Field(default=0, ge=0)
    decay_steps: int = Field(default=0, ge=0)  # wsd: length of the final decay
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)  # floor of cosine/wsd (CSMPT alpha 0.1)
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    freeze: list[str] = []  # regexes: matching parameters are frozen
    train_only: list[str] = []  # regexes: if set, everything else is frozen
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast on cuda, fp32 on cpu
    compile: bool = False
    # hybrid masked-causal objective (NorMistral)
    masked_share: float = Field(default=0.0, ge=0, le=1)
    mask_prob: float = Field(default=0.15, gt=0, le=1)  # share of tokens masked in a masked row
    mask_span: int = Field(default=3, ge=1)
    mask_token_id: int | None = None  # default: tokenizer.mask_token_id
    # checkpoints and logs
    out_dir: str
    checkpoint_every: int = Field(default=0, ge=0)  # 0: only the final checkpoint
    keep_last: int = Field(default=2, ge=1)
    tag_every: int | None = Field(default=None, ge=1)  # tagged checkpoints are never pruned
    tag_steps: list[int] = []
    export_final: bool = True  # also write <out_dir>/final as a HF model dir
    log_every: int = Field(default=10, ge=1)
    tensorboard: bool = True
    progress: bool = True
    update_cos: bool = True
    peak_flops: float | None = Field(default=None, gt=0)  # per device; default: table or measured
    # robustness
    max_bad_steps: int = Field(default=3, ge=1)
    inject_nan_steps: list[int] = []  # test hook: these steps get a NaN loss
    # loss-spike mitigation (PaLM), off by default: when the online detector fires, roll back to the
    # latest checkpoint before the spike's first record and discard the next spike_skip_batches batches
    spike_mitigation: bool = False
    spike_skip_batches: int = Field(default=0, ge=0)
    spike_detector: dict[str, Any] = {}  # warmstart.spikes.OnlineDetector kwargs (method, warmup, robust params)
    spike_max_rollbacks: int = Field(default=5, ge=1)  # then the run goes on without mitigation
    inject_bad_batches: list[int] = []  # test hook: these batches (1-based draws from the stream) are random tokens
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if (self.model_path is None) == (self.model is None):
            raise ValueError("give exactly one of model_path (a HF model) and model (a tiny model spec)")
        if self.tokenizer_path is None and self.model_path is None:
            raise ValueError("tokenizer_path is required when the model is built from a spec")
        names = {c for _, c in self.corpus_schedule} | set(self.mix or {})
        if names - set(self.train_files):
            raise ValueError(f"corpus_schedule/mix name unknown corpora {sorted(names - set(self.train_files))}")
        if self.corpus_schedule and self.mix:
            raise ValueError("give corpus_schedule (hot-swap) or mix (weights), not both")
        if len(self.train_files) > 1 and not (self.corpus_schedule or self.mix):
            raise ValueError("several train_files corpora need corpus_schedule or mix")
        if self.corpus_schedule and min(s for s, _ in self.corpus_schedule) != 0:
            raise ValueError("corpus_schedule must have an entry at step 0")
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be <= steps ({self.steps})")
        if self.lr_schedule == "wsd" and not 0 < self.decay_steps <= self.steps - self.warmup_steps:
            raise ValueError(f"wsd needs 0 < decay_steps <= steps - warmup_steps, got {self.decay_steps}")
        if self.spike_mitigation:
            if not self.checkpoint_every:
                raise ValueError("spike_mitigation needs checkpoint_every > 0 (a checkpoint before the spike to roll back to)")
            try:
                self.make_spike_detector()
            except (TypeError, ValueError) as e:
                raise ValueError(f"spike_detector: {e}") from None
        return self

    def make_spike_detector(self):
        """The online detector of the mitigation (warm-up defaults to the lr warm-up)."""
        from warmstart.spikes import OnlineDetector

        kw = dict(self.spike_detector)
        method = kw.pop("method", "robust")
        warmup = kw.pop("warmup", self.warmup_steps)
        return OnlineDetector(method, warmup=warmup, **kw)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "TrainConfig":
        return cls.model_validate(yaml.safe_load(Path(path).read_text()))


# ---------------------------------------------------------------- schedules


def lr_multiplier(
    step: int, steps: int, schedule: str = "cosine", warmup_steps: int = 0, decay_steps: int = 0, min_lr_ratio: float = 0.1
) -> float:
    """LR factor for the 1-based update ``step`` of ``steps``.

    Warmup: ``step / warmup_steps`` (peak reached at the last warmup step).
    ``constant``: 1 after warmup. ``cosine``: from 1 down to ``min_lr_ratio``
    with ``progress = (step - warmup) / (steps - warmup)``, so the last step
    runs exactly at the floor (CSMPT alpha). ``wsd``: 1 until the last
    ``decay_steps`` steps, then linear to ``min_lr_ratio`` at the last step.
    """
    if step <= warmup_steps:
        return step / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "wsd":
        start = steps - decay_steps
        if step <= start:
            return 1.0
        return min_lr_ratio + (1.0 - min_lr_ratio) * (1.0 - min(1.0, (step - start) / decay_steps))
    raise ValueError(f"unknown lr_schedule {schedule!r}")


def ramp_batch_rows(consumed_samples: int, start: int, increment: int, ramp_samples: int, final: int) -> int:
    """Rows in the next global batch under a Megatron-style ramp-up (integer-exact).

    ``(final - start) / increment`` increments are spread evenly over
    ``ramp_samples``: ``start + floor(consumed * n_incr / ramp_samples) * increment``, capped at ``final``.
    """
    if start >= final:
        return final
    n_incr = (final - start) // increment
    return min(final, start + consumed_samples * n_incr // ramp_samples * increment)


# ---------------------------------------------------------------- objective


def hybrid_batch(
    input_ids: torch.Tensor,
    doc_ids: torch.Tensor,
    step: int,
    seed: int,
    share: float,
    mask_prob: float,
    span: int,
    mask_id: int | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs, labels and the per-row masked flag for one global batch.

    Causal rows: inputs unchanged, labels = inputs (transformers shifts).
    Masked rows: span starts drawn with probability ``mask_prob / span``,
    spans of ``span`` tokens that stay inside their document; the first
    token of each document piece is never masked (it has no earlier position
    in its document to be predicted from); at least one token per masked row
    is masked; labels are -100 except at masked positions.
    """
    n, T = input_ids.shape
    if share <= 0:
        return input_ids, input_ids, torch.zeros(n, dtype=torch.bool)
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    masked_rows = torch.rand(n, generator=g) < share
    if not masked_rows.any():
        return input_ids, input_ids, masked_rows
    if mask_id is None:
        raise ValueError("masked_share > 0 needs mask_token_id (or a tokenizer with a mask token)")
    starts = torch.rand(n, T, generator=g) < mask_prob / span
    first = torch.ones(n, T, dtype=torch.bool)
    first[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    m = starts.clone()
    for k in range(1, span):
        m[:, k:] |= starts[:, :-k] & (doc_ids[:, k:] == doc_ids[:, :-k])
    m &= ~first & masked_rows[:, None]
    score = torch.rand(n, T, generator=g).masked_fill(first, -1.0)
    need = masked_rows & ~m.any(1) & (~first).any(1)
    m[need, score[need].argmax(1)] = True
    inputs = torch.where(m, torch.full_like(input_ids, mask_id), input_ids)
    labels = torch.where(masked_rows[:, None] & ~m, torch.full_like(input_ids, -100), input_ids)
    return inputs, labels, masked_rows


# ---------------------------------------------------------------- checkpoints


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Complete checkpoint dirs under ``root``, oldest first (temp dirs are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if CKPT_RE.match(p.name) and (p / "trainer_state.json").is_file()]
    return sorted(found, key=lambda p: int(CKPT_RE.match(p.name).group(1)))


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    ckpts = list_checkpoints(root)
    return ckpts[-1] if ckpts else None


def export_checkpoint(ckpt_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Copy the Hugging Face part of a checkpoint (config, weights, tokenizer) to ``out_dir``, atomically."""
    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / "config.json").is_file():
        raise FileNotFoundError(f"{ckpt_dir} is not a checkpoint (no config.json)")
    with atomic_dir(out_dir) as tmp:
        for f in ckpt_dir.iterdir():
            if f.is_file() and f.name not in TRAINER_FILES and not f.name.startswith("rng_state_"):
                shutil.copy2(f, tmp / f.name)
    return Path(out_dir)


def _rng_state() -> dict:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _test_sleep(var: str) -> None:
    """Test-only hooks (crash-safety tests): sleep ``$var`` seconds if set."""
    if os.environ.get(var):
        time.sleep(float(os.environ[var]))


def _load_weights(model: torch.nn.Module, ckpt: Path) -> None:
    from safetensors.torch import load_file

    index = ckpt / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(ckpt / f))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or {}) if model.config.tie_word_embeddings else set()
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"checkpoint {ckpt} does not match the model: missing {missing}, unexpected {unexpected}")


# ---------------------------------------------------------------- data


def read_documents(files: list[str], text_field: str = "text") -> list[str]:
    """Texts of jsonl files (globs allowed), in file then line order; empty texts dropped."""
    texts = []
    for pattern in files:
        paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not paths:
            raise FileNotFoundError(f"no file matches {pattern!r}")
        for path in paths:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        text = json.loads(line)[text_field]
                        if text:
                            texts.append(text)
    return texts


def build_stream(cfg: TrainConfig, tokenizer: Any) -> CorpusStream:
    """Tokenize every corpus and wrap it in a packed, resumable stream."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token; packing needs one")
    streams = {}
    for i, (name, files) in enumerate(cfg.train_files.items()):
        texts = read_documents(files, cfg.text_field)
        if not texts:
            raise ValueError(f"train_files[{name!r}] holds no documents")
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        if cfg.add_bos:
            ids = [[tokenizer.bos_token_id, *x] for x in ids]
        nbytes = [len(t.encode("utf-8")) for t in texts]
        streams[name] = PackedStream(ids, cfg.seq_len, tokenizer.eos_token_id, cfg.seed + i, cfg.shuffle, nbytes)
    return CorpusStream(streams, cfg.corpus_schedule or None, cfg.mix)


# ---------------------------------------------------------------- trainer


@dataclass
class TrainResult:
    out_dir: Path
    step: int
    last_checkpoint: Path | None
    export_dir: Path | None
    log_path: Path
    last_loss: float | None
    skipped_steps: list[int]
    rollbacks: int
    spike_rollbacks: int = 0
    skipped_batches: int = 0


class Trainer:
    """Holds the model, optimizer, data stream and counters of one run; :meth:`fit` runs it."""

    def __init__(self, cfg: TrainConfig):
        from accelerate import Accelerator
        from accelerate.utils import set_seed
        from transformers import AutoTokenizer

        self.cfg = cfg
        cuda = torch.cuda.is_available()
        bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and cuda)
        self.acc = Accelerator(cpu=not cuda, mixed_precision="bf16" if bf16 else "no")
        set_seed(cfg.seed)
        self.out_dir = Path(cfg.out_dir)
        self.ckpt_root = self.out_dir / "checkpoints"
        self.log_path = self.out_dir / "log.jsonl"

        self.tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer_path or cfg.model_path)
        if cfg.model is not None:
            spec = cfg.model if cfg.model.vocab_size else cfg.model.model_copy(update={"vocab_size": len(self.tokenizer)})
            t = self.tokenizer
            model = spec.build(bos_token_id=t.bos_token_id, eos_token_id=t.eos_token_id, pad_token_id=t.pad_token_id)
        else:
            model = load_model(cfg.model_path, trust_remote_code=cfg.trust_remote_code)
        self.kernels: dict[str, str] = {}
        if cfg.fused_kernels or cfg.attn_implementation in KERNEL_ATTENTION:
            from warmstart.kernels import KernelOptions, mask_kind
            from warmstart.kernels import apply as apply_kernels

            opts = KernelOptions(
                attention=cfg.attn_implementation, mask=mask_kind(cfg.doc_mask, cfg.masked_share),
                rms_norm=cfg.fused_kernels, swiglu=cfg.fused_kernels, rope=cfg.fused_kernels,
                fused_linear_cross_entropy=cfg.fused_kernels,
            )  # fmt: skip
            self.kernels = apply_kernels(model, opts, device=self.acc.device, dtype=torch.bfloat16 if bf16 else torch.float32)
        elif cfg.attn_implementation:
            model.set_attn_implementation(cfg.attn_implementation)
        if len(self.tokenizer) > model.config.vocab_size:
            raise ValueError(f"tokenizer has {len(self.tokenizer)} tokens, model vocab_size is {model.config.vocab_size}")
        self.mask_id = cfg.mask_token_id if cfg.mask_token_id is not None else self.tokenizer.mask_token_id
        if cfg.masked_share > 0 and self.mask_id is None:
            raise ValueError("masked_share > 0 needs mask_token_id or a tokenizer with a mask token")

        named = self._apply_freeze(model)
        self.params = [p for _, p in named]
        decay = [p for n, p in named if not any(re.search(r, n) for r in cfg.no_decay)]
        no_decay = [p for n, p in named if any(re.search(r, n) for r in cfg.no_decay)]
        groups = [g for g in ({"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
        optimizer = self._make_optimizer(groups)
        # LambdaLR's epoch counts completed updates, so update k (1-based) runs at lr * lr_multiplier(k).
        self._lr_lambda = lambda e: lr_multiplier(  # a plain function: LambdaLR saves no state for it
            e + 1, cfg.steps, cfg.lr_schedule, cfg.warmup_steps, cfg.decay_steps, cfg.min_lr_ratio
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_lambda)
        self.model, self.optimizer = self.acc.prepare(model, optimizer)
        self.unwrapped = self.acc.unwrap_model(self.model)  # the HF model: save/load go through it
        if cfg.compile:
            self.model = torch.compile(self.model)
        self.data = build_stream(cfg, self.tokenizer)
        self.flops_per_token = flops_per_token(self.unwrapped.config, cfg.seq_len)
        self.peak = cfg.peak_flops or (device_peak(self.acc.device) if self.acc.is_main_process else 1.0)
        self.step = self.samples = self.tokens = self.bytes = self.bad_streak = self.rollbacks = 0
        self.skipped: list[int] = []
        self.detector = cfg.make_spike_detector() if cfg.spike_mitigation else None
        self.spike_rollbacks = self.skipped_batches = 0  # skipped_batches: discarded draws from the stream
        self.prev_update: list[torch.Tensor] | None = None

    # -- setup helpers ----------------------------------------------------
    def _apply_freeze(self, model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
        cfg = self.cfg
        for name, p in model.named_parameters():
            frozen = any(re.search(r, name) for r in cfg.freeze) or (
                bool(cfg.train_only) and not any(re.search(r, name) for r in cfg.train_only)
            )
            p.requires_grad_(not frozen)
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("freeze/train_only leave no trainable parameter")
        return named

    def _make_optimizer(self, groups: list[dict]) -> torch.optim.Optimizer:
        cfg = self.cfg
        if cfg.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
        try:
            from lion_pytorch import Lion
        except ImportError as e:  # pragma: no cover
            raise ImportError("optimizer: lion needs the lion-pytorch package (pip install lion-pytorch)") from e
        return Lion(groups, lr=cfg.lr, betas=cfg.betas)  # LionW: decoupled decay p *= 1 - lr * wd

    def batch_rows(self) -> int:
        """Global rows of the next step (ramp-up aware); a multiple of micro_batch x world."""
        c, unit = self.cfg, self.cfg.micro_batch * self.acc.num_processes
        final = unit * c.grad_accum
        if c.batch_ramp is None:
            return final
        r = c.batch_ramp
        rows = ramp_batch_rows(self.samples, r.start, r.increment, r.samples, final)
        if r.start % unit or r.increment % unit:
            raise ValueError(f"batch_ramp start/increment must be multiples of micro_batch x processes = {unit}")
        return rows

    def _is_tagged(self, step: int) -> bool:
        return step in self.cfg.tag_steps or bool(self.cfg.tag_every and step % self.cfg.tag_every == 0)

    def _is_log(self, step: int) -> bool:
        return step % self.cfg.log_every == 0 or step == self.cfg.steps

    # -- checkpoints -------------------------------------------------------
    def save_checkpoint(self) -> Path:
        name = f"step{self.step:07d}"
        final, tmp = self.ckpt_root / name, self.ckpt_root / f".tmp-{name}"
        acc = self.acc
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        torch.save(_rng_state(), tmp / f"rng_state_{acc.process_index}.pt")
        sharded = acc.distributed_type.value in ("FSDP", "DEEPSPEED")
        state_dict = acc.get_state_dict(self.model) if sharded else None  # collective when sharded
        if sharded:  # sharded optimizer states: accelerate's own format (untested here: no multi-GPU)
            acc.save_state(str(tmp / "accelerate"))
        if acc.is_main_process:
            from transformers.utils import logging as hf_logging

            bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()  # no "Writing model shards" bar at every checkpoint
            try:
                self.unwrapped.save_pretrained(tmp, state_dict=state_dict)
            finally:
                if bars:
                    hf_logging.enable_progress_bar()
            self.tokenizer.save_pretrained(tmp)
            _test_sleep("WARMSTART_TEST_SLEEP_IN_CHECKPOINT")
            if not sharded:
                torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            _test_sleep("WARMSTART_TEST_SLEEP_IN_CHECKPOINT")
            torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
            state = {
                "step": self.step, "samples": self.samples, "tokens": self.tokens, "bytes": self.bytes,
                "bad_streak": self.bad_streak, "skipped": self.skipped, "rollbacks": self.rollbacks,
                "data_state": self.data.state_dict(), "tagged": self._is_tagged(self.step),
                "world_size": acc.num_processes, "spike_rollbacks": self.spike_rollbacks,
                "skipped_batches": self.skipped_batches,
                "detector": self.detector.state_dict() if self.detector is not None else None,
            }  # fmt: skip
            (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))  # written last
            old = final.with_name(f".old-{name}")
            if final.exists():  # the same step saved again: move the old copy aside, never delete it first
                os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
            self._prune()
        acc.wait_for_everyone()
        return final

    def _prune(self) -> None:
        plain = [p for p in list_checkpoints(self.ckpt_root) if not json.loads((p / "trainer_state.json").read_text())["tagged"]]
        for p in plain[: -self.cfg.keep_last]:
            shutil.rmtree(p, ignore_errors=True)

    def load_checkpoint(self, ckpt: Path, progress: bool = True) -> None:
        """Restore weights, optimizer and scheduler; with ``progress`` also counters, data position and RNG."""
        if (ckpt / "accelerate").is_dir():
            self.acc.load_state(str(ckpt / "accelerate"))
        else:
            _load_weights(self.unwrapped, ckpt)
            self.optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
        self.scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))
        if not progress:
            return
        state = json.loads((ckpt / "trainer_state.json").read_text())
        self.step, self.samples, self.tokens, self.bytes = state["step"], state["samples"], state["tokens"], state["bytes"]
        self.bad_streak, self.skipped, self.rollbacks = state["bad_streak"], state["skipped"], state["rollbacks"]
        self.spike_rollbacks, self.skipped_batches = state.get("spike_rollbacks", 0), state.get("skipped_batches", 0)
        if self.detector is not None and state.get("detector") is not None:
            self.detector.load_state_dict(state["detector"])
        self.data.load_state_dict(state["data_state"])
        rng = ckpt / f"rng_state_{self.acc.process_index}.pt"
        if rng.exists():
            _set_rng_state(torch.load(rng, weights_only=True))

    def _rollback(self, ckpt: Path | None = None) -> Path:
        ckpt = ckpt or latest_checkpoint(self.ckpt_root)
        if ckpt is None:
            raise RuntimeError(f"{self.bad_streak} non-finite steps in a row and no checkpoint to roll back to")
        self.load_checkpoint(ckpt, progress=False)
        self.scheduler.last_epoch = self.step  # the LR schedule keeps following the step count
        for g, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            g["lr"] = base * self._lr_lambda(self.step)
        self.bad_streak, self.prev_update = 0, None
        self.rollbacks += 1
        return ckpt

    def _spike_rollback(self, start: int) -> Path | None:
        """PaLM's mitigation: back to the latest checkpoint before step ``start``, then discard batches.

        The data stream keeps going (the batches since the checkpoint are not replayed), the step
        count and LR schedule go on, and ``spike_skip_batches`` more batches are drawn and discarded.
        The detector goes back to its state at that checkpoint (it matches the restored weights).
        Without a checkpoint old enough only the batches are skipped.
        """
        ckpts = [p for p in list_checkpoints(self.ckpt_root) if int(CKPT_RE.match(p.name).group(1)) < start]
        ckpt = ckpts[-1] if ckpts else None
        if ckpt is not None:
            self._rollback(ckpt)
            det = json.loads((ckpt / "trainer_state.json").read_text()).get("detector")
            if det is not None:
                self.detector.load_state_dict(det)
        for _ in range(self.cfg.spike_skip_batches):
            self.data.next_rows(self.batch_rows(), self.step + 1)
            self.skipped_batches += 1
        self.spike_rollbacks += 1
        return ckpt

    # -- one step ----------------------------------------------------------
    def _model_inputs(self, batch: PackedBatch, labels: torch.Tensor, masked: torch.Tensor, inputs: torch.Tensor) -> dict:
        dev = self.acc.device
        # use_cache=False matters beyond memory: with a cache object transformers ignores packed position_ids.
        out = {"input_ids": inputs.to(dev), "labels": labels.to(dev), "use_cache": False}
        # packed position_ids when doc_mask; a 4D document/bidirectional mask (a BlockMask on warmstart_flex)
        out.update(attention_inputs(self.unwrapped.config._attn_implementation, batch.doc_ids, batch.position_ids,
                                    masked, self.cfg.doc_mask, dev))  # fmt: skip
        return out

    def train_step(self) -> dict:
        cfg, acc = self.cfg, self.acc
        k = self.step + 1
        rows = self.batch_rows()
        world, mb = acc.num_processes, cfg.micro_batch
        accum = rows // (mb * world)
        batch = self.data.next_rows(rows, k)
        draw = k + self.skipped_batches  # 1-based draws from the stream, discarded ones included
        if draw in cfg.inject_bad_batches:
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + draw)
            batch = dataclasses.replace(batch, input_ids=torch.randint(0, len(self.tokenizer), batch.input_ids.shape, generator=g))
        inputs, labels, masked = hybrid_batch(
            batch.input_ids, batch.doc_ids, k, cfg.seed, cfg.masked_share, cfg.mask_prob, cfg.mask_span, self.mask_id
        )
        self.model.train()
        loss_sum = torch.zeros((), device=acc.device)
        for a in range(accum):
            lo = (a * world + acc.process_index) * mb
            sl = slice(lo, lo + mb)
            kw = self._model_inputs(batch.select(sl), labels[sl], masked[sl], inputs[sl])
            ctx = acc.no_sync(self.model) if a < accum - 1 else contextlib.nullcontext()
            with ctx:
                loss = self.model(**kw).loss
                if k in cfg.inject_nan_steps and a == 0:
                    loss = loss * float("nan")
                acc.backward(loss / accum)
            loss_sum += loss.detach()
        loss_val = acc.reduce(loss_sum / accum, "mean").item()
        grad_norm = acc.clip_grad_norm_(self.params, cfg.max_grad_norm or float("inf"))
        grad_norm = float(grad_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        bad = not (math.isfinite(loss_val) and math.isfinite(grad_norm))
        cos = None
        if bad:
            self.optimizer.zero_grad(set_to_none=True)
            self.bad_streak += 1
            self.skipped.append(k)
            self.prev_update = None
        else:
            snap = cfg.update_cos and (self._is_log(k) or self._is_log(k + 1))
            before = [p.detach().clone() for p in self.params] if snap else None
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.bad_streak = 0
            if snap:
                upd = [p.detach().float() - b.float() for p, b in zip(self.params, before)]
                if self.prev_update is not None and self._is_log(k):
                    cos = _cosine(upd, self.prev_update)
                self.prev_update = upd if self._is_log(k + 1) else None
            else:
                self.prev_update = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()" after a skipped first step
            self.scheduler.step()
        self.step = k
        self.samples += rows
        self.tokens += rows * cfg.seq_len
        self.bytes += batch.bytes
        return {
            "step": k, "loss": loss_val if math.isfinite(loss_val) else None, "lr": lr,
            "grad_norm": grad_norm if math.isfinite(grad_norm) else None, "update_cos": cos, "skipped": bad,
            "corpus": self.data.corpus_at(k), "batch_rows": rows, "masked_rows": int(masked.sum()),
        }  # fmt: skip

    # -- the loop ----------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        cfg, acc = self.cfg, self.acc
        main = acc.is_main_process
        existing = latest_checkpoint(self.ckpt_root)
        if existing is not None and not resume:
            raise FileExistsError(f"{self.ckpt_root} already holds checkpoints: resume, or use a fresh out_dir")
        if existing is not None:
            self.load_checkpoint(existing)
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            for junk in [*self.ckpt_root.glob(".tmp-*"), *self.ckpt_root.glob(".old-*")]:
                shutil.rmtree(junk, ignore_errors=True)  # leftovers of a crash mid-checkpoint
            _truncate_log(self.log_path, self.step)
            (self.out_dir / "train_config.json").write_text(cfg.model_dump_json(indent=1))
            if self.kernels:
                (self.out_dir / "kernels.json").write_text(json.dumps(self.kernels, indent=1))
        acc.wait_for_everyone()
        tb = None
        if main and cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(str(self.out_dir / "tb"), purge_step=self.step + 1)
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=self.step, disable=not (main and cfg.progress), desc="train", dynamic_ncols=True)
        t0 = t_start = time.perf_counter()
        tokens0, last = self.tokens, None
        log = open(self.log_path, "a") if main else None
        try:
            while self.step < cfg.steps:
                rec = self.train_step()
                last = rec
                _test_sleep("WARMSTART_TEST_SLEEP_PER_STEP")
                k = self.step
                if self.bad_streak >= cfg.max_bad_steps:
                    ckpt = self._rollback()
                    rec["rollback_to"] = ckpt.name
                elif self.detector is not None and not rec["skipped"]:
                    fired = self.detector.update(k, rec["loss"], rec["grad_norm"], corpus=rec["corpus"])
                    if fired and self.spike_rollbacks < cfg.spike_max_rollbacks:
                        start = self.detector.active_start or k
                        ckpt = self._spike_rollback(start)
                        rec.update(spike_start=start, rollback_to=ckpt.name if ckpt else None,
                                   skipped_batches=cfg.spike_skip_batches)
                if self._is_log(k) or rec["skipped"] or "spike_start" in rec:
                    dt = time.perf_counter() - t0
                    tps = (self.tokens - tokens0) / dt if dt > 0 else None
                    rec.update(
                        samples=self.samples, tokens=self.tokens, bytes=self.bytes, elapsed_s=time.perf_counter() - t_start,
                        tokens_per_s=tps, mfu=mfu(tps, self.flops_per_token, self.peak, acc.num_processes) if tps else None,
                        peak_mem_bytes=_peak_mem(acc.device), data_state=self.data.state_dict(),
                    )  # fmt: skip
                    if main:
                        extra = {f: rec[f] for f in ("spike_start", "skipped_batches") if f in rec}
                        log.write(json.dumps({f: rec.get(f) for f in LOG_FIELDS} | {"rollback_to": rec.get("rollback_to")} | extra) + "\n")
                        log.flush()
                        if tb is not None:
                            for key in ("loss", "lr", "grad_norm", "update_cos", "tokens_per_s", "mfu"):
                                if rec.get(key) is not None:
                                    tb.add_scalar(f"train/{key}", rec[key], k)
                    if self._is_log(k):
                        t0, tokens0 = time.perf_counter(), self.tokens
                    bar.set_postfix(loss=rec["loss"], lr=f"{rec['lr']:.2e}")
                bar.update(1)
                if (cfg.checkpoint_every and k % cfg.checkpoint_every == 0) or self._is_tagged(k) or k == cfg.steps:
                    tc = time.perf_counter()
                    self.save_checkpoint()
                    t0 += time.perf_counter() - tc  # checkpoint time is not training throughput
        finally:
            bar.close()
            if log is not None:
                log.close()
            if tb is not None:
                tb.close()
        last_ckpt = latest_checkpoint(self.ckpt_root)
        export = None
        if cfg.export_final and main and last_ckpt is not None:
            export = export_checkpoint(last_ckpt, self.out_dir / "final")
        acc.wait_for_everyone()
        return TrainResult(
            self.out_dir, self.step, last_ckpt, export, self.log_path, last and last["loss"], self.skipped, self.rollbacks,
            self.spike_rollbacks, self.skipped_batches,
        )


def _cosine(a: list[torch.Tensor], b: list[torch.Tensor]) -> float | None:
    dot = sum(float((x.double() * y.double()).sum()) for x, y in zip(a, b))
    na = math.sqrt(sum(float(x.double().square().sum()) for x in a))
    nb = math.sqrt(sum(float(y.double().square().sum()) for y in b))
    return dot / (na * nb) if na > 0 and nb > 0 else None


def _peak_mem(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB -> bytes (peak RSS)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log records past ``step`` (written after the checkpoint we resume from)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)


def benchmark_overhead(cfg: TrainConfig, steps: int = 40, warmup: int = 10) -> dict:
    """Trainer tokens/s over a bare forward/backward/clip/step loop on the same batches (one process).

    Both start from the same initial weights. The trainer runs :meth:`Trainer.fit`
    with logging every ``warmup`` steps and no intermediate checkpoints; its
    rate is taken between the log records of steps ``warmup`` and ``steps``
    (so start-up and the final checkpoint are excluded). The bare loop gets
    pre-drawn batches and plain ``input_ids``/``labels`` (plus packed
    ``position_ids`` when ``doc_mask``), and is timed over the same steps.
    """
    import tempfile

    if steps <= warmup or steps % warmup:
        raise ValueError("steps must be a multiple of warmup, and larger")
    with tempfile.TemporaryDirectory() as tmp:
        over = dict(steps=steps, log_every=warmup, checkpoint_every=0, tag_every=None, tag_steps=[], export_final=False,
                    progress=False, tensorboard=False, inject_nan_steps=[], batch_ramp=None, masked_share=0.0)  # fmt: skip
        tr = Trainer(cfg.model_copy(update=over | {"out_dir": str(Path(tmp) / "trainer")}))
        tr.fit()
        log = {r["step"]: r for r in map(json.loads, tr.log_path.read_text().splitlines())}
        trainer_tps = (log[steps]["tokens"] - log[warmup]["tokens"]) / (log[steps]["elapsed_s"] - log[warmup]["elapsed_s"])
        del tr
        bare = Trainer(cfg.model_copy(update=over | {"out_dir": str(Path(tmp) / "bare")}))
        rows, mb = bare.batch_rows(), cfg.micro_batch
        batches = [bare.data.next_rows(rows, k) for k in range(1, steps + 1)]
        model, opt, dev = bare.model, bare.optimizer, bare.acc.device
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        model.train()
        for k, b in enumerate(batches, 1):
            if k == warmup + 1:
                sync()
                t0 = time.perf_counter()
            for a in range(rows // mb):
                x = b.input_ids[a * mb : (a + 1) * mb].to(dev)
                kw = {"position_ids": b.position_ids[a * mb : (a + 1) * mb].to(dev)} if cfg.doc_mask else {}
                loss = model(input_ids=x, labels=x, use_cache=False, **kw).loss
                (loss / (rows // mb)).backward()
            torch.nn.utils.clip_grad_norm_(bare.params, cfg.max_grad_norm or float("inf"))
            opt.step()
            opt.zero_grad(set_to_none=True)
        sync()
        bare_tps = (steps - warmup) * rows * cfg.seq_len / (time.perf_counter() - t0)
    return {"trainer_tokens_per_s": trainer_tps, "bare_tokens_per_s": bare_tps, "ratio": trainer_tps / bare_tps,
            "steps": steps, "warmup": warmup, "device": str(dev), "torch": torch.__version__}  # fmt: skip


def launch_command(config_path: str | os.PathLike, num_processes: int, port: int | None = None, resume: bool = False) -> list[str]:
    """``accelerate launch`` of this module on ``num_processes`` processes of one machine.

    ``--multi_gpu`` is right on CPU too: accelerate 1.x's ``--cpu`` starts a
    single process (its multi-CPU mode needs MPI), while ``--multi_gpu`` on a
    machine without CUDA goes through torchrun and accelerate selects
    MULTI_CPU with gloo. Precision and compilation come from the run config,
    not from the launcher. Other topologies (FSDP2, DeepSpeed, several
    machines): ``accelerate launch --config_file ... -m warmstart.train``.
    """
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes), "--num_machines", "1",
           "--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
    if port is not None:
        cmd += ["--main_process_port", str(port)]
    return cmd + ["-m", "warmstart.train", "--config", str(config_path)] + (["--resume"] if resume else [])


def train(cfg: TrainConfig | dict | str | os.PathLike, resume: bool = False) -> TrainResult:
    """Run (or, with ``resume``, continue from the latest checkpoint) one training run in this process."""
    if not isinstance(cfg, TrainConfig):
        cfg = TrainConfig.model_validate(cfg) if isinstance(cfg, dict) else TrainConfig.from_yaml(cfg)
    return Trainer(cfg).fit(resume=resume)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m warmstart.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", help="run config (YAML, TrainConfig fields)")
    ap.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in out_dir")
    ap.add_argument("--export", metavar="CKPT", help="export a checkpoint dir as a HF model dir (with --out)")
    ap.add_argument("--out", help="output dir of --export")
    ap.add_argument("--bench", type=int, metavar="STEPS", help="print trainer/bare-loop tokens/s for the config (JSON)")
    args = ap.parse_args(argv)
    if args.export:
        if not args.out:
            ap.error("--export needs --out")
        print(export_checkpoint(args.export, args.out))
        return 0
    if not args.config:
        ap.error("--config is required")
    if args.bench:
        warm = max(1, args.bench // 4)
        print(json.dumps(benchmark_overhead(TrainConfig.from_yaml(args.config), args.bench // warm * warm, warm), indent=1))
        return 0
    result = train(args.config, resume=args.resume)
    if result.export_dir:
        print(f"final model: {result.export_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
