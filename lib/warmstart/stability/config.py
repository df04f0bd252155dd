"""The study's configuration (:class:`StabilityConfig`, the ``stability`` params section) and its variants."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# variant -> architecture (qk-norm natively: Qwen3's per-head q_norm/k_norm) and whether z-loss is on
VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {"arch": "llama", "z_loss": False},
    "qk_norm": {"arch": "qwen3", "z_loss": False},
    "z_loss": {"arch": "llama", "z_loss": True},
    "qk_norm+z_loss": {"arch": "qwen3", "z_loss": True},
}
Variant = Literal["baseline", "qk_norm", "z_loss", "qk_norm+z_loss"]
Init = Literal["warm", "scratch"]
# the spikes stage's detector parameters (params.yaml spikes.params): the study uses the same detector
SPIKES_PARAMS: dict[str, Any] = {"level_window": 10, "min_level": 5, "window": 100, "min_scale": 20}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelShape(_Strict):
    """The sweep's model (every variant; the architecture comes from the variant)."""

    hidden: int = Field(default=64, ge=4)
    layers: int = Field(default=2, ge=1)
    heads: int = Field(default=4, ge=1)
    kv_heads: int | None = Field(default=None, ge=1)
    intermediate: int | None = Field(default=128, ge=1)  # None: 8/3 x hidden
    tie_embeddings: bool = False


class MovedRule(_Strict):
    """When a signal "moved" (``warmstart.spikes.onset``)."""

    window: int = Field(default=20, ge=2)  # trailing records the median and MAD are taken over
    k: float = Field(default=5.0, gt=0)  # robust units above the trailing median
    min_history: int = Field(default=20, ge=2)  # records of history a move needs (the full window)
    lookback: int = Field(default=10, ge=0)  # records before the loss onset a move is looked for in
    rel_floor: float = Field(default=0.01, gt=0)  # scale floor: rel_floor x max(|median|, 1)
    attn_logit_threshold: float | None = Field(default=100.0, gt=0)  # attention logit "grew"
    log_z_threshold: float | None = Field(default=20.0, gt=0)  # |log Z mean| "left 0"


class InducedSpike(_Strict):
    """A warm run with a stretch of random-token batches (``inject_bad_batches``), without and with PaLM's
    rollback-and-skip (``spike_mitigation``); the clean control is the sweep's run of the same setting."""

    enabled: bool = True
    variant: Variant = "baseline"
    init: Init = "warm"
    lr: float = Field(default=1e-2, gt=0)
    bad_batches: list[int] = [140, 141, 142]  # 1-based draws from the stream
    checkpoint_every: int = Field(default=10, ge=1)  # the rollback target
    skip_batches: int = Field(default=5, ge=0)  # discarded after a rollback


class StabilityConfig(_Strict):
    """Learning-rate sweep x variants x inits, the signals, the detector and the induced spike.

    Every field has a default: ``StabilityConfig()`` is the default study (measured wall time in the
    package docstring), :meth:`smoke` the tests' seconds-long one.
    """

    lrs: list[float] = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0]
    variants: list[Variant] = ["baseline", "qk_norm", "z_loss"]
    inits: list[Init] = ["warm", "scratch"]
    z_loss_coef: float = Field(default=1e-4, gt=0)  # PaLM
    model: ModelShape = ModelShape()
    # every sweep run: linear warm-up, then the schedule (AdamW, the trainer's defaults otherwise)
    steps: int = Field(default=200, ge=2)
    warmup_steps: int = Field(default=60, ge=0)
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    weight_decay: float = Field(default=0.1, ge=0)
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    seq_len: int = Field(default=64, ge=4)
    micro_batch: int = Field(default=8, ge=1)
    # the warm starts' base models (one per architecture), pretrained on the source language
    base_steps: int = Field(default=300, ge=1)
    base_lr: float = Field(default=3e-3, gt=0)
    base_warmup_steps: int = Field(default=30, ge=0)
    swap_method: str = "fvt"  # real data with two tokenizers: warmstart.vocab_swap method of the warm start
    # logging and detection
    signals_every: int = Field(default=1, ge=1)
    detector_method: Literal["robust", "olmo2", "mad", "zclip"] = "robust"
    detector_params: dict[str, Any] = dict(SPIKES_PARAMS)
    detector_warmup: int = Field(default=0, ge=0)  # steps; 0: armed as soon as its windows fill (see docstring)
    moved: MovedRule = MovedRule()
    induced: InducedSpike = InducedSpike()
    # data (toy pair; real files through run_study(data=...)) and evaluation
    toy_vocab_size: int = Field(default=512, ge=300)
    val_docs: int = Field(default=60, ge=1)  # toy: target documents held out for the final loss
    eval_rows: int = Field(default=64, ge=1)  # held-out rows of seq_len tokens
    seed: int = 0
    threads: int = Field(default=1, ge=1)  # torch threads per process (1 is fastest for these sizes)
    workers: int = Field(default=2, ge=1)  # processes the bases and runs are spread over (spawned; 1: in this one)
    keep_checkpoints: bool = False  # the sweep's final checkpoints (evaluated in memory, then removed)
    # per-step trajectories in the result: "unstable" keeps those of the runs that spiked or diverged and of the
    # highest learning rate (what the figures draw; ~0.2 MB instead of ~1 MB of JSON), "all" every run's
    trajectories: Literal["unstable", "all"] = "unstable"

    @model_validator(mode="after")
    def _check(self) -> StabilityConfig:
        if not self.lrs or any(x <= 0 for x in self.lrs) or len(set(self.lrs)) != len(self.lrs):
            raise ValueError(f"lrs must be distinct positive learning rates, got {self.lrs}")
        if not self.variants or len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants must be distinct, got {self.variants}")
        if not self.inits or len(set(self.inits)) != len(self.inits):
            raise ValueError(f"inits must be distinct, got {self.inits}")
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be <= steps ({self.steps})")
        if self.base_warmup_steps > self.base_steps:
            raise ValueError(f"base_warmup_steps ({self.base_warmup_steps}) must be <= base_steps ({self.base_steps})")
        if self.model.hidden % self.model.heads:
            raise ValueError(
                f"model.hidden ({self.model.hidden}) must be a multiple of model.heads ({self.model.heads})"
            )
        ind = self.induced
        if ind.enabled:
            if not ind.bad_batches or min(ind.bad_batches) < 1 or max(ind.bad_batches) > self.steps:
                raise ValueError(f"induced.bad_batches must lie in 1..steps ({self.steps}), got {ind.bad_batches}")
            if min(ind.bad_batches) <= ind.checkpoint_every:
                raise ValueError("induced.bad_batches must come after the first checkpoint (induced.checkpoint_every)")
        return self

    def sorted_lrs(self) -> list[float]:
        return sorted(self.lrs)

    @classmethod
    def smoke(cls, **overrides: Any) -> StabilityConfig:
        """A seconds-long study with every part (the tests; the stage's smoke profile)."""
        base: dict[str, Any] = dict(
            lrs=[1e-2, 1.0],
            model=ModelShape(hidden=16, layers=1, heads=2, intermediate=32),
            steps=30,
            warmup_steps=6,
            seq_len=16,
            micro_batch=4,
            base_steps=20,
            base_warmup_steps=2,
            eval_rows=8,
            val_docs=20,
            workers=1,
            moved=MovedRule(window=10, min_history=10, lookback=5),
            induced=InducedSpike(bad_batches=[22, 23], checkpoint_every=5, skip_batches=3),
        )
        return cls(**(base | overrides))
