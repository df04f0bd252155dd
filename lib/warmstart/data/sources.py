"""Corpus sources behind one interface: each yields :class:`Document` objects.

- ``handbook``: the Debian handbook, every corpus language, chapters as documents;
- ``local``: ``.txt`` files (one document each, paragraphs split at blank
  lines) and ``.jsonl`` files (one document per line), given as files,
  directories or globs;
- ``hf``: a Hugging Face dataset through ``datasets.load_dataset`` (a hub id
  on a cluster, or a local directory / ``save_to_disk`` folder here).

Bad files (empty, binary, not UTF-8) and bad ``.jsonl`` lines (not JSON, not
an object, no text field) raise :class:`BadFileError`, or are counted and
skipped when ``corpus.on_bad_file`` is ``skip`` (the stage metrics list them).
"""

from __future__ import annotations

import glob
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warmstart.config import HandbookSource, HFSource, LocalSource, Params
from warmstart.data import handbook
from warmstart.data.handbook import Paragraph
from warmstart.io import sha256sum

_PARA_SPLIT = re.compile(r"\n\s*\n")
_WS = re.compile(r"\s+")


class BadFileError(ValueError):
    """A corpus file that is empty, binary or not UTF-8."""


@dataclass(frozen=True)
class Document:
    doc: str  # split unit: same id across languages for parallel sources
    page: str  # finer id inside the document (handbook page, file, row)
    lang: str
    paragraphs: tuple[Paragraph, ...]


@dataclass
class SourceReport:
    """What reading the sources found, for the stage metrics."""

    handbook: dict | None = None
    skipped_files: list[dict] = field(default_factory=list)
    skipped_lines: list[dict] = field(default_factory=list)  # the first MAX_LISTED; all are counted
    skipped_line_count: int = 0

    MAX_LISTED = 100

    def skip_line(self, path: Path, line: int, reason: str) -> None:
        self.skipped_line_count += 1
        if len(self.skipped_lines) < self.MAX_LISTED:
            self.skipped_lines.append({"path": str(path), "line": line, "reason": reason})


def split_paragraphs(text: str) -> tuple[Paragraph, ...]:
    return tuple(Paragraph(p, "text") for p in (_WS.sub(" ", x).strip() for x in _PARA_SPLIT.split(text)) if p)


def decode_file(path: Path) -> str:
    """UTF-8 text of a file, or BadFileError saying what is wrong with it."""
    data = path.read_bytes()
    if not data.strip():
        raise BadFileError(f"{path} is empty")
    if b"\x00" in data[:65536]:
        raise BadFileError(f"{path} is binary (contains NUL bytes), not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadFileError(f"{path} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start})") from None


def check_file(path: Path) -> None:
    """:func:`decode_file`'s checks in a stream (a large ``.jsonl`` is never held whole): BadFileError if the file
    is empty, binary or not UTF-8."""
    import codecs

    dec = codecs.getincrementaldecoder("utf-8")()
    seen, offset = False, 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            if offset == 0 and b"\x00" in block[:65536]:
                raise BadFileError(f"{path} is binary (contains NUL bytes), not text")
            try:
                dec.decode(block)
            except UnicodeDecodeError as err:
                at = offset + err.start
                raise BadFileError(f"{path} is not UTF-8 text (byte 0x{block[err.start]:02x} at offset {at})") from None
            seen = seen or bool(block.strip())
            offset += len(block)
        try:
            dec.decode(b"", final=True)
        except UnicodeDecodeError:
            raise BadFileError(f"{path} is not UTF-8 text (truncated character at offset {offset})") from None
    if not seen:
        raise BadFileError(f"{path} is empty")


def _lines(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8", newline="") as fh:
        yield from (line.rstrip("\r\n") for line in fh)


def expand_paths(patterns: list[str]) -> list[Path]:
    files: list[Path] = []
    for pat in patterns:
        p = Path(pat)
        if any(ch in pat for ch in "*?["):
            hits = [Path(h) for h in sorted(glob.glob(pat, recursive=True)) if Path(h).is_file()]
        elif p.is_dir():
            hits = sorted(x for x in p.rglob("*") if x.is_file() and x.suffix in (".txt", ".jsonl"))
        elif p.is_file():
            hits = [p]
        else:
            raise FileNotFoundError(f"corpus source path does not exist: {pat}")
        if not hits:
            raise FileNotFoundError(f"corpus source path {pat!r} matches no .txt or .jsonl file")
        files.extend(hits)
    return files


def _local_documents(src: LocalSource, lang: str, on_bad: str, report: SourceReport) -> Iterator[Document]:
    for path in expand_paths(src.paths):
        if path.suffix not in (".txt", ".jsonl"):
            raise BadFileError(f"{path}: unsupported corpus file type {path.suffix!r} (use .txt or .jsonl)")
        try:
            if path.suffix == ".txt":
                text = decode_file(path)  # one document: read whole
            else:
                check_file(path)  # checked first, so a bad file is skipped whole, as before
        except BadFileError as err:
            if on_bad == "skip":
                report.skipped_files.append({"path": str(path), "reason": str(err)})
                continue
            raise BadFileError(f"{err}; set corpus.on_bad_file: skip to count and skip such files") from None
        if path.suffix == ".txt":
            yield Document(doc=path.stem, page=str(path), lang=lang, paragraphs=split_paragraphs(text))
            continue
        for i, line in enumerate(_lines(path), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                reason = None
            except json.JSONDecodeError as err:
                reason = f"not valid JSON ({err.msg})"
            else:
                if not isinstance(rec, dict) or src.text_field not in rec:
                    reason = f"record has no {src.text_field!r} field (corpus.sources text_field)"
                elif src.id_field and src.id_field not in rec:
                    reason = f"record has no {src.id_field!r} field (corpus.sources id_field)"
            if reason is not None:
                if on_bad == "skip":
                    report.skip_line(path, i, reason)
                    continue
                raise BadFileError(f"{path}:{i}: {reason}; set corpus.on_bad_file: skip to count and skip such lines")
            doc = str(rec[src.id_field]) if src.id_field else f"{path.stem}:{i}"
            yield Document(
                doc=doc, page=f"{path}:{i}", lang=lang, paragraphs=split_paragraphs(str(rec[src.text_field]))
            )


def _hf_documents(src: HFSource, lang: str) -> Iterator[Document]:
    import datasets

    path = Path(src.dataset)
    if path.is_dir() and (path / "dataset_info.json").exists() and not any(path.glob("*.jsonl")):
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[src.split]
    else:
        kwargs = {"trust_remote_code": True} if src.trust_remote_code else {}
        ds = datasets.load_dataset(src.dataset, src.name, split=src.split, **kwargs)
    if src.text_field not in ds.column_names:
        raise ValueError(f"dataset {src.dataset!r} has no column {src.text_field!r}; columns: {ds.column_names}")
    for i, rec in enumerate(ds):
        if src.max_documents is not None and i >= src.max_documents:
            break
        doc = str(rec[src.id_field]) if src.id_field else f"{path.name or src.dataset}:{i}"
        yield Document(
            doc=doc, page=f"{src.dataset}:{i}", lang=lang, paragraphs=split_paragraphs(str(rec[src.text_field]))
        )


def _handbook_documents(src: HandbookSource, langs: list[str], report: SourceReport) -> Iterator[Document]:
    deb = handbook.fetch(src.version, src.deb_path)
    pages = handbook.read_html(deb, langs)
    report.handbook = {
        "package": handbook.PACKAGE,
        "version": handbook.deb_version(deb),
        "sha256": sha256sum(deb),
        "file": deb.name,
    }
    wanted = set(src.documents) if src.documents is not None else None
    found: set[str] = set()
    for lang in langs:
        for name in sorted(pages[lang]):
            if name == "index":
                continue  # title page: table of contents and legal boilerplate
            page = handbook.parse_page(name, pages[lang][name])
            found.add(page.chapter)
            if wanted is not None and page.chapter not in wanted:
                continue
            yield Document(doc=page.chapter, page=page.page, lang=lang, paragraphs=page.paragraphs)
    if wanted is not None and wanted - found:
        raise ValueError(
            f"corpus.sources[handbook].documents: unknown chapters {sorted(wanted - found)}; known: {sorted(found)}"
        )


def iter_documents(params: Params, report: SourceReport) -> Iterator[Document]:
    """All documents of all sources, for the corpus languages."""
    check_languages(params)
    langs = params.languages
    for src in params.corpus.sources:
        if isinstance(src, HandbookSource):
            yield from _handbook_documents(src, langs, report)
            continue
        lang = params.resolve_lang(src.lang)
        if isinstance(src, LocalSource):
            yield from _local_documents(src, lang, params.corpus.on_bad_file, report)
        else:
            yield from _hf_documents(src, lang)


def offered_languages(src: Any, params: Params) -> tuple[str, ...]:
    """The corpus languages a source can provide: the handbook's list, or a local/HF source's one ``lang``."""
    if src.kind == "handbook":  # by kind, the sources' discriminator
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
