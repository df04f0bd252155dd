"""The trainer's run config (:class:`TrainConfig`, one YAML per run) and the fields of its step log."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from warmstart.model import ModelSpec

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
# Optional fields (OPTIONAL_LOG_FIELDS), present only in runs that turn the feature on:
# - signals_every > 0 (warmstart.train.signals): every signals_every-th step is always logged and has
#   attn_logit_max (list per decoder layer: max attention logit q.k/sqrt(d) over heads and attended pairs,
#   on the first row of the step's global batch),
#   log_z_mean and log_z_max (log-partition logsumexp(logits) over the step's label positions; null
#   with fused_kernels) and update_ratio (list per decoder layer: ||dW|| / ||W|| of this update; null
#   on a skipped step);
# - z_loss > 0 or teacher_path: ce_loss (the cross-entropy alone; loss is then the full objective);
# - teacher_path (warmstart.train.distil): kd_loss (KL(teacher || student) at kd_temperature, nats per label
#   position, without the T^2 factor) and mfu_with_teacher (student 6N + teacher forward 2N FLOPs).
KERNEL_ATTENTION = ("auto", "sdpa", "eager", "flash_attention_2", "warmstart_flex")  # through warmstart.kernels
# the step log's scalars that TensorBoard also gets (train/<field>, with the optional fields below)
TB_FIELDS = ("loss", "lr", "grad_norm", "update_cos", "tokens_per_s", "mfu")
LOG_FIELDS = (
    "step",
    "samples",
    "tokens",
    "bytes",
    *TB_FIELDS,
    "peak_mem_bytes",
    "data_state",
    "skipped",
    "corpus",
    "batch_rows",
    "masked_rows",
    "elapsed_s",
)
SIGNAL_FIELDS = ("attn_logit_max", "log_z_mean", "log_z_max", "update_ratio")
OPTIONAL_LOG_FIELDS = (*SIGNAL_FIELDS, "ce_loss", "kd_loss", "mfu_with_teacher")
# fields added after the reference study: left out of train_config.json while at their defaults
FEATURE_DEFAULTS = {
    "z_loss": 0.0,
    "signals_every": 0,
    "teacher_path": None,
    "kd_temperature": 1.0,
    "kd_ce_share": 0.0,
    "kd_top_k": None,
    "role_weights": None,
}


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
    fused_kernels: bool = (
        False  # Liger RMSNorm/SwiGLU/RoPE + fused linear-CE where the device allows (warmstart.kernels)
    )
    # data: corpus name -> a tokenized split's directory (the tokenize stage's shards), or jsonl files (globs
    # allowed) with a text field, tokenized once into token_cache (default <out_dir>/.tokens)
    train_files: dict[str, list[str]] = Field(min_length=1)
    token_cache: str | None = None
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
    # activation recomputation (transformers' activation checkpointing, non-reentrant): each decoder layer keeps
    # only its input and recomputes its activations in the backward pass; long-context runs that do not fit
    activation_checkpointing: bool = False
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
    # stability (Wortsman et al. 2023): PaLM's z-loss, loss += z_loss * mean(log Z^2) over the label positions
    # (log Z = logsumexp of the output logits; e.g. 1e-4); instability signals in the log every signals_every
    # steps (0: off; warmstart.train.signals)
    z_loss: float = Field(default=0.0, ge=0)
    signals_every: int = Field(default=0, ge=0)
    # logit distillation (warmstart.train.distil): a frozen teacher (HF dir, safetensors, the same tokenizer);
    # loss = (1 - kd_ce_share) * T^2 * KL(teacher || student at temperature T) + kd_ce_share * CE
    teacher_path: str | None = None
    kd_temperature: float = Field(default=1.0, gt=0)
    kd_ce_share: float = Field(default=0.0, ge=0, le=1)
    kd_top_k: int | None = Field(default=None, ge=1)  # the teacher's top-k logits only (renormalised)
    # chat fine-tuning (warmstart.chat): the loss weight of each token role (warmstart.data.packing.ROLES:
    # ignore, text, prompt, response; ignore is always 0); the loss is sum(w * ce) / sum(w) over a micro-batch's
    # labels. Needed to train on shards written with roles; plain text corpora beside them are role "text".
    role_weights: dict[Literal["text", "prompt", "response"], float] | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
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
        # by value, not by fields set: a dumped config (every field written out) validates again
        kd_set = [k for k in ("kd_temperature", "kd_ce_share", "kd_top_k") if getattr(self, k) != FEATURE_DEFAULTS[k]]
        if kd_set and self.teacher_path is None:
            raise ValueError(f"{', '.join(kd_set)} need teacher_path (distillation is off without a teacher)")
        if self.teacher_path is not None and self.masked_share > 0:
            raise ValueError(
                "masked_share and teacher_path cannot be combined (distillation of masked rows is not defined)"
            )
        if self.role_weights is not None:
            bad = {k: v for k, v in self.role_weights.items() if not (0 <= v <= 1)}
            if bad:
                raise ValueError(f"role_weights: each weight must lie in [0, 1], got {bad}")
            if not any(self.role_weights.get(k, 1.0) > 0 for k in ("text", "response")):
                raise ValueError("role_weights: text or response must have a positive weight (nothing to learn)")
            for other, on in (("teacher_path", self.teacher_path is not None), ("masked_share", self.masked_share > 0)):
                if on:
                    raise ValueError(f"role_weights cannot be combined with {other}")
        for name, on in (
            ("z_loss", self.z_loss > 0),
            ("teacher_path", self.teacher_path is not None),
            ("role_weights", self.role_weights is not None),
        ):
            if on and self.fused_kernels:
                raise ValueError(
                    f"{name} cannot be combined with fused_kernels: the fused linear-cross-entropy never materialises "
                    "the logits it needs (liger's own z-loss, lse_square_scale, is not wired into warmstart.kernels)"
                )
        if self.spike_mitigation:
            if not self.checkpoint_every:
                raise ValueError(
                    "spike_mitigation needs checkpoint_every > 0 (a checkpoint before the spike to roll back to)"
                )
            try:
                self.make_spike_detector()
            except (TypeError, ValueError) as e:
                raise ValueError(f"spike_detector: {e}") from None
        return self

    def make_spike_detector(self):
        """The online detector of the mitigation (warm-up defaults to the lr warm-up)."""
        from warmstart.spikes.online import OnlineDetector

        kw = dict(self.spike_detector)
        method = kw.pop("method", "robust")
        warmup = kw.pop("warmup", self.warmup_steps)
        return OnlineDetector(method, warmup=warmup, **kw)

    def to_json(self) -> str:
        """``train_config.json``: every field, except the newer feature switches while they are at their defaults."""
        off = {k for k, v in FEATURE_DEFAULTS.items() if getattr(self, k) == v}
        return self.model_dump_json(indent=1, exclude=off)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> TrainConfig:
        return cls.model_validate(yaml.safe_load(Path(path).read_text()))
