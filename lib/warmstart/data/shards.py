"""Tokenized corpora on disk: token-id shards written once, read by memory map.

A split tokenized with one tokenizer is a directory (nanoGPT's ``.bin`` files,
Megatron's indexed datasets and datatrove's ``.ds`` shards are the models)::

    manifest.json     format, tokenizer fingerprint, dtype, sources with their hashes, totals, shards
    00000.tokens      token ids, raw little-endian uint16 (vocabulary <= 65,536) or uint32, documents back
                      to back, no separators (the reader appends EOS, and BOS where asked)
    00000.ends        uint64, each document's end offset in the shard's tokens (cumulative)
    00000.bytes       uint64, each document's UTF-8 byte count (bits-per-byte accounting)

Writing streams (:func:`tokenize_files`): documents are read a batch at a time (:mod:`warmstart.data.jsonl`),
encoded in ``workers`` processes (or in this one, where ``tokenizers`` uses
its own threads), and appended in order; at most ``2 x workers`` batches are in
flight, so memory does not grow with the corpus. The directory appears whole
or not at all. Reading (:class:`TokenShards`) checks the manifest against the
files before anything is used: a truncated shard, another tokenizer's shards,
a vocabulary wider than the token width, a manifest that does not match its
shards and an empty split are each refused with the path and the numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from warmstart.data.jsonl import ShardError, batches, expand, iter_documents, iter_texts
from warmstart.data.parallel import ordered_map
from warmstart.io import atomic_dir, sha256sum, write_json

FORMAT = "warmstart.tokens/1"
SHARD_TOKENS = 1 << 28  # 256M tokens (512 MiB at uint16) per shard file
BATCH_CHARS = 8_000_000  # characters per encoded batch at most (long documents): ~0.5 GB of encodings
ENCODING_KEYS = ("normalizer", "pre_tokenizer", "model", "added_tokens")  # what decides the ids of a text


# ---------------------------------------------------------------- tokenizer identity


def tokenizer_json(tokenizer: Any) -> str:
    """The ``tokenizers`` JSON of a fast tokenizer (HF wrapper or raw ``tokenizers.Tokenizer``)."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if not hasattr(backend, "to_str"):
        raise ShardError(f"{type(tokenizer).__name__} is not a fast tokenizer: shards need a `tokenizers` backend")
    return backend.to_str()


def fingerprint(tokenizer: Any, below: int | None = None) -> str:
    """SHA-256 over what decides a text's ids (normalizer, pre-tokenizer, model, added tokens); padding,
    truncation and the post-processor (special tokens added around a sequence) do not change shards.
    ``below``: leave out the added tokens with ids from ``below`` on (what a tokenizer was before they were
    added)."""
    spec = json.loads(tokenizer_json(tokenizer))
    if below is not None:
        spec["added_tokens"] = [t for t in spec.get("added_tokens") or [] if t["id"] < below]
    canon = json.dumps({k: spec.get(k) for k in ENCODING_KEYS}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def extends(tokenizer: Any, path: str | Path) -> bool:
    """Whether ``tokenizer`` is the tokenizer of the shards at ``path`` plus special tokens only, each with an
    id past the shards' vocabulary (chat tokens): every id in the shards means the same to it, and a text
    holding none of the new tokens' strings gets the same ids."""
    m = json.loads((Path(path) / "manifest.json").read_text(encoding="utf-8"))
    have = int(m["tokenizer"]["vocab_size"])
    spec = json.loads(tokenizer_json(tokenizer))
    new = [t for t in spec.get("added_tokens") or [] if t["id"] >= have]
    return (
        bool(new) and all(t["special"] for t in new) and fingerprint(tokenizer, have) == m["tokenizer"]["fingerprint"]
    )


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits (vocab_size <= 65,536), else uint32."""
    if vocab_size <= 0:
        raise ShardError(f"vocabulary size must be positive, got {vocab_size}")
    if vocab_size <= 1 << 16:
        return np.dtype("<u2")
    if vocab_size <= 1 << 32:
        return np.dtype("<u4")
    raise ShardError(f"vocabulary of {vocab_size:,} ids does not fit uint32 token shards")


def vocab_size(tokenizer: Any) -> int:
    """Ids the tokenizer can emit: its vocabulary, added tokens included."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    return int(backend.get_vocab_size(with_added_tokens=True))


# ---------------------------------------------------------------- encoding (in workers)

_WORKER: dict[str, Any] = {}


def _init_worker(spec: str, dtype: str, threads: bool) -> None:
    if not threads:
        os.environ["RAYON_NUM_THREADS"] = "1"  # one core per worker process: the pool is the parallelism
    from tokenizers import Tokenizer

    _WORKER["tok"], _WORKER["dtype"] = Tokenizer.from_str(spec), np.dtype(dtype)


def _encode(texts: list[str]) -> tuple[np.ndarray, ...]:
    """One batch: (token ids back to back, tokens per document, UTF-8 bytes per document)."""
    tok, dtype = _WORKER["tok"], _WORKER["dtype"]
    encs = tok.encode_batch_fast(texts, add_special_tokens=False)
    lengths = np.fromiter((len(e.ids) for e in encs), np.uint64, len(encs))
    ids = np.fromiter((i for e in encs for i in e.ids), dtype, int(lengths.sum()))
    nbytes = np.fromiter((len(t.encode("utf-8")) for t in texts), np.uint64, len(texts))
    return ids, lengths, nbytes


# ---------------------------------------------------------------- writing


class _ShardWriter:
    """Appends encoded batches to shard files under ``root``, starting a new shard past ``shard_tokens``."""

    def __init__(self, root: Path, dtype: np.dtype, shard_tokens: int, roles: bool = False):
        self.root, self.dtype, self.shard_tokens = root, dtype, shard_tokens
        self.exts = ("tokens", "ends", "bytes", "roles") if roles else ("tokens", "ends", "bytes")
        self.shards: list[dict] = []
        self._files: tuple | None = None

    def _open(self) -> None:
        name = f"{len(self.shards):05d}"
        self.shards.append({"name": name, "documents": 0, "tokens": 0, "bytes": 0})
        self._files = tuple(open(self.root / f"{name}.{ext}", "wb") for ext in self.exts)

    def add(self, ids: np.ndarray, lengths: np.ndarray, nbytes: np.ndarray, roles: np.ndarray | None = None) -> None:
        offs = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])  # each document's start in ``ids``
        lo = 0
        while lo < len(lengths):
            if self._files is None or self.shards[-1]["tokens"] >= self.shard_tokens:
                self.close()
                self._open()
            cur = self.shards[-1]
            # documents of this batch that go into the current shard (at least one: a document is never split)
            room = self.shard_tokens - cur["tokens"]
            hi = lo + max(1, int(np.searchsorted(offs[lo + 1 :] - offs[lo], room, side="right")))
            ftok, fends, fbytes = self._files[:3]
            ftok.write(np.ascontiguousarray(ids[offs[lo] : offs[hi]], dtype=self.dtype).tobytes())
            if len(self._files) == 4:  # each token's loss role (warmstart.data.packing.ROLES), one byte each
                self._files[3].write(np.ascontiguousarray(roles[offs[lo] : offs[hi]], dtype=np.uint8).tobytes())
            ends = (cur["tokens"] + offs[lo + 1 : hi + 1] - offs[lo]).astype(np.uint64)
            fends.write(ends.astype("<u8").tobytes())
            fbytes.write(nbytes[lo:hi].astype("<u8").tobytes())
            cur["documents"] += hi - lo
            cur["tokens"] = int(ends[-1])
            cur["bytes"] += int(nbytes[lo:hi].sum())
            lo = hi

    def close(self) -> None:
        if self._files is not None:
            for f in self._files:
                f.close()
            self._files = None


def tokenize_files(
    files: Sequence[str],
    out_dir: str | Path,
    tokenizer: Any,
    *,
    text_field: str = "text",
    workers: int = 1,
    batch_docs: int = 1024,
    shard_tokens: int = SHARD_TOKENS,
    name: str = "",
    documents: bool = False,
    batch_chars: int = BATCH_CHARS,
) -> dict:
    """Tokenize the texts of jsonl ``files`` into shards at ``out_dir``; returns the manifest it wrote.

    Ids are exactly ``tokenizer(texts, add_special_tokens=False)["input_ids"]`` per document. ``out_dir`` is
    replaced only once the new shards are complete; an error leaves what was there untouched. ``documents``:
    each shard document is a whole corpus document (:func:`iter_documents`), not one record. A batch holds at
    most ``batch_docs`` documents and about ``batch_chars`` characters (more only for one longer document).
    """
    if workers < 1 or batch_docs < 1 or shard_tokens < 1 or batch_chars < 1:
        raise ShardError(
            "workers, batch_docs, shard_tokens and batch_chars must be >= 1, got "
            f"{workers}, {batch_docs}, {shard_tokens}, {batch_chars}"
        )
    paths = expand(files)
    spec, size = tokenizer_json(tokenizer), vocab_size(tokenizer)
    dtype = token_dtype(size)
    hashes: dict[str, str] = {}
    with atomic_dir(out_dir) as tmp:
        writer = _ShardWriter(tmp, dtype, shard_tokens)
        try:
            texts = (iter_documents if documents else iter_texts)(paths, text_field, hashes)
            chunks = batches(texts, batch_docs, batch_chars)
            # one worker: this process, on the tokenizer's own threads; more: one thread per worker process
            for ids, lengths, nbytes in ordered_map(
                _encode, chunks, workers, _init_worker, (spec, dtype.str, workers == 1)
            ):
                writer.add(ids, lengths, nbytes)
        finally:
            writer.close()
        if not writer.shards:
            raise ShardError(f"{name or out_dir}: the sources {[str(p) for p in paths]} hold no documents")
        sources = [{"path": str(p), "sha256": hashes[str(p)], "bytes": p.stat().st_size} for p in paths]
        extra = {"text_field": text_field, **({"unit": "document"} if documents else {})}
        manifest = _manifest(name, tokenizer, dtype, sources, writer.shards, **extra)
        write_json(tmp / "manifest.json", manifest)
    return manifest


def write_role_shards(
    items: Iterable[tuple[Sequence[int], Sequence[int], int]],
    out_dir: str | Path,
    tokenizer: Any,
    *,
    name: str = "",
    sources: Sequence[str | Path] = (),
    batch_docs: int = 1024,
    shard_tokens: int = SHARD_TOKENS,
) -> dict:
    """Pre-tokenized documents with a loss role per token (chat items: ``(ids, roles, utf8_bytes)``, e.g. from
    :func:`warmstart.chat.template.encode`) into shards at ``out_dir``, as :func:`tokenize_files` writes text:
    streamed a batch at a time, the directory whole or not at all; each shard also has ``NNNNN.roles`` (uint8,
    one per token) and the manifest ``"roles": true``. ``sources``: the files the items came from (hashed)."""
    size = vocab_size(tokenizer)
    dtype = token_dtype(size)
    paths = [Path(p) for p in sources]

    def checked(item: tuple) -> tuple:
        ids, roles, _ = item
        if len(ids) != len(roles):
            raise ShardError(f"{name or out_dir}: an item has {len(ids)} ids but {len(roles)} roles")
        if len(ids) and max(ids) >= size:
            raise ShardError(f"{name or out_dir}: id {max(ids)} outside the {size}-token vocabulary")
        return item

    with atomic_dir(out_dir) as tmp:
        writer = _ShardWriter(tmp, dtype, shard_tokens, roles=True)
        try:
            for batch in batches(map(checked, items), batch_docs):  # streamed: batch_docs items in memory
                lengths = np.asarray([len(b[0]) for b in batch], np.int64)
                ids = np.concatenate([np.asarray(b[0], np.int64) for b in batch])
                roles = np.concatenate([np.asarray(b[1], np.uint8) for b in batch])
                writer.add(ids, lengths, np.asarray([b[2] for b in batch], np.int64), roles)
        finally:
            writer.close()
        if not writer.shards:
            raise ShardError(f"{name or out_dir}: no items to write")
        sources = [{"path": str(p), "sha256": sha256sum(p), "bytes": p.stat().st_size} for p in paths]
        manifest = _manifest(name, tokenizer, dtype, sources, writer.shards, roles=True)
        write_json(tmp / "manifest.json", manifest)
    return manifest


def _manifest(name: str, tokenizer: Any, dtype: np.dtype, sources: list, shards: list, **extra: Any) -> dict:
    """``manifest.json`` of a written split: format, tokenizer, dtype, ``extra`` fields, sources and totals."""
    return {
        "format": FORMAT,
        "name": name,
        "tokenizer": {"fingerprint": fingerprint(tokenizer), "vocab_size": vocab_size(tokenizer)},
        "dtype": dtype.name,
        **extra,
        "sources": sources,
        "documents": sum(s["documents"] for s in shards),
        "tokens": sum(s["tokens"] for s in shards),
        "bytes": sum(s["bytes"] for s in shards),
        "shards": shards,
    }


# ---------------------------------------------------------------- reading


class TokenShards:
    """A tokenized split, checked and memory-mapped: ``len()`` documents, each read as a slice.

    ``fingerprint``/``vocab_size``: the tokenizer the consumer will train with; shards written by another
    tokenizer, or too narrow for its ids, are refused before any use.
    """

    def __init__(self, path: str | Path, fingerprint: str | None = None, vocab_size: int | None = None):
        self.path = Path(path)
        mpath = self.path / "manifest.json"
        if not mpath.is_file():
            raise ShardError(f"{self.path} holds no manifest.json: not a tokenized split (run the tokenize stage)")
        try:
            m = json.loads(mpath.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ShardError(f"{mpath} is not valid JSON: {e}") from e
        if m.get("format") != FORMAT:
            raise ShardError(f"{mpath}: format {m.get('format')!r}, expected {FORMAT!r}")
        self.manifest = m
        have = m["tokenizer"]["fingerprint"]
        if fingerprint is not None and have != fingerprint:
            raise ShardError(
                f"{self.path} was tokenized by another tokenizer (fingerprint {have[:12]}, the run's is "
                f"{fingerprint[:12]}): re-run the tokenize stage for this tokenizer"
            )
        self.dtype = np.dtype(m["dtype"])
        if vocab_size is not None and vocab_size > np.iinfo(self.dtype).max + 1:
            raise ShardError(
                f"{self.path}: {self.dtype.name} shards cannot hold the ids of a {vocab_size:,}-token vocabulary"
            )
        if not m["shards"] or m["documents"] == 0:
            raise ShardError(f"{self.path}: empty split (no documents)")
        self.has_roles = bool(m.get("roles"))
        self._tokens, self._ends, self._bytes, self._roles, firsts = [], [], [], [], [0]
        for s in m["shards"]:
            arrays = []
            files = [
                ("tokens", self.dtype, s["tokens"]),
                ("ends", "<u8", s["documents"]),
                ("bytes", "<u8", s["documents"]),
            ]
            for ext, dt, count in files + ([("roles", "u1", s["tokens"])] if self.has_roles else []):
                f = self.path / f"{s['name']}.{ext}"
                want = count * np.dtype(dt).itemsize
                got = f.stat().st_size if f.is_file() else None
                if got != want:
                    what = "missing" if got is None else f"{got:,} bytes"
                    raise ShardError(
                        f"{f}: {what}, the manifest says {want:,} (truncated or not this manifest's shard)"
                    )
                arrays.append(np.memmap(f, dtype=dt, mode="r") if count else np.zeros(0, dt))
            toks, ends, nb = arrays[:3]
            if self.has_roles:
                self._roles.append(arrays[3])
            if s["documents"] and (int(ends[-1]) != s["tokens"] or int(nb.sum()) != s["bytes"]):
                raise ShardError(f"{self.path}/{s['name']}: its index does not match the manifest's token/byte counts")
            self._tokens.append(toks)
            self._ends.append(ends)
            self._bytes.append(nb)
            firsts.append(firsts[-1] + s["documents"])
        self._first = np.asarray(firsts, dtype=np.int64)
        if firsts[-1] != m["documents"] or sum(s["tokens"] for s in m["shards"]) != m["tokens"]:
            raise ShardError(f"{mpath}: totals do not add up over its shards")
        self.documents, self.tokens, self.bytes = m["documents"], m["tokens"], m["bytes"]

    def __len__(self) -> int:
        return self.documents

    def _locate(self, i: int) -> tuple[int, int]:
        s = int(np.searchsorted(self._first, i, side="right")) - 1 if len(self._first) > 2 else 0
        return s, i - int(self._first[s])

    def span(self, i: int) -> tuple[int, int, int]:
        """(shard, start, end) of document ``i`` in its shard's tokens."""
        s, j = self._locate(i)
        ends = self._ends[s]
        return s, (int(ends[j - 1]) if j else 0), int(ends[j])

    def length(self, i: int) -> int:
        _, a, b = self.span(i)
        return b - a

    def nbytes(self, i: int) -> int:
        s, j = self._locate(i)
        return int(self._bytes[s][j])

    def doc(self, i: int, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Ids ``lo:hi`` of document ``i`` (no separators), as a read-only view of the map."""
        s, a, b = self.span(i)
        hi = b - a if hi is None else hi
        return self._tokens[s][a + lo : a + hi]

    def shard_tokens(self, s: int) -> np.ndarray:
        """The memory map of shard ``s``'s tokens."""
        return self._tokens[s]

    def shard_roles(self, s: int) -> np.ndarray:
        """The memory map of shard ``s``'s token roles (shards written with roles only)."""
        if not self.has_roles:
            raise ShardError(f"{self.path}: written without token roles")
        return self._roles[s]

    def lengths(self) -> np.ndarray:
        """Tokens of every document (loads the index: 8 bytes per document)."""
        return np.concatenate([np.diff(e, prepend=np.uint64(0)) for e in self._ends]).astype(np.int64)

    def verify(self) -> None:
        """Recompute each source's SHA-256 and compare it with the manifest (reads every source once)."""
        for src in self.manifest["sources"]:
            if sha256sum(Path(src["path"])) != src["sha256"]:
                raise ShardError(f"{self.path}: source {src['path']} changed since it was tokenized")


def is_token_dir(path: str | Path) -> bool:
    return (Path(path) / "manifest.json").is_file()
