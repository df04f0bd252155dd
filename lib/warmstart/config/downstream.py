"""The params sections of the stages after the study's training: ``evaluate``, ``stability``, ``context``,
``compress`` and ``report`` (``spikes``: :mod:`warmstart.config.spikes`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from warmstart.config.sections import Optim, _Section


class Evaluate(_Section):
    eval_bytes: int = Field(default=32_000, ge=1000)  # test text per language for bits per byte (CPU budget)
    checkpoints: Literal["tagged", "final"] = "tagged"  # bits per byte at every step-tagged checkpoint, or final only
    probe_checkpoints: Literal["tagged", "final"] = "final"  # cloze, translation, masked probes (CPU budget: final)
    batch_size: int = Field(default=16, ge=1, le=4096)
    cloze_items: int = Field(default=40, ge=0)  # per language; 0 = no cloze
    cloze_context_chars: int = Field(default=150, ge=20)
    cloze_ending_chars: int = Field(default=80, ge=10)
    translation_pairs: int = Field(default=16, ge=0)
    translation_max_new_tokens: int = Field(default=32, ge=1)
    translation_max_chars: int = Field(default=300, ge=10)  # skip longer paragraphs (tiny models read 128 tokens)
    masked_items: int = Field(default=50, ge=0)
    # Standard benchmarks through lm-evaluation-harness (warmstart.evaluate.harness), default: none.
    lm_eval_tasks: list[str] = []  # lm-eval task/group/tag names, its own registry: [hellaswag, arc_easy, mmlu]
    lm_eval_include: list[str] = []  # extra folders of task YAMLs (e.g. a local translated task); same names override
    lm_eval_limit: int | None = Field(default=None, ge=1)  # items per task; null = all
    lm_eval_num_fewshot: int | None = Field(default=None, ge=0)  # null = each task's own default (0 if it has none)

    @model_validator(mode="after")
    def _check_lm_eval(self) -> Evaluate:
        for key in ("lm_eval_tasks", "lm_eval_include"):
            values = getattr(self, key)
            if any(not v.strip() for v in values):
                raise ValueError(f"{key}: {values} holds an empty name")
            if len(set(values)) != len(values):
                raise ValueError(f"{key}: {values} repeats a name")
        return self


class Stability(_Section):
    """``warmstart.stability.StabilityConfig``'s fields (but ``seed``, from shared, and the detector, from
    ``spikes``); the stage validates them through that class, which names any bad key."""

    model_config = ConfigDict(extra="allow")


CONTEXT_METHODS = ("none", "pi", "ntk", "ntk_margin", "dynamic", "ntk_parts", "yarn", "ntk_yarn", "llama3", "theta")
LONGCTX_TASKS = ("passkey", "kv_uuid", "topic", "line", "multidoc")
COMPRESS_VARIANTS = ("width_kd", "depth_kd", "width_ce", "random_kd", "scratch")


class ContextFinetune(Optim):
    """The short fine-tune of the extended model on long documents (Alfred: its training-loss figure)."""

    warmup_steps: int = Field(default=3, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    tokens_per_step: int = Field(
        default=2048, ge=8
    )  # rows per step = tokens_per_step // length: equal tokens at any length
    log_every: int = Field(default=2, ge=1)


class ContextSuite(_Section):
    """The text retrieval suite (warmstart.context.retrieval) at L, 2L, .. factor x L."""

    tasks: list[Literal["passkey", "kv_uuid", "topic", "line", "multidoc"]] = Field(
        default=list(LONGCTX_TASKS), min_length=1
    )
    items: int = Field(default=20, ge=1)  # per task and length
    batch_size: int = Field(default=8, ge=1)


class Context(_Section):
    run: str = "best"  # the adapted model to extend: best (the evaluation's best run) | a study run name
    # DVC matrix; "short" = Alfred's 2K baseline: the same fine-tune tokens at the trained length, nothing extended
    methods: list[Literal[CONTEXT_METHODS + ("short",)]] = Field(min_length=1)  # type: ignore[valid-type]
    factor: int = Field(default=4, ge=2, le=64)  # new length = factor x pretrain.seq_len (the trained length)
    options: dict[str, dict[str, float]] = {}  # per method, e.g. ntk_margin: {margin: 2.0}; theta: {theta: 160000}
    finetune: ContextFinetune
    eval_bytes: int = Field(default=32_000, ge=1000)  # test text (long documents) for bits per byte by length
    position_buckets: int = Field(default=8, ge=1)
    suite: ContextSuite = ContextSuite()
    testbed: dict[str, Any] = {}  # warmstart.context.testbed_config.TestbedConfig fields (validated by the stage)

    @model_validator(mode="after")
    def _check(self) -> Context:
        unknown = set(self.options) - set(CONTEXT_METHODS)
        if unknown:
            raise ValueError(f"options: unknown method(s) {sorted(unknown)}; known: {', '.join(CONTEXT_METHODS)}")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods: {self.methods} repeats a method")
        return self


class Calibration(_Section):
    """Minitron's calibration set: activation importance over ``samples`` rows of ``seq_len`` target tokens."""

    samples: int = Field(default=64, ge=1)  # 1,024 in the paper
    seq_len: int = Field(default=128, ge=2)
    batch_size: int = Field(default=16, ge=1)
    seq_agg: Literal["mean", "l2", "max"] = "mean"  # over the sequence (the paper's best: mean)
    batch_agg: Literal["l2", "mean", "max"] = "l2"  # over the batch (the paper's best: L2)


class Distillation(_Section):
    temperature: float = Field(default=1.0, gt=0)
    ce_share: float = Field(default=0.0, ge=0, le=1)  # weight of cross-entropy beside the forward KL (Minitron: 0)
    top_k: int | None = Field(default=None, ge=1)  # only the teacher's top-k logits (memory); None: all


class TeacherCorrection(Optim):
    """Minitron's teacher correction: the teacher fine-tuned on the distillation text before it is pruned and
    distilled from (helps when that text differs from the teacher's own). ``steps: 0`` (the default) is off."""

    steps: int = Field(default=0, ge=0)
    lr: float = Field(default=0.0005, gt=0, le=1.0)  # a quarter of the students' default lr


class Compress(_Section):
    teacher: str = "best"  # best (the evaluation's best run) | a study run name
    teacher_correction: TeacherCorrection = TeacherCorrection()  # off unless steps > 0
    variants: list[Literal[COMPRESS_VARIANTS]] = Field(min_length=1)  # type: ignore[valid-type]
    non_embedding_ratio: float = Field(
        default=0.5, gt=0, lt=1
    )  # students' size: this share of the teacher's non-embedding parameters
    calibration: Calibration = Calibration()
    masking_fraction: float = Field(default=0.25, gt=0, lt=1)  # the masking check: least important vs random units
    masking_draws: int = Field(
        default=16, ge=1
    )  # random masks of the same size the least important one is compared with
    train: Optim  # the students' run (no more bytes than the teacher's phase 2)
    kd: Distillation = Distillation()
    tag_every: int = Field(default=10, ge=1)  # step-tagged checkpoints: bits per byte against bytes
    eval_bytes: int = Field(default=16_000, ge=1000)  # test (and calibration-check val) text per language

    @model_validator(mode="after")
    def _check(self) -> Compress:
        if len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants: {self.variants} repeats a variant")
        return self


class Report(_Section):
    title: str | None = None  # None: written from the run (model, source and target language names)
    author: str = "warmstart"
