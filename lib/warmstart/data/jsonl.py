"""Reading a corpus's jsonl files as texts or whole documents, streamed, and batching them for encoding.

The tokenize stage's writer (:mod:`warmstart.data.shards`) and every reader of a split use these; a source that
is not a JSON object with a string text field is refused by file and line (:class:`ShardError`).
"""

from __future__ import annotations

import array
import bisect
import glob
import hashlib
import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any


class ShardError(ValueError):
    """A tokenized split that cannot be used as it is."""


def expand(files: Sequence[str]) -> list[Path]:
    """Paths of ``files`` (globs allowed, each expanded in sorted order); a pattern matching nothing is an error."""
    out = []
    for pattern in files:
        paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not paths:
            raise FileNotFoundError(f"no file matches {pattern!r}")
        out.extend(Path(p) for p in paths)
    return out


def _record(raw: bytes, path: Path, n: int, text_field: str) -> dict:
    """One jsonl line (line ``n`` of ``path``), checked: a JSON object whose ``text_field`` is a string."""
    try:
        rec = json.loads(raw)
        text = rec[text_field]
    except (ValueError, KeyError, TypeError) as e:
        raise ShardError(f"{path}:{n}: not a JSON object with a {text_field!r} field ({e})") from e
    if not isinstance(text, str):
        raise ShardError(f"{path}:{n}: {text_field!r} is {type(text).__name__}, not a string")
    return rec


def _records(paths: Sequence[Path], text_field: str, hashes: dict[str, str] | None) -> Iterator[tuple[int, dict]]:
    """``(offset, record)`` of every non-blank line of jsonl files, in file then line order; ``offset``: where
    the line starts in the files read end to end. With ``hashes``, each file's SHA-256 is recorded there once
    it has been read in full."""
    at = 0
    for path in paths:
        h = hashlib.sha256()
        try:
            fh = open(path, "rb")
        except OSError as e:
            raise ShardError(f"cannot read source {path}: {e.strerror}") from e
        with fh:
            for n, raw in enumerate(fh, 1):
                h.update(raw)
                if raw.strip():
                    yield at, _record(raw, path, n, text_field)
                at += len(raw)
        if hashes is not None:
            hashes[str(path)] = h.hexdigest()


def iter_texts(paths: Sequence[Path], text_field: str, hashes: dict[str, str] | None = None) -> Iterator[str]:
    """Non-empty texts of jsonl files, in file then line order (blank lines and empty texts skipped).

    With ``hashes``, each file's SHA-256 is recorded there once it has been read in full.
    """
    return (rec[text_field] for _, rec in _records(paths, text_field, hashes) if rec[text_field])


def iter_documents(paths: Sequence[Path], text_field: str, hashes: dict[str, str] | None = None) -> Iterator[str]:
    """Whole documents of a corpus split: the records of one ``doc`` (a record without one is a document by its
    ``id``) joined by a blank line, documents in order of first appearance, records in file order; empty
    documents skipped. A document's records need not be consecutive (the handbook's pages interleave its
    chapters), so this reads twice: pass 1 keeps each record's file offset by document (8 bytes a record),
    pass 2 reads one document at a time. Memory: the offsets and one document, never the split's text."""
    offsets: dict[str, array.array] = {}  # document -> its records' offsets in the files read end to end
    for at, rec in _records(paths, text_field, hashes):  # pass 1
        offsets.setdefault(rec.get("doc") or rec["id"], array.array("q")).append(at)
    bases = list(itertools.accumulate((Path(p).stat().st_size for p in paths[:-1]), initial=0))
    handles = [open(p, "rb") for p in paths]
    try:
        for where in offsets.values():  # pass 2: a document at a time
            texts = []
            for at in where:
                i = bisect.bisect_right(bases, at) - 1
                handles[i].seek(at - bases[i])
                texts.append(_record(handles[i].readline(), paths[i], 0, text_field)[text_field])
            text = "\n\n".join(texts)
            if text:
                yield text
    finally:
        for fh in handles:
            fh.close()


def batches(texts: Iterable[Any], n: int, max_chars: int | None = None) -> Iterator[list[Any]]:
    """Lists of ``n`` texts (or items; the last one shorter), read lazily; with ``max_chars``, a list also ends
    once its texts reach that many characters (a batch of long documents stays bounded; one longer text is a
    batch of its own)."""
    batch: list[Any] = []
    size = 0
    for t in texts:
        batch.append(t)
        size += len(t) if max_chars is not None else 0
        if len(batch) == n or (max_chars is not None and size >= max_chars):
            yield batch
            batch, size = [], 0
    if batch:
        yield batch
