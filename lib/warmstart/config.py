"""Typed, validated study parameters (params.yaml).

One section per DVC stage plus a ``shared`` block. Every stage calls
:func:`load_params` first, so a bad value stops the stage before it writes
anything, with a message that names the key and what is allowed.

CLI::

    python -m warmstart.config check [params.yaml]
    python -m warmstart.config apply-profile smoke [params.yaml]
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

LANG_PATTERN = r"^[a-z]{2,3}(-[A-Z]{2})?$"
LangCode = Annotated[str, Field(pattern=LANG_PATTERN)]
PROFILES_DIR = Path(__file__).with_name("profiles")


class ParamsError(ValueError):
    """A params file that is missing, unreadable or invalid."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Shared(_Section):
    seed: int = Field(ge=0)
    source_lang: LangCode
    target_lang: LangCode
    data_dir: str
    reports_dir: str

    @model_validator(mode="after")
    def _distinct(self) -> Shared:
        if self.source_lang == self.target_lang:
            raise ValueError(f"source_lang and target_lang must differ (both are {self.source_lang!r})")
        return self


# ---------------------------------------------------------------- corpus


class HandbookSource(_Section):
    kind: Literal["handbook"]
    version: str | None = None  # pin a debian-handbook version; None = apt's candidate
    deb_path: str | None = None  # use this .deb instead of `apt-get download`
    documents: list[str] | None = None  # restrict to these chapter ids (smoke profile)


class LocalSource(_Section):
    kind: Literal["local"]
    lang: str  # a language code, or "source" / "target"
    paths: list[str] = Field(min_length=1)  # files, directories or globs
    text_field: str = "text"
    id_field: str | None = None


class HFSource(_Section):
    kind: Literal["hf"]
    lang: str
    dataset: str  # hub id or local path understood by datasets.load_dataset
    name: str | None = None
    split: str = "train"
    text_field: str = "text"
    id_field: str | None = None
    max_documents: int | None = Field(default=None, ge=1)
    trust_remote_code: bool = False


Source = Annotated[HandbookSource | LocalSource | HFSource, Field(discriminator="kind")]


class LangID(_Section):
    threshold: float = Field(ge=0.0, le=1.0)
    # "corpus": restrict the identifier to the corpus languages (untranslated
    # English in a Norwegian book is what we filter); or an explicit list.
    candidates: Literal["corpus", "all"] | list[str] = "corpus"


class Dedup(_Section):
    exact: bool = True
    near_threshold: float | None = Field(default=0.8, gt=0.0, le=1.0)  # MinHash Jaccard; None = off
    num_perm: int = Field(default=64, ge=16, le=1024)
    shingle_chars: int = Field(default=5, ge=2, le=32)


class Split(_Section):
    val_fraction: float = Field(ge=0.0, lt=0.5)
    test_fraction: float = Field(gt=0.0, lt=0.5)
    val_documents: list[str] = []  # explicit chapter ids override the fractions
    test_documents: list[str] = []


class Corpus(_Section):
    extra_languages: list[LangCode] = []
    sources: list[Source] = Field(min_length=1)
    keep_code: bool = False
    min_chars: int = Field(ge=1)
    min_train_bytes: int = Field(default=50_000, ge=0)  # per language, after filtering: below it the stage fails
    langid: LangID
    dedup: Dedup
    split: Split
    on_bad_file: Literal["error", "skip"] = "error"


# ---------------------------------------------------------------- tokenizer


class SpecialTokens(_Section):
    bos: str = "<s>"
    eos: str = "</s>"
    pad: str = "<pad>"
    unk: str = "<unk>"
    mask: str = "<mask>"

    def as_list(self) -> list[str]:
        toks = [self.pad, self.bos, self.eos, self.unk, self.mask]
        if len(set(toks)) != len(toks):
            raise ValueError(f"special tokens must be distinct, got {toks}")
        return toks


class Tokenizer(_Section):
    kind: Literal["byte_bpe", "sp_bpe", "sp_unigram"] = "byte_bpe"
    vocab_size: int = Field(ge=64, le=1_048_576)
    # language -> weight for the target tokenizer's training text; keys may be
    # language codes or the words "source" / "target".
    target_mix: dict[str, float] = Field(min_length=1)
    max_repeats: float = Field(default=16.0, ge=1.0)
    normalization: Literal["none", "NFC", "NFKC"] = "NFC"
    split_digits: bool = True
    min_frequency: int = Field(default=2, ge=1)
    special_tokens: SpecialTokens = SpecialTokens()

    @field_validator("target_mix")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: w for k, w in v.items() if not w > 0}
        if bad:
            raise ValueError(f"weights must be > 0, got {bad}")
        return v


# ---------------------------------------------------------------- base


def check_attention_shape(hidden: int, heads: int, kv_heads: int | None) -> None:
    """Heads split the hidden size evenly, and key-value heads split the query heads (GQA)."""
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
    if heads % (kv_heads or heads):
        raise ValueError(f"heads ({heads}) must be divisible by kv_heads ({kv_heads})")


class TinyModel(_Section):
    """Shape of the embedded default's tiny Llama/Mistral model (warmstart.model.ModelSpec)."""

    arch: Literal["llama", "mistral", "qwen3", "olmo2"] = "llama"  # qwen3/olmo2: native qk-norm
    hidden: int = Field(ge=8, le=16384)
    layers: int = Field(ge=1, le=256)
    heads: int = Field(ge=1)
    kv_heads: int | None = Field(default=2, ge=1)  # None: as many as heads (MHA)
    intermediate: int | None = Field(default=None, ge=1)
    max_pos: int = Field(default=1024, ge=16)
    tie_embeddings: bool = False

    @model_validator(mode="after")
    def _shapes(self) -> TinyModel:
        check_attention_shape(self.hidden, self.heads, self.kv_heads)
        return self


class Optim(_Section):
    """One training phase's schedule and optimiser (see warmstart.train.loop.TrainConfig)."""

    steps: int = Field(ge=1)
    lr: float = Field(gt=0, le=1.0)
    warmup_steps: int = Field(default=0, ge=0)
    lr_schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    decay_steps: int = Field(default=0, ge=0)
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    optimizer: Literal["adamw", "lion"] = "adamw"
    weight_decay: float = Field(default=0.1, ge=0)
    max_grad_norm: float | None = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _warmup(self) -> Optim:
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be <= steps ({self.steps})")
        return self


class Base(_Section):
    source: Literal["tiny", "hf"] = "tiny"  # tiny: pretrain `model` on the source corpus; hf: load model_id
    model_id: str | None = None  # HF hub id or local dir (safetensors only), for source: hf
    tokenizer_id: str | None = None  # defaults to model_id
    trust_remote_code: bool = False
    model: TinyModel
    seq_len: int = Field(ge=8, le=1_048_576)
    micro_batch: int = Field(ge=1)
    grad_accum: int = Field(default=1, ge=1)
    optim: Optim
    checkpoint_every: int = Field(default=100, ge=0)
    log_every: int = Field(default=10, ge=1)
    samples: list[str] = [
        "To install a package on Debian,",
        "The Falcot Corp administrators",
    ]  # the card's fallback example

    @model_validator(mode="after")
    def _hf(self) -> Base:
        if self.source == "hf" and not self.model_id:
            raise ValueError("base.source is 'hf' but base.model_id is not set")
        return self


# ---------------------------------------------------------------- vocab swap and pretrain


class VocabSwap(_Section):
    methods: list[Literal["random", "exact", "fvt", "focus", "omp"]] = Field(min_length=1)
    pad_multiple: int = Field(default=64, ge=1, le=4096)
    omp_k: int = Field(default=8, ge=1, le=256)  # anchors per token for omp
    fasttext_dim: int = Field(default=64, ge=8, le=1024)  # focus: gensim fastText vectors
    fasttext_epochs: int = Field(default=5, ge=1, le=100)
    neighbours: int = Field(default=12, ge=1, le=200)  # rows of the nearest-neighbour sanity table
    eval_bytes: int = Field(default=32_000, ge=1000)  # test text for step-0 bits per byte, per language

    @field_validator("methods")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"methods repeat: {v}")
        return v


class Pretrain(_Section):
    """The warm-start study: every swap method, plus `scratch` and `original`, same bytes and schedule."""

    num_processes: int = Field(default=1, ge=1)  # >1: `accelerate launch` as a process
    seq_len: int = Field(ge=8)
    micro_batch: int = Field(ge=1)
    grad_accum: int = Field(default=1, ge=1)
    phase1: Optim  # embeddings and head only, body frozen (NorMistral stage 2.2); scratch skips it
    phase2: Optim  # everything
    phase1_train_only: list[str] = [r"embed_tokens", r"lm_head"]
    masked_share: float = Field(default=0.0, ge=0, le=1)  # hybrid masked-causal objective (NorMistral)
    doc_mask: bool = False
    tag_every: int | None = Field(default=40, ge=1)  # step-tagged checkpoints for the evaluation
    log_every: int = Field(default=5, ge=1)
    # instability signals (attention logit, log Z, update ratio) in the log every this many steps; 0: off.
    # The spikes stage says, per event, which moved first (issue 12's "context for each event").
    signals_every: int = Field(default=5, ge=0)
    z_loss: float = Field(default=0.0, ge=0)  # PaLM z-loss coefficient (e.g. 1e-4); 0: off
    precision: Literal["auto", "bf16", "fp32"] = "auto"


class Arm(_Section):
    """An extra study run: a swap method's model trained with some ``pretrain`` settings changed."""

    model_config = ConfigDict(extra="allow", frozen=True)
    init: str  # a vocab_swap method: the run starts from data/models/swap-<init>

    @model_validator(mode="after")
    def _pretrain_keys(self) -> Arm:
        fixed = {"num_processes", "seq_len", "micro_batch", "grad_accum", "phase1", "phase2", "tag_every", "log_every"}
        bad = sorted(set(self.overrides) - (set(Pretrain.model_fields) - fixed))
        if not self.overrides or bad:
            raise ValueError(
                f"arm keys {bad} are not pretrain settings an arm may change"
                if bad
                else "an arm changes at least one pretrain setting (e.g. masked_share: 0.1)"
            )
        return self

    @property
    def overrides(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Study(_Section):
    """The study's training seeds and its runs beyond one per swap method (:mod:`warmstart.runs`). The DVC
    study trains with shared.seed; `make seed-spread` (:mod:`warmstart.evaluate.seed_spread`) trains every run per seed."""

    seeds: list[int] = Field(default=[1337], min_length=1)
    arms: dict[str, Arm]

    @model_validator(mode="after")
    def _check(self) -> Study:
        if len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"seeds must be distinct and >= 0: {self.seeds}")
        bad = [n for n in self.arms if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", n)]
        if bad:
            raise ValueError(
                f"arm names {bad}: use lower-case letters, digits, '-' and '_' (they name files and DVC stages)"
            )
        return self


# ---------------------------------------------------------------- evaluate, spikes, report


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


class Spikes(_Section):
    method: Literal["robust", "olmo2", "mad", "zclip"] = "robust"
    warmup: int | Literal["auto"] = "auto"
    # detect(**params): method parameters (robust: RobustParams fields); windows count log records
    params: dict[str, float | int | bool | None] = {"level_window": 10, "min_level": 5, "window": 100, "min_scale": 20}
    score_window: int = Field(
        default=100, ge=10
    )  # OLMo 2 spike score: previous records in the window (1000 in the paper)
    score_min_periods: int = Field(default=20, ge=2)  # records needed before a value counts

    @model_validator(mode="after")
    def _check_params(self) -> Spikes:
        if self.score_min_periods > self.score_window:
            raise ValueError(
                f"score_min_periods ({self.score_min_periods}) must be <= score_window ({self.score_window})"
            )
        if self.method == "robust":
            from warmstart.spikes.robust_params import RobustParams  # the detector's parameters, no detector

            try:
                RobustParams.from_kwargs(dict(self.params))
            except (TypeError, ValueError) as e:
                raise ValueError(f"params: {e}") from None
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
    testbed: dict[str, Any] = {}  # warmstart.context.testbed.TestbedConfig fields (validated by the stage)

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


class Params(_Section):
    shared: Shared
    corpus: Corpus
    tokenizer: Tokenizer
    base: Base
    vocab_swap: VocabSwap
    pretrain: Pretrain
    study: Study
    evaluate: Evaluate
    spikes: Spikes
    stability: Stability
    context: Context
    compress: Compress
    report: Report

    @model_validator(mode="after")
    def _arms(self) -> Params:
        methods = list(self.vocab_swap.methods)
        for name, arm in self.study.arms.items():
            if arm.init not in methods:
                raise ValueError(
                    f"study.arms.{name}.init is {arm.init!r}, not a vocab_swap method ({methods}): "
                    f"add it to vocab_swap.methods or drop the arm (study.arms: {{}})"
                )
            if name in (*methods, "scratch", "original", "base"):
                raise ValueError(f"study.arms.{name}: the name is already a study run's")
        return self

    # -- helpers used by several stages
    def resolve_lang(self, lang: str) -> str:
        if lang == "source":
            return self.shared.source_lang
        if lang == "target":
            return self.shared.target_lang
        return lang

    @property
    def languages(self) -> list[str]:
        """Corpus languages: source, target, then the extra ones (no repeats)."""
        out: list[str] = []
        for lang in [self.shared.source_lang, self.shared.target_lang, *self.corpus.extra_languages]:
            if lang not in out:
                out.append(lang)
        return out

    def path(self, *parts: str) -> Path:
        return Path(self.shared.data_dir, *parts)

    def report_path(self, *parts: str) -> Path:
        return Path(self.shared.reports_dir, *parts)


def offered_languages(src: Source, params: Params) -> tuple[str, ...]:
    """The corpus languages a source can provide: the handbook's list, or a local/HF source's one ``lang``."""
    if src.kind == "handbook":  # by kind: `python -m warmstart.config` builds params from __main__'s classes
        from warmstart.data import handbook  # bs4: only when asked

        return handbook.available_languages(Path(src.deb_path)) if src.deb_path else handbook.LANGUAGES
    return (params.resolve_lang(src.lang),)


def check_languages(params: Params) -> None:
    """Fail, before anything is read, on a source of no corpus language or a language of no source."""
    langs = params.languages
    for i, src in enumerate(params.corpus.sources):
        if src.kind != "handbook" and params.resolve_lang(src.lang) not in langs:
            raise ValueError(
                f"corpus.sources[{i}].lang is {src.lang!r}, not a corpus language; "
                f"corpus languages (shared.source_lang, shared.target_lang, corpus.extra_languages): {langs}"
            )
    offered = {
        src.kind if len(params.corpus.sources) == 1 else f"corpus.sources[{i}] ({src.kind})": offered_languages(
            src, params
        )
        for i, src in enumerate(params.corpus.sources)
    }
    every = {lang for langs in offered.values() for lang in langs}
    roles = {params.shared.source_lang: "shared.source_lang", params.shared.target_lang: "shared.target_lang"}
    problems = [f"{lang!r} ({roles.get(lang, 'corpus.extra_languages')})" for lang in langs if lang not in every]
    if problems:
        lists = "; ".join(f"{name} offers {', '.join(sorted(langs))}" for name, langs in offered.items())
        raise ValueError(
            f"{', '.join(problems)} {'is' if len(problems) == 1 else 'are'} offered by no configured corpus source "
            f"({lists}). Pick one of those, "
            "or add a source for it: {kind: local, lang: <code>, paths: [...]} or {kind: hf, lang: <code>, dataset: ...}"
        )


def _format_errors(err: ValidationError, raw: dict[str, Any]) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not (isinstance(p, str) and p in ("handbook", "local", "hf")))
        msg = e["msg"]
        if e["type"] == "missing":
            lines.append(f"  {loc}: missing key (required)")
        elif e["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown key (check the spelling against params.yaml)")
        else:
            lines.append(f"  {loc}: {msg} (got {e.get('input')!r})")
    return "\n".join(lines)


def validate(raw: dict[str, Any], origin: str = "params") -> Params:
    if not isinstance(raw, dict):
        raise ParamsError(f"{origin}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(f"{origin} is invalid:\n{_format_errors(err, raw)}") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {err}") from None
    return data or {}


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Read, overlay and validate a params file."""
    raw = read_yaml(path)
    if overrides:
        raw = deep_merge(raw, overrides)
    return validate(raw, str(path))


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def profile(name: str) -> dict[str, Any]:
    path = PROFILES_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
        raise ParamsError(f"unknown profile {name!r}; available: {', '.join(known)}")
    return read_yaml(path)


def apply_profile(name: str, params_path: str | Path = "params.yaml") -> Params:
    """Overlay a named profile onto a params file in place (validated first)."""
    merged = deep_merge(read_yaml(params_path), profile(name))
    params = validate(merged, f"{params_path} + profile {name}")
    Path(params_path).write_text(yaml.safe_dump(merged, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return params


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m warmstart.config", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="validate a params file")
    c.add_argument("params", nargs="?", default="params.yaml")
    a = sub.add_parser("apply-profile", help="overlay a profile onto a params file in place")
    a.add_argument("name")
    a.add_argument("params", nargs="?", default="params.yaml")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "check":
            params = load_params(args.params)
            try:
                check_languages(params)
            except ValueError as err:
                raise ParamsError(f"{args.params}: {err}") from None
            print(f"{args.params}: ok")
        else:
            apply_profile(args.name, args.params)
            print(f"{args.params}: applied profile {args.name}")
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
