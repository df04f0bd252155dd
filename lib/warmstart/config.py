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
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, Union

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
    def _distinct(self) -> "Shared":
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


Source = Annotated[Union[HandbookSource, LocalSource, HFSource], Field(discriminator="kind")]


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


class Params(_Section):
    shared: Shared
    corpus: Corpus
    tokenizer: Tokenizer

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


def from_sections(**sections: Any) -> Params:
    """Validate the section dicts a notebook's parameters cell holds."""
    return validate(dict(sections), "notebook parameters")


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
            load_params(args.params)
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
