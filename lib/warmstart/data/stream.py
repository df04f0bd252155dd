"""The trainer's input: each corpus memory-mapped from token shards and packed into resumable rows.

A corpus in ``TrainConfig.train_files`` is either a tokenized split (a directory the ``tokenize`` stage wrote,
:mod:`warmstart.data.shards`) or jsonl files, which are tokenized once into ``TrainConfig.token_cache`` (keyed
by the tokenizer's fingerprint and the files' paths, sizes and times) and read from there. Either way the
trainer never holds a corpus in memory: rows are read from the maps (:mod:`warmstart.data.packing`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from warmstart.data.jsonl import expand, iter_texts
from warmstart.data.packing import CorpusStream, MappedDocuments, PackedStream
from warmstart.data.shards import TokenShards, extends, fingerprint, is_token_dir, tokenize_files, vocab_size


def read_documents(files: list[str], text_field: str = "text") -> list[str]:
    """Texts of jsonl files (globs allowed), in file then line order; empty texts dropped. For small inputs:
    the trainer streams its corpora from shards instead."""
    return list(iter_texts(expand(files), text_field))


def cache_key(files: list[str], text_field: str, tokenizer_fp: str) -> str:
    """Names a cached tokenization: the tokenizer, the text field, and each file's path, size and mtime."""
    stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in expand(files)]
    blob = json.dumps([tokenizer_fp, text_field, stats])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@contextlib.contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    """An exclusive lock (``flock``) on ``<path>.lock``: processes that tokenize into one shared cache take turns,
    so a second writer never replaces a directory the first has just put in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f"{path.name}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def open_corpus(
    name: str,
    files: list[str],
    tokenizer: Any,
    cache: str | Path,
    text_field: str = "text",
    main: bool = True,
    barrier: Callable[[], None] | None = None,
) -> TokenShards:
    """The shards of one corpus, checked against ``tokenizer``; jsonl sources are tokenized into ``cache`` first
    (by the main process only; the others wait at ``barrier``)."""
    fp, size = fingerprint(tokenizer), vocab_size(tokenizer)
    if len(files) == 1 and is_token_dir(files[0]):
        # shards of the tokenizer this one extends by special tokens (the chat tokens) read as they are
        return TokenShards(files[0], None if extends(tokenizer, files[0]) else fp, size)
    if any(Path(f).is_dir() for f in files):
        bad = [f for f in files if Path(f).is_dir()]
        raise ValueError(f"train_files[{name!r}]: {bad} is a directory without manifest.json (not tokenized shards)")
    path = Path(cache) / f"{name}-{cache_key(files, text_field, fp)}"
    if main and not is_token_dir(path):
        with cache_lock(path):  # runs that share a cache: the first tokenizes, the others wait, then read
            if not is_token_dir(path):
                tokenize_files(files, path, tokenizer, text_field=text_field, name=name)
    if barrier is not None:
        barrier()
    return TokenShards(path, fp, size)


def build_stream(
    cfg: Any, tokenizer: Any, main: bool = True, barrier: Callable[[], None] | None = None
) -> CorpusStream:
    """The packed, resumable stream of every corpus of a :class:`~warmstart.train.TrainConfig`."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token; packing needs one")
    cache = cfg.token_cache or str(Path(cfg.out_dir) / ".tokens")
    bos = tokenizer.bos_token_id if cfg.add_bos else None
    if cfg.add_bos and bos is None:
        raise ValueError("add_bos is set but the tokenizer has no bos token")
    streams = {}
    with_roles = getattr(cfg, "role_weights", None) is not None
    for i, (name, files) in enumerate(cfg.train_files.items()):
        shards = open_corpus(name, files, tokenizer, cache, cfg.text_field, main, barrier)
        if shards.has_roles and not with_roles:
            raise ValueError(
                f"train_files[{name!r}]: {shards.path} holds chat items with token roles; the run needs "
                "role_weights (the loss weight of each role) to train on them"
            )
        docs = MappedDocuments(shards, tokenizer.eos_token_id, bos)
        streams[name] = PackedStream(
            docs, cfg.seq_len, tokenizer.eos_token_id, cfg.seed + i, cfg.shuffle, with_roles=with_roles
        )
    return CorpusStream(streams, cfg.corpus_schedule or None, cfg.mix)
