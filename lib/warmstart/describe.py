"""What ran, in words: languages, the base model, the training text and its licence, the title.

Nothing here knows which study ran: language names are the English names of
the BCP-47 codes (Babel's CLDR data); the base model is described from
``base.source``/``base.model_id`` and the base stage's record
(``reports/base/base.json``: family, parameter count); the training text from
``corpus.sources`` and the corpus stage's record of what it read
(``reports/corpus/corpus.json``). The report, the model card, the probes and
the stages' fragments all describe the run through these functions.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

# Sources whose text and licence the project knows, by Debian package name (the corpus metrics'
# ``sources.handbook.package``). Other sources (local files, HF datasets) carry their own licence.
KNOWN_SOURCES = {
    "debian-handbook": {"title": "the Debian Administrator's Handbook", "licence": "GPL-2+ or CC-BY-SA-3.0"},
}
SEE_DATASET = "see the dataset"


class ReportError(ValueError):
    """Bad input to the report or the model card (a malformed fragment, a missing record, no evaluated run)."""


# ---------------------------------------------------------------- formatting


def fmt(v: Any) -> str:
    """A table cell as text: floats to 4 significant digits (scientific when large or tiny), None as '–'."""
    if hasattr(v, "item"):
        v = v.item()
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    if isinstance(v, float):
        if math.isinf(v):
            return "∞"
        if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
            return f"{v:.3e}"
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.1f}"
    return str(v)


def fmt_num(v: Any, digits: int = 3) -> str:
    """A number at ``digits`` decimals ('–' for None/NaN, '∞' for inf)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "∞"
    return f"{float(v):.{digits}f}"


def fmt_ci(value: Any, ci: Any = None, digits: int = 3, suffix: str = "") -> str:
    """'1.844 [1.801, 1.889]': a value and its 95% interval at ``digits`` decimals (the value alone without one)."""
    v = fmt_num(value, digits) + suffix
    if v.startswith("–") or not ci or len(ci) != 2 or any(c is None for c in ci):
        return v
    return f"{v} [{fmt_num(ci[0], digits)}{suffix}, {fmt_num(ci[1], digits)}{suffix}]"


def fmt_flops(v: Any, per_s: bool = True) -> str:
    """FLOP counts and rates in SI units: 91.2 GFLOP/s, 4.68 TFLOP."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    unit = "FLOP/s" if per_s else "FLOP"
    for prefix, div in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return f"{v / div:.3g} {prefix}{unit}"
    return f"{v:.3g} {unit}"


def duration(s: Any) -> str | None:
    if s is None:
        return None
    s = float(s)
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def size_label(n: int) -> str:
    """A parameter count as people write it: 2,826,752 -> '2.8M', 12,247,782,400 -> '12.2B'."""
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            v = n / div
            return (f"{v:.1f}" if v < 99.95 else f"{v:.0f}").removesuffix(".0") + unit
    return str(n)


def article(word: str) -> str:
    """'a' or 'an' before ``word`` as it is read aloud ('an 8B-parameter', 'an 11M-parameter', 'a Llama')."""
    digits = re.match(r"\d+", word)
    if digits:
        n = digits.group()
        return "an" if n[0] == "8" or n in ("11", "18") else "a"
    return "an" if word[:1].upper() in tuple("AEIOU") else "a"


def join_words(items: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = list(items)
    if len(items) < 2:
        return "".join(items) or "–"
    return ", ".join(items[:-1]) + " and " + items[-1]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _is_local(ref: str) -> bool:
    """A model or dataset reference that is a path, not a hub id."""
    return ref.startswith(("/", ".", "~")) or os.path.isdir(ref)


# ---------------------------------------------------------------- what ran: languages, model, corpus


class Language(NamedTuple):
    code: str  # the BCP-47 code of the params: "cs-CZ"
    iso: str  # its ISO 639 language subtag (the model card's metadata): "cs"
    name: str  # its English name (CLDR, through Babel): "Czech"; the code itself when unknown

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"


def language(code: str) -> Language:
    """``language("nb-NO") == Language("nb-NO", "nb", "Norwegian Bokmål")``."""
    from babel import Locale

    iso = code.split("-")[0]
    return Language(code, iso, Locale("en").languages.get(iso) or code)


def language_name_in(code: str, display: str) -> str:
    """The name of language ``code`` written in language ``display``, capitalised as a label:
    ``language_name_in("en-US", "cs-CZ") == "Angličtina"``; the English name when CLDR has none."""
    from babel import Locale, UnknownLocaleError

    try:
        name = Locale.parse(display.replace("-", "_")).languages.get(code.split("-")[0])
    except (ValueError, UnknownLocaleError):
        name = None
    return name[:1].upper() + name[1:] if name else language(code).name


def arch_name(config: Mapping) -> str | None:
    """The model family of a HF ``config.json``: ``LlamaForCausalLM`` -> 'Llama' (else from ``model_type``)."""
    for a in config.get("architectures") or []:
        m = re.fullmatch(r"(\w+?)(For[A-Z]\w*|LMHeadModel|Model)", a)
        if m:
            return m.group(1)
    mt = config.get("model_type")
    if not mt:
        return None
    try:
        from transformers import CONFIG_MAPPING

        return CONFIG_MAPPING[mt].__name__.removesuffix("Config")
    except (ImportError, KeyError):
        return mt


def safetensors_params(model_dir: str | Path) -> int | None:
    """Parameters stored in a model dir's ``*.safetensors`` files (their headers only), or None without any."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    n = 0
    for f in files:
        with open(f, "rb") as fh:
            header = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
        n += sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    return n


@dataclass(frozen=True)
class ModelInfo:
    """What is known of a model: trained here (``source`` tiny) or loaded (hf, ``model_id``), family, size."""

    source: str
    model_id: str | None = None
    arch: str | None = None  # "Llama"
    architecture: str | None = None  # "LlamaForCausalLM"
    params: int | None = None

    @property
    def noun(self) -> str:
        """'2.8M-parameter Llama', or as much of it as is known."""
        size = f"{size_label(self.params)}-parameter " if self.params else ""
        return size + (self.arch or "language model")

    @property
    def name(self) -> str | None:
        """The loaded model's hub id (a local dir's name); None for a model trained here."""
        if self.source != "hf" or not self.model_id:
            return None
        return Path(self.model_id.rstrip("/")).name if _is_local(self.model_id) else self.model_id

    def title_phrase(self) -> str:
        """'a 2.8M-parameter Llama' or 'mistralai/Mistral-Nemo-Base-2407 (12.2B-parameter Mistral)'."""
        return f"{self.name} ({self.noun})" if self.name else f"{article(self.noun)} {self.noun}"

    def describe(self, source_lang: Language) -> str:
        """One phrase on the model and where it comes from."""
        noun = f"{article(self.noun)} {self.noun}"
        if self.name:
            where = f"the local directory {self.model_id}" if _is_local(self.model_id or "") else "the Hugging Face Hub"
            return f"{self.model_id}, {noun} loaded from {where}"
        return f"{noun} pretrained here, from random weights, on the {source_lang.name} text of the corpus"


def model_info(config: Mapping, params: int | None, source: str = "tiny", model_id: str | None = None) -> ModelInfo:
    archs = config.get("architectures") or [None]
    return ModelInfo(source, model_id, arch_name(config), archs[0], params)


def stage_record(params: Any, stage: str, name: str) -> dict:
    """A stage's details file ``reports/<stage>/<name>`` ({} before the stage ran)."""
    return _read_json(params.report_path(stage, name))


def base_model(params: Any) -> ModelInfo:
    """The base model of the run: ``base.source``/``model_id``; family and parameter count from the base stage's
    record (``reports/base/base.json``: ``model_type``, ``architectures``, ``params``), never from model files."""
    record = stage_record(params, "base", "base.json")
    config = {"model_type": record.get("model_type"), "architectures": record.get("architectures")}
    return model_info(config, record.get("params"), params.base.source, params.base.model_id)


@dataclass(frozen=True)
class CorpusSource:
    kind: str  # handbook | local | hf
    text: str  # "the Debian Administrator's Handbook (Debian package debian-handbook 12.0.3, sha256 0123456789ab…)"
    licence: str
    dataset: str | None = None  # a Hugging Face dataset id (the model card's ``datasets`` metadata)


def _handbook(recorded: Mapping, version: str | None) -> CorpusSource:
    if not recorded.get("package"):  # no corpus metrics yet: what the params ask for
        from warmstart.data.handbook import PACKAGE

        recorded = {"package": PACKAGE, "version": version}
    known = KNOWN_SOURCES.get(recorded["package"], {})
    what = f"Debian package {recorded['package']}" + (f" {recorded['version']}" if recorded.get("version") else "")
    if recorded.get("sha256"):
        what += f", sha256 {recorded['sha256'][:12]}…"
    licence = known.get("licence", "see the package's copyright file")
    return CorpusSource("handbook", f"{known.get('title', recorded['package'])} ({what})", licence)


def corpus_sources(params: Any) -> list[CorpusSource]:
    """Every ``corpus.sources`` entry described; the handbook's version and checksum from the corpus stage's record
    of its sources (``reports/corpus/corpus.json`` or ``reports/metrics/corpus.json``)."""
    recorded = (stage_record(params, "corpus", "corpus.json").get("sources") or {}).get("handbook") or {}
    out = []
    for src in params.corpus.sources:
        if src.kind == "handbook":
            out.append(_handbook(recorded, src.version))
            continue
        lang = language(params.resolve_lang(src.lang)).name
        if src.kind == "local":
            out.append(CorpusSource("local", f"local {lang} files ({', '.join(src.paths)})", SEE_DATASET))
        else:
            conf = f" (configuration {src.name})" if src.name else ""
            out.append(
                CorpusSource(
                    "hf",
                    f"the dataset {src.dataset}{conf}, split {src.split}, for {lang}",
                    SEE_DATASET,
                    None if _is_local(src.dataset) else src.dataset,
                )
            )
    return out


def report_title(params: Any, base: ModelInfo | None = None) -> str:
    """``report.title`` verbatim when set; else 'Warm-starting a 2.8M-parameter Llama from English to Czech'."""
    if params.report.title:
        return params.report.title
    base = base or base_model(params)
    src, tgt = language(params.shared.source_lang), language(params.shared.target_lang)
    return f"Warm-starting {base.title_phrase()} from {src.name} to {tgt.name}"
