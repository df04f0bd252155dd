"""Training engine: an ``accelerate`` loop with exact resume, for Hugging Face causal LMs.

Run it in-process for one CPU/GPU process (``train(cfg)``), or as a process
on any number of devices through accelerate's own launcher (DDP, FSDP2 or
DeepSpeed come from the accelerate config, never from here)::

    python -m warmstart.train --config run.yaml [--resume]
    accelerate launch --multi_gpu --num_processes 2 -m warmstart.train --config run.yaml
        # (on a machine without CUDA this is DDP over gloo on CPU: accelerate 1.x's
        #  --cpu flag starts one process only, its multi-CPU mode needs MPI)
    accelerate launch --config_file configs/accelerate/fsdp2_8gpu.yaml -m warmstart.train --config run.yaml [--resume]
    python -m warmstart.train --export data/runs/x/checkpoints/step0000500 --out data/models/x

What one optimizer step is (step numbers are 1-based: step ``k`` is the
``k``-th update, as logged and as checkpoint ``stepK`` names it; the step's
code is :mod:`warmstart.train.step`, the rollbacks' :mod:`warmstart.train.resume`):

1. Every rank draws the same *global* batch (``micro_batch x world x accum``
   rows) from the packed stream (``warmstart.data.packing``) and keeps its
   own micro-batches, so the data, its position and the result do not depend
   on the number of processes. ``accum`` is ``grad_accum``, or follows the
   Megatron/Lucie batch ramp-up (:func:`~warmstart.train.schedules.ramp_batch_rows`).
2. Optional hybrid masked-causal objective (NorMistral, ``masked_share``):
   some rows become masked-next-token rows with bidirectional attention
   inside each document, seeded by ``(seed, step)`` (``warmstart.train.objectives``).
3. Forward/backward per micro-batch (DDP ``no_sync``/FSDP2 gradient sync off
   except the last; the loss of each micro-batch is divided by ``accum``),
   gradient clipping (``accelerator.clip_grad_norm_``; the norm is logged
   even without clipping), then the optimizer step, unless the loss or the
   gradient norm is not finite: then the step is skipped (gradients dropped,
   data and LR schedule move on) and logged, and after ``max_bad_steps`` in a
   row the model and optimizer are rolled back to the last checkpoint while
   the data stream keeps going (PaLM-style: the offending batches are skipped).

Checkpoints (``<out_dir>/checkpoints/step0000500/``, written atomically, see
``warmstart.train.checkpoint``) hold a HF model dir plus optimizer, scheduler, RNG
and trainer state; sharded runs (FSDP2, DeepSpeed) also keep accelerate's
sharded states, and their HF weights are gathered in full. A CPU run resumed
after SIGKILL ends bit-identical to an uninterrupted one (tests/test_train.py
checks it).

Off by default (a run without them is bit-identical to one before they existed):
``z_loss`` (PaLM's auxiliary loss) and distillation from a frozen teacher
(``teacher_path``, :mod:`warmstart.train.distil`), both through
:class:`warmstart.train.objectives.Objective`; instability signals in the log every
``signals_every`` steps (:mod:`warmstart.train.signals`).

Logs: ``<out_dir>/log.jsonl`` (one JSON object per logged step, see
:data:`~warmstart.train.config.LOG_FIELDS`), TensorBoard scalars in ``<out_dir>/tb``, a tqdm bar.
On resume, log records past the checkpoint are dropped and TensorBoard purges
them, so the logs of a resumed run read like those of an uninterrupted one.

Tested here on CPU: one process, DDP (gloo) and FSDP2 (gloo, two processes,
sharded checkpoints and resume; tests/test_distributed.py). accelerate 1.x
does not select FSDP on a machine without CUDA (it falls back to DDP), so a
CPU run with an FSDP accelerate config is switched to FSDP by
:func:`~warmstart.train.distributed.make_accelerator`. DeepSpeed is untested here.
"""

from __future__ import annotations

import json
import os
import re
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from warmstart.data.stream import build_stream
from warmstart.flops import device_peak, flops_per_token, mfu
from warmstart.model import load_model
from warmstart.train.checkpoint import (
    export_checkpoint,
    latest_checkpoint,
    pause_for_tests,
    remove_partial_checkpoints,
)
from warmstart.train.config import (
    KERNEL_ATTENTION,
    LOG_FIELDS,
    OPTIONAL_LOG_FIELDS,
    SIGNAL_FIELDS,
    TB_FIELDS,
    TrainConfig,
)
from warmstart.train.distributed import make_accelerator
from warmstart.train.objectives import Objective, resolve_mask_id
from warmstart.train.resume import CheckpointMixin
from warmstart.train.schedules import lr_multiplier
from warmstart.train.signals import Signals
from warmstart.train.step import StepMixin

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


class Trainer(StepMixin, CheckpointMixin):
    """Holds the model, optimizer, data stream and counters of one run; :meth:`fit` runs it.

    One step (:meth:`train_step`, :meth:`batch_rows`) is :class:`~warmstart.train.step.StepMixin`'s; saving,
    restoring and rolling back (:meth:`save_checkpoint`, :meth:`load_checkpoint`, :meth:`trainer_state`) are
    :class:`~warmstart.train.resume.CheckpointMixin`'s.
    """

    def __init__(self, cfg: TrainConfig):
        from accelerate.utils import set_seed
        from transformers import AutoTokenizer

        self.cfg = cfg
        cuda = torch.cuda.is_available()
        bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and cuda)
        self.acc = make_accelerator("bf16" if bf16 else "no")
        set_seed(cfg.seed)
        self.out_dir = Path(cfg.out_dir)
        self.ckpt_root = self.out_dir / "checkpoints"
        self.log_path = self.out_dir / "log.jsonl"

        self.tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer_path or cfg.model_path)
        if cfg.model is not None:
            spec = (
                cfg.model if cfg.model.vocab_size else cfg.model.model_copy(update={"vocab_size": len(self.tokenizer)})
            )
            t = self.tokenizer
            model = spec.build(bos_token_id=t.bos_token_id, eos_token_id=t.eos_token_id, pad_token_id=t.pad_token_id)
        else:
            model = load_model(cfg.model_path, trust_remote_code=cfg.trust_remote_code)
        self.kernels: dict[str, str] = {}
        if cfg.fused_kernels or cfg.attn_implementation in KERNEL_ATTENTION:
            from warmstart.kernels import KernelOptions, mask_kind
            from warmstart.kernels import apply as apply_kernels

            opts = KernelOptions(
                attention=cfg.attn_implementation,
                mask=mask_kind(cfg.doc_mask, cfg.masked_share),
                rms_norm=cfg.fused_kernels,
                swiglu=cfg.fused_kernels,
                rope=cfg.fused_kernels,
                fused_linear_cross_entropy=cfg.fused_kernels,
            )
            self.kernels = apply_kernels(
                model, opts, device=self.acc.device, dtype=torch.bfloat16 if bf16 else torch.float32
            )
        elif cfg.attn_implementation:
            model.set_attn_implementation(cfg.attn_implementation)
        if len(self.tokenizer) > model.config.vocab_size:
            raise ValueError(
                f"tokenizer has {len(self.tokenizer)} tokens, model vocab_size is {model.config.vocab_size}"
            )
        if cfg.activation_checkpointing:
            if not getattr(model, "supports_gradient_checkpointing", False):
                raise ValueError(
                    f"activation_checkpointing: {type(model).__name__} does not support gradient checkpointing"
                )
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
        self.mask_id = resolve_mask_id(cfg.mask_token_id, self.tokenizer, cfg.masked_share)

        named = self._apply_freeze(model)
        decay = [p for n, p in named if not any(re.search(r, n) for r in cfg.no_decay)]
        no_decay = [p for n, p in named if any(re.search(r, n) for r in cfg.no_decay)]
        groups = [
            g
            for g in ({"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0})
            if g["params"]
        ]
        optimizer = self._make_optimizer(groups)
        # LambdaLR's epoch counts completed updates, so update k (1-based) runs at lr * lr_multiplier(k).
        self._lr_lambda = lambda e: lr_multiplier(  # a plain function: LambdaLR saves no state for it
            e + 1, cfg.steps, cfg.lr_schedule, cfg.warmup_steps, cfg.decay_steps, cfg.min_lr_ratio
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_lambda)
        self.model, self.optimizer = self.acc.prepare(model, optimizer)
        self.unwrapped = self.acc.unwrap_model(self.model)  # the HF model: save/load go through it
        # the trainable parameters as prepared (FSDP2 replaces them by sharded DTensors): clipped and measured
        self.params = [p for p in self.unwrapped.parameters() if p.requires_grad]
        if cfg.compile:
            self.model = torch.compile(self.model)
        self.data = build_stream(cfg, self.tokenizer, self.acc.is_main_process, self.acc.wait_for_everyone)
        self.flops_per_token = flops_per_token(self.unwrapped.config, cfg.seq_len)
        self.peak = cfg.peak_flops or (device_peak(self.acc.device) if self.acc.is_main_process else 1.0)
        self.step = self.samples = self.tokens = self.bytes = self.bad_streak = self.rollbacks = 0
        self.skipped: list[int] = []
        self.detector = cfg.make_spike_detector() if cfg.spike_mitigation else None
        self.spike_rollbacks = self.skipped_batches = 0  # skipped_batches: discarded draws from the stream
        self.prev_update: list[torch.Tensor] | None = None
        self.teacher, self.teacher_flops_per_token = None, None  # distillation (warmstart.train.distil)
        if cfg.teacher_path is not None:
            from warmstart.train.distil import load_teacher, teacher_flops_per_token

            self.teacher = load_teacher(
                cfg.teacher_path,
                self.tokenizer,
                cfg.tokenizer_path or cfg.model_path,
                self.acc.device,
                self.unwrapped.config._attn_implementation,
                cfg.trust_remote_code,
            )
            self.teacher_flops_per_token = teacher_flops_per_token(self.teacher.config, cfg.seq_len)
        self.objective = Objective(
            cfg.z_loss,
            self.teacher,
            cfg.kd_temperature,
            cfg.kd_ce_share,
            cfg.kd_top_k,
            len(self.tokenizer),
            self.acc.autocast,
            cfg.role_weights,
        )
        self.signals = Signals(self.unwrapped, cfg.signals_every) if cfg.signals_every else None

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

    def _is_tagged(self, step: int) -> bool:
        return step in self.cfg.tag_steps or bool(self.cfg.tag_every and step % self.cfg.tag_every == 0)

    def _is_log(self, step: int) -> bool:
        return step % self.cfg.log_every == 0 or step == self.cfg.steps

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
            remove_partial_checkpoints(self.ckpt_root)
            _truncate_log(self.log_path, self.step)
            (self.out_dir / "train_config.json").write_text(cfg.to_json())
            if self.kernels:
                (self.out_dir / "kernels.json").write_text(json.dumps(self.kernels, indent=1))
        acc.wait_for_everyone()
        tb = None
        if main and cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(str(self.out_dir / "tb"), purge_step=self.step + 1)
        from tqdm.auto import tqdm

        bar = tqdm(
            total=cfg.steps, initial=self.step, disable=not (main and cfg.progress), desc="train", dynamic_ncols=True
        )
        t0 = t_start = time.perf_counter()
        tokens0, last = self.tokens, None
        log = open(self.log_path, "a") if main else None
        try:
            while self.step < cfg.steps:
                rec = self.train_step()
                last = rec
                pause_for_tests("WARMSTART_TEST_SLEEP_PER_STEP")
                k = self.step
                if self.bad_streak >= cfg.max_bad_steps:
                    ckpt = self._rollback()
                    rec["rollback_to"] = ckpt.name
                elif self.detector is not None and not rec["skipped"]:
                    fired = self.detector.update(k, rec["loss"], rec["grad_norm"], corpus=rec["corpus"])
                    if fired and self.spike_rollbacks < cfg.spike_max_rollbacks:
                        start = self.detector.active_start or k
                        ckpt = self._spike_rollback(start)
                        rec.update(
                            spike_start=start,
                            rollback_to=ckpt.name if ckpt else None,
                            skipped_batches=cfg.spike_skip_batches,
                        )
                if self._is_log(k) or rec["skipped"] or "spike_start" in rec or SIGNAL_FIELDS[0] in rec:
                    dt = time.perf_counter() - t0
                    tps = (self.tokens - tokens0) / dt if dt > 0 else None
                    rec.update(
                        samples=self.samples,
                        tokens=self.tokens,
                        bytes=self.bytes,
                        elapsed_s=time.perf_counter() - t_start,
                        tokens_per_s=tps,
                        mfu=mfu(tps, self.flops_per_token, self.peak, acc.num_processes) if tps else None,
                        peak_mem_bytes=_peak_mem(acc.device),
                        data_state=self.data.state_dict(),
                    )
                    if self.teacher is not None:  # student training + teacher forward FLOPs
                        fpt = self.flops_per_token + self.teacher_flops_per_token
                        rec["mfu_with_teacher"] = mfu(tps, fpt, self.peak, acc.num_processes) if tps else None
                    if main:
                        extra = {
                            f: rec[f] for f in ("spike_start", "skipped_batches", *OPTIONAL_LOG_FIELDS) if f in rec
                        }
                        log.write(
                            json.dumps(
                                {f: rec.get(f) for f in LOG_FIELDS} | {"rollback_to": rec.get("rollback_to")} | extra
                            )
                            + "\n"
                        )
                        log.flush()
                        if tb is not None:
                            for key in (*TB_FIELDS, *OPTIONAL_LOG_FIELDS):
                                vals = rec.get(key)  # per-layer lists: one scalar per layer, train/<key>/<layer>
                                for tag, v in enumerate(vals) if isinstance(vals, list) else [(None, vals)]:
                                    if v is not None:
                                        tb.add_scalar(f"train/{key}" if tag is None else f"train/{key}/{tag}", v, k)
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
            self.out_dir,
            self.step,
            last_ckpt,
            export,
            self.log_path,
            last and last["loss"],
            self.skipped,
            self.rollbacks,
            self.spike_rollbacks,
            self.skipped_batches,
        )


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


def train(cfg: TrainConfig | dict | str | os.PathLike, resume: bool = False) -> TrainResult:
    """Run (or, with ``resume``, continue from the latest checkpoint) one training run in this process."""
    if not isinstance(cfg, TrainConfig):
        cfg = TrainConfig.model_validate(cfg) if isinstance(cfg, dict) else TrainConfig.from_yaml(cfg)
    return Trainer(cfg).fit(resume=resume)
