"""The context testbed's configuration (:class:`TestbedConfig`), validated before anything trains."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from warmstart.context import tasks as T
from warmstart.context.rope_scaling import METHODS, check_factor, check_method

# fine-tuning every method does not fit the 4-minute budget on 2 cores: Alfred's comparison (YaRN against the
# NTK family) is kept
DEFAULT_FINETUNE = ["ntk", "ntk_margin", "yarn", "ntk_yarn"]


class TestbedConfig(BaseModel):
    """Everything :func:`run_testbed` does; every field has a default (the 2-core default run)."""

    model_config = ConfigDict(extra="forbid")
    __test__ = False  # not a pytest test class

    # lengths
    trained_len: int = Field(default=128, ge=16)  # L: the training length
    factor: float = 4.0  # the extension: factor x L
    eval_factors: list[float] = [1.0, 2.0, 4.0]  # scored at round(f x L) tokens
    # tasks
    tasks: list[str] = ["passkey", "kv"]
    n_digits: int = Field(default=4, ge=1, le=12)  # passkey length
    n_pairs: int = Field(default=4, ge=1, le=len(T.KEYS))  # kv needles
    items: int = Field(default=400, ge=1)  # per (method, length, task) cell
    depth_buckets: int = Field(default=10, ge=1)
    # methods
    methods: list[str] = list(METHODS)
    method_opts: dict[str, dict[str, Any]] = {}
    finetune_methods: list[str] = DEFAULT_FINETUNE
    # model (a small Llama; heads=2 gives head dim 32)
    hidden: int = Field(default=64, ge=8)
    layers: int = Field(default=2, ge=1)
    heads: int = Field(default=2, ge=1)
    rope_theta: float = Field(default=10000.0, gt=0)
    # training at L (through warmstart.train.loop)
    train_steps: int = Field(default=1200, ge=1)
    # (share of steps, item length as a share of L): items shorter than L are packed several per row, document-masked
    curriculum: list[tuple[float, float]] = [(0.0, 1 / 8), (0.1, 1 / 4), (0.2, 1 / 2), (0.3, 1.0)]
    train_items: int = Field(default=2000, ge=1)  # documents per curriculum corpus
    micro_batch: int = Field(default=16, ge=1)
    lr: float = Field(default=2e-3, gt=0)
    warmup_steps: int = Field(default=30, ge=0)
    # fine-tuning at factor x L
    finetune_steps: int = Field(default=100, ge=1)
    finetune_micro_batch: int = Field(default=4, ge=1)
    finetune_lr: float = Field(default=1e-3, gt=0)
    finetune_items: int = Field(default=600, ge=1)  # rows' worth of items per fine-tune corpus
    # (item length as a multiple of L, share of rows): the fine-tune mixes lengths (Alfred: short and long data)
    # so that extending does not cost the trained length; shorter items are packed and document-masked
    finetune_mix: list[tuple[float, float]] = [(1.0, 0.25), (2.0, 0.25), (4.0, 0.5)]
    # execution
    eval_batch: int = Field(default=32, ge=1)
    threads: int = Field(default=1, ge=1)  # torch threads per process (scoring and fine-tuning jobs)
    train_threads: int = Field(
        default=2, ge=1
    )  # torch threads for training the base, which runs alone (1.6x faster on 2 cores than 1)
    # processes the zero-shot scoring and the fine-tunes are spread over (spawned; 1: in this one). Every job
    # runs with `threads` threads from the same files and seeds, so the result does not depend on it.
    workers: int = Field(default=2, ge=1)
    seed: int = 0

    @field_validator("methods", "finetune_methods")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for m in v:
            check_method(m)
        if len(set(v)) != len(v):
            raise ValueError(f"methods listed twice in {v}")
        return v

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: list[str]) -> list[str]:
        if not v or any(t not in T.TASKS for t in v) or len(set(v)) != len(v):
            raise ValueError(f"tasks must be distinct names among {T.TASKS}, got {v}")
        return v

    @model_validator(mode="after")
    def _check(self) -> TestbedConfig:
        check_factor(self.factor)
        for m in self.method_opts:
            check_method(m)
        if not self.eval_factors or any(f <= 0 for f in self.eval_factors):
            raise ValueError(f"eval_factors must be positive, got {self.eval_factors}")
        if self.hidden % self.heads or (self.hidden // self.heads) % 2:
            raise ValueError(f"hidden/heads must be an even head dim, got {self.hidden}/{self.heads}")
        for mult, w in self.finetune_mix:
            n = int(round(mult * self.trained_len))
            if w <= 0 or n < 1 or self.finetune_len() % n or not self.stage_tasks(n):
                raise ValueError(f"finetune_mix: ({mult}, {w}) needs a weight > 0 and items that divide factor x L")
        shares = [s for s, _ in self.curriculum]
        if not self.curriculum or shares[0] != 0.0 or shares != sorted(shares) or shares[-1] >= 1.0:
            raise ValueError("curriculum must start at share 0.0, be sorted and end before 1.0")
        for _, frac in self.curriculum:
            if not 0 < frac <= 1 or self.trained_len % round(1 / frac) and frac != 1.0:
                raise ValueError(f"curriculum length shares must divide L evenly (1, 1/2, 1/4...), got {frac}")
        for n in self.lengths() + [self.finetune_len(), self.trained_len]:
            for t in self.tasks:
                need = T.min_length(t, self.n_digits, self.n_pairs)
                if n < need:
                    raise ValueError(f"trained_len: a length of {n} tokens is shorter than a {t} item needs ({need})")
        for _, frac in self.curriculum:
            if not self.stage_tasks(self.item_len(frac)):
                raise ValueError(f"curriculum: items of {self.item_len(frac)} tokens are too short for any task")
        return self

    def stage_tasks(self, n: int) -> list[str]:
        """The tasks whose items fit in ``n`` tokens (short curriculum stages hold only those)."""
        return [t for t in self.tasks if T.min_length(t, self.n_digits, self.n_pairs) <= n]

    def lengths(self) -> list[int]:
        return sorted({int(round(f * self.trained_len)) for f in self.eval_factors})

    def finetune_len(self) -> int:
        return int(round(self.factor * self.trained_len))

    def item_len(self, share: float) -> int:
        return int(round(share * self.trained_len))

    @classmethod
    def smoke(cls, **overrides: Any) -> TestbedConfig:
        """A tiny run (< 30 s on 2 cores): the whole pipeline, no meaningful accuracy."""
        base = dict(
            trained_len=64,
            items=24,
            train_steps=40,
            train_items=200,
            micro_batch=8,
            warmup_steps=4,
            methods=["none", "pi", "dynamic", "yarn", "ntk_yarn"],
            finetune_methods=["yarn"],
            curriculum=[(0.0, 0.5), (0.5, 1.0)],
            finetune_steps=4,
            finetune_items=40,
            finetune_micro_batch=2,
            depth_buckets=4,
            eval_batch=24,
            workers=1,
            train_threads=1,
        )
        return cls(**{**base, **overrides})
