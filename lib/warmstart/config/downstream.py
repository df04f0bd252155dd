"""The params sections of the stages after the study's training: ``evaluate``, ``stability``, ``context``,
``compress``, ``chat`` and ``report`` (``spikes``: :mod:`warmstart.config.spikes`)."""

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
    probe_bytes: int = Field(default=16_000_000, ge=1000)  # held-out text the probes draw from, streamed
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


class ChatTrain(Optim):
    steps: int = Field(default=200, ge=1)
    lr: float = Field(default=0.002, gt=0, le=1.0)
    warmup_steps: int = Field(default=10, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)


class ChatTokens(_Section):
    """Alfred-40B-1023's chat tokens (warmstart.chat.template): one string per role and the end of a turn."""

    system: str = "<start_system>"
    user: str = "<start_user>"
    assistant: str = "<start_assistant>"
    end: str = "<end_message>"


class ChatSource(_Section):
    """A user's own chat data: jsonl files of {"messages": [...]} or a Hugging Face dataset (kind hf)."""

    kind: Literal["jsonl", "hf"]
    path: str | None = None  # jsonl
    id: str | None = None  # hf dataset id
    split: str = "train"
    field: str = "messages"

    @model_validator(mode="after")
    def _where(self) -> ChatSource:
        if (self.kind == "jsonl") != (self.path is not None) or (self.kind == "hf") != (self.id is not None):
            raise ValueError("a jsonl source gives path, an hf source gives id")
        return self


class Chat(_Section):
    """Alfred-style chat fine-tuning (warmstart.chat)."""

    run: str = "best"  # the adapted model to tune: best (the evaluation's best run) | a study run name
    tokens: ChatTokens = ChatTokens()
    token_init: Literal["mean", "related"] = "related"  # new rows: end from EOS, roles mean | all the mean
    system: str | None = None  # a system turn on every built-in item
    phrases: dict[str, Any] | None = None  # instruction wording; None: built in for the study's languages
    seq_len: int = Field(default=256, ge=16)
    on_long: Literal["error", "truncate", "drop"] = "truncate"  # items longer than seq_len (counted)
    align_ratio: float = Field(default=1.6, gt=1)  # parallel paragraphs kept within this length ratio
    long_len: int = Field(default=192, ge=16)  # tokens of a long-context item (the retrieval suite's length)
    long_items: int = Field(default=20, ge=0)  # per retrieval task (beside long "continue" items from every page)
    long_tasks: list[Literal["passkey", "kv_uuid", "topic", "line", "multidoc"]] = ["passkey"]
    kept_prompt_share: float = Field(default=0.25, ge=0, le=1)  # long items whose prompt keeps the LM loss
    mix: dict[Literal["short", "long", "replay"], float] = {"short": 0.5, "long": 0.45, "replay": 0.05}
    replay: list[Literal["target", "source"]] = ["target", "source"]  # plain text of these train splits
    prompt_loss_weight: float = Field(default=0.0, ge=0, le=1)  # the chat run's loss weight on prompt tokens
    ablation: list[float] = [0.1, 1.0]  # more prompt-loss weights, one run each (chat-pw<w>)
    sources: list[ChatSource] = []  # a user's chat data, into the short part
    held_out: float = Field(default=0.1, ge=0, lt=1)  # share of a user's items held out (by id hash)
    micro_batch: int = Field(default=8, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    train: ChatTrain = ChatTrain()
    log_every: int = Field(default=5, ge=1)
    eval_items: int = Field(default=100, ge=1)  # held-out turns: adherence and response bits per byte
    translation_items: int = Field(default=40, ge=0)  # held-out translation instructions per direction: chrF
    max_new_tokens: int = Field(default=96, ge=1)  # the length limit of adherence
    eval_bytes: int = Field(default=16_000, ge=1000)  # source-language test text: forgetting
    batch_size: int = Field(default=16, ge=1)

    @model_validator(mode="after")
    def _check(self) -> Chat:
        if self.long_len > self.seq_len:
            raise ValueError(f"long_len ({self.long_len}) must be <= seq_len ({self.seq_len})")
        if any(w < 0 for w in self.mix.values()) or sum(self.mix.values()) <= 0:
            raise ValueError(f"mix: weights >= 0 with a positive sum, got {self.mix}")
        if self.mix.get("replay", 0) > 0 and not self.replay:
            raise ValueError("mix.replay > 0 needs replay languages")
        bad = [w for w in self.ablation if not 0 <= w <= 1]
        if bad:
            raise ValueError(f"ablation: prompt-loss weights lie in [0, 1], got {bad}")
        if self.prompt_loss_weight in self.ablation or len(set(self.ablation)) != len(self.ablation):
            raise ValueError("ablation: each weight once, and not the chat run's prompt_loss_weight")
        return self


class Report(_Section):
    title: str | None = None  # None: written from the run (model, source and target language names)
    author: str = "warmstart"
