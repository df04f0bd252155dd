"""The params sections of the data, the tokenizer, the models and the study's training runs.

``shared``, ``corpus``, ``tokenizer``, ``base``, ``vocab_swap``, ``pretrain`` and ``study`` (with its arms), and
the base class every section shares (unknown keys are errors, values are frozen). The later stages' sections are
in :mod:`warmstart.config.spikes` and :mod:`warmstart.config.downstream`; :class:`~warmstart.config.params.Params`
puts them together.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

LANG_PATTERN = r"^[a-z]{2,3}(-[A-Z]{2})?$"
LangCode = Annotated[str, Field(pattern=LANG_PATTERN)]


def _loc(loc: tuple[Any, ...], raw: Any) -> str:
    """A dotted error location; a list item that has a name is shown by it (``pretrain.phases[phase2].lr``)."""
    out, node = "", raw
    for p in loc:
        if isinstance(p, str) and p in ("handbook", "local", "hf"):  # the source kind's union tag
            continue
        item = node[p] if isinstance(node, (list, dict)) and (isinstance(p, int) or p in node) else None
        if isinstance(p, int) and isinstance(node, list):
            named = item.get("name") if isinstance(item, dict) else None
            out += f"[{named}]" if isinstance(named, str) else f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
        node = item
    return out


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
    # LSH bands: datasketch's choice for near_threshold, weighing missed pairs by this (0.5: its default)
    false_negative_weight: float = Field(default=0.5, gt=0.0, lt=1.0)
    # a band-sharing candidate is a duplicate only if its MinHash Jaccard estimate is >= verify; None: any
    verify: float | None = Field(default=None, gt=0.0, le=1.0)


class Executor(_Section):
    """Where the corpus stage's filter pass runs (datatrove executors, :mod:`warmstart.data.engine`)."""

    kind: Literal["local", "slurm"] = "local"
    tasks: int | None = Field(default=None, ge=1)  # shards of the filter pass; None: corpus.workers
    slurm: dict[str, Any] = {}  # SlurmPipelineExecutor arguments (partition, time, cpus_per_task, ...)


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
    workers: int = Field(default=1, ge=1)  # local processes for language ID and dedup signatures
    executor: Executor = Executor()


# ---------------------------------------------------------------- tokenize


class Tokenize(_Section):
    """Each corpus split tokenized once per tokenizer into memory-mapped shards (``data/tokens``)."""

    # tokenizer -> languages (codes, or the words source/target) whose splits it tokenizes; tokenizers:
    # ``target`` (data/tokenizer/target) and ``base`` (the base model's: data/tokenizer/source for the tiny
    # base, base.tokenizer_id or base.model_id for a Hugging Face one)
    corpora: dict[Literal["target", "base"], list[str]] = Field(min_length=1)
    splits: list[Literal["train", "val", "test"]] = Field(default=["train"], min_length=1)
    # tokenizer -> languages whose train split is also tokenized as whole documents (paragraphs joined), the
    # ``train-documents`` split: what the context stage's long fine-tune reads
    documents: dict[Literal["target", "base"], list[str]] = {"target": ["target"]}
    workers: int = Field(default=1, ge=1)  # encoding processes; 1: in this process, on the tokenizer's threads
    batch_docs: int = Field(default=1024, ge=1)  # documents per encoded batch (memory: 2 x workers batches)
    batch_chars: int = Field(default=8_000_000, ge=1)  # ... and at most ~this many characters (long documents)
    shard_tokens: int = Field(default=1 << 28, ge=1)  # tokens per shard file

    @field_validator("corpora")
    @classmethod
    def _nonempty(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        empty = [k for k, langs in v.items() if not langs]
        if empty:
            raise ValueError(f"tokenize.corpora: {empty} list no language")
        return v


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
    max_train_bytes: int | None = Field(default=None, ge=1)  # train on a streamed sample of about this many bytes
    fertility_bytes: int = Field(default=16_000_000, ge=1000)  # leading test text per language, streamed
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
    rope_theta: float = Field(default=10_000.0, gt=0)  # Lucie: 500,000
    initializer_range: float = Field(default=0.02, gt=0, le=1)  # std of the initial weights

    @model_validator(mode="after")
    def _shapes(self) -> TinyModel:
        check_attention_shape(self.hidden, self.heads, self.kv_heads)
        return self


class Optim(_Section):
    """One training phase's schedule and optimiser (see warmstart.train.config.TrainConfig)."""

    steps: int = Field(ge=1)
    lr: float = Field(gt=0, le=1.0)
    warmup_steps: int = Field(default=0, ge=0)  # in a later phase: re-warming (Ibrahim et al. 2024)
    lr_schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    decay_steps: int = Field(default=0, ge=0)  # wsd: the final linear decay (the annealing of a WSD schedule)
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    optimizer: Literal["adamw", "lion"] = "adamw"
    weight_decay: float = Field(default=0.1, ge=0)
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)  # Adam (Lion: its interpolation and momentum betas)
    eps: float = Field(default=1e-8, gt=0, le=1e-2)  # Lucie: 1e-5
    no_decay: list[str] = [r"norm", r"\.bias$", r"embed_tokens"]  # regexes: parameters without weight decay

    @model_validator(mode="after")
    def _warmup(self) -> Optim:
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be <= steps ({self.steps})")
        if self.lr_schedule == "wsd" and not 0 < self.decay_steps <= self.steps - self.warmup_steps:
            raise ValueError(f"wsd needs 0 < decay_steps <= steps - warmup_steps, got {self.decay_steps}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be in [0, 1), got {list(self.betas)}")
        for rx in self.no_decay:
            re.compile(rx)
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


class TokDistil(_Section):
    """Token Distillation's settings (``vocab_swap.tokdistil``; :class:`warmstart.vocab_swap.TokDistilOptions`)."""

    start: Literal["fvt", "focus"] = "focus"  # the heuristic whose rows it starts from
    layers: list[int] = Field(default=[1], min_length=1)  # output_hidden_states indices: 1..L or -L..-1
    snippets: int = Field(default=8, ge=1, le=4096)  # per new token, from the target training text
    snippet_len: int = Field(default=16, ge=2, le=8192)  # old-tokenizer tokens per snippet
    steps: int = Field(default=6, ge=1, le=10_000)  # full-batch Adam steps per batch of tokens
    lr: float = Field(default=0.03, gt=0, le=10)  # peak learning rate, cosine decay to 0
    batch_tokens: int = Field(default=256, ge=1)  # tokens per step: all their snippets in one forward
    output: Literal["start", "ce"] = "start"  # untied head rows: the start's, or next-token cross-entropy

    @field_validator("layers")
    @classmethod
    def _no_input_layer(cls, v: list[int]) -> list[int]:
        if 0 in v:
            raise ValueError("layer 0 is the input embedding: use 1..L or -L..-1")
        return v


class VocabSwap(_Section):
    methods: list[Literal["random", "exact", "fvt", "focus", "omp", "hf-default", "tokdistil"]] = Field(min_length=1)
    pad_multiple: int = Field(default=64, ge=1, le=4096)
    omp_k: int = Field(default=8, ge=1, le=256)  # anchors per token for omp
    fasttext_dim: int = Field(default=64, ge=8, le=1024)  # focus: gensim fastText vectors
    fasttext_epochs: int = Field(default=5, ge=1, le=100)
    hf_mean_resizing: bool = True  # hf-default: resize_token_embeddings(mean_resizing=...), transformers' default
    tokdistil: TokDistil = TokDistil()
    neighbours: int = Field(default=12, ge=1, le=200)  # rows of the nearest-neighbour sanity table
    eval_bytes: int = Field(default=32_000, ge=1000)  # test text for step-0 bits per byte, per language
    text_bytes: int = Field(default=64_000_000, ge=1000)  # focus/tokdistil: leading target train text, streamed

    @field_validator("methods")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"methods repeat: {v}")
        return v


class BatchRamp(_Section):
    """Megatron's ``--rampup-batch-size start increment samples`` (Lucie: 256, 64 over 10M samples): rows per
    step start at ``start`` and grow by ``increment`` until ``samples`` rows are consumed, then the full batch."""

    start: int = Field(ge=1)
    increment: int = Field(ge=1)
    samples: int = Field(ge=1)


PHASE_NAME = r"[a-z][a-z0-9_-]*"


class Phase(Optim):
    """One phase of every study run's training (``pretrain.phases``): a schedule and optimiser, the
    parameters it trains, its data mix and its objective. Phases run in order, each from the last one's model
    with a fresh optimiser (a warm-up in a later phase re-warms) and a fresh data stream."""

    name: str = Field(pattern=f"^{PHASE_NAME}$")
    # regexes on parameter names: only these train (embed_tokens, lm_head: NorMistral's realignment); [] = every
    # parameter. scratch runs train everything in every phase (they have nothing to realign)
    train: list[str] = []
    mix: dict[str, float] = {"target": 1.0}  # row weights over named corpora: target, source, an extra language
    masked_share: float | None = Field(default=None, ge=0, le=1)  # hybrid objective; None: pretrain.masked_share
    batch_ramp: BatchRamp | None = None  # Megatron batch-size ramp within this phase

    @model_validator(mode="after")
    def _phase(self) -> Phase:
        bad = {k: v for k, v in self.mix.items() if not v >= 0}
        if not self.mix or bad or not sum(self.mix.values()) > 0:
            raise ValueError(
                f"phase {self.name}: mix weights must be >= 0 and sum to a positive number, got {dict(self.mix)}"
            )
        for rx in self.train:
            try:
                re.compile(rx)
            except re.error as e:
                raise ValueError(f"phase {self.name}: train regex {rx!r}: {e}") from None
        return self

    @property
    def corpora(self) -> list[str]:
        """The corpora this phase reads (weight > 0), in the mix's order."""
        return [k for k, v in self.mix.items() if v > 0]


class Pretrain(_Section):
    """The warm-start study: every swap method, plus `scratch` and `original`, same bytes and phases."""

    num_processes: int = Field(default=1, ge=1)  # >1: `accelerate launch` as a process
    seq_len: int = Field(ge=8)
    micro_batch: int = Field(ge=1)
    grad_accum: int = Field(default=1, ge=1)
    phases: list[Phase] = Field(min_length=1)  # in order (NorMistral: embeddings and head, then everything)
    masked_share: float = Field(default=0.0, ge=0, le=1)  # hybrid masked-causal objective (NorMistral)
    doc_mask: bool = False
    tag_every: int | None = Field(default=40, ge=1)  # step-tagged checkpoints for the evaluation
    log_every: int = Field(default=5, ge=1)
    # instability signals (attention logit, log Z, update ratio) in the log every this many steps; 0: off.
    # The spikes stage says, per event, which moved first (issue 12's "context for each event").
    signals_every: int = Field(default=5, ge=0)
    z_loss: float = Field(default=0.0, ge=0)  # PaLM z-loss coefficient (e.g. 1e-4); 0: off
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    # scratch's initial model: the base architecture with these changed (null: the base's own)
    scratch_init_range: float | None = Field(default=None, gt=0, le=1)  # std of the initial weights
    scratch_rope_theta: float | None = Field(default=None, gt=0)  # Lucie: 500,000

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        if isinstance(data, dict) and {"phase1", "phase2", "phase1_train_only"} & set(data):
            raise ValueError(
                "pretrain.phase1/phase2/phase1_train_only became pretrain.phases, a list of named phases "
                "(e.g. [{name: phase1, train: [embed_tokens, lm_head], steps: 40, ...}, {name: phase2, ...}]): "
                "see params.yaml"
            )
        return data

    @model_validator(mode="after")
    def _names(self) -> Pretrain:
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise ValueError(f"pretrain.phases: phase names repeat: {names}")
        unit = self.micro_batch * self.num_processes
        for p in self.phases:
            r = p.batch_ramp
            if r and (r.start % unit or r.increment % unit):
                raise ValueError(
                    f"pretrain.phases[{p.name}].batch_ramp: start ({r.start}) and increment ({r.increment}) must be "
                    f"multiples of micro_batch x num_processes = {unit}"
                )
        return self

    def phase(self, name: str) -> Phase:
        for p in self.phases:
            if p.name == name:
                return p
        raise KeyError(f"no phase {name!r}; pretrain.phases are {[p.name for p in self.phases]}")

    def with_overrides(self, overrides: dict[str, Any], where: str = "arm") -> Pretrain:
        """These settings with an arm's ``overrides``: top-level keys replace; ``phases`` maps phase names to
        the fields they change, and a name that is not a phase yet appends a new phase (all its fields given)."""
        data = self.model_dump()
        for key, value in overrides.items():
            if key != "phases":
                data[key] = value
                continue
            if not isinstance(value, dict):
                raise ValueError(f"{where}.phases: a mapping of phase name to the fields it changes, got {value!r}")
            phases = {p["name"]: p for p in data["phases"]}
            for name, fields in value.items():
                if not isinstance(fields, dict):
                    raise ValueError(f"{where}.phases.{name}: a mapping of phase fields, got {fields!r}")
                phases[name] = {**phases.get(name, {}), **fields, "name": name}
            data["phases"] = list(phases.values())
        try:
            return Pretrain.model_validate(data)
        except ValidationError as err:
            lines = [
                f"{where}.{_loc(e['loc'], data)}: "
                + ("missing key (a new phase gives every required field)" if e["type"] == "missing" else e["msg"])
                for e in err.errors()
            ]
            raise ValueError("; ".join(lines)) from None


class Arm(_Section):
    """An extra study run: a swap method's model trained with some ``pretrain`` settings changed (any phase
    field through ``phases: {<phase>: {field: value}}``; a phase name not in ``pretrain.phases`` appends one)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    init: str  # a vocab_swap method: the run starts from data/models/swap-<init>

    @model_validator(mode="after")
    def _pretrain_keys(self) -> Arm:
        fixed = {"num_processes", "seq_len", "micro_batch", "grad_accum", "tag_every", "log_every"}
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

    @field_validator("arms", mode="before")
    @classmethod
    def _dropped(cls, v: Any) -> Any:
        """``<arm>: null`` removes an arm (an overlay, a recipe or a test can drop one of params.yaml's)."""
        return {k: a for k, a in v.items() if a is not None} if isinstance(v, dict) else v

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
