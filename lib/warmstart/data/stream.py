"""The trainer's input: jsonl documents tokenized into packed, resumable streams (:mod:`warmstart.data.packing`)."""

from __future__ import annotations

import glob
import json
from typing import Any

from warmstart.data.packing import CorpusStream, PackedStream


def read_documents(files: list[str], text_field: str = "text") -> list[str]:
    """Texts of jsonl files (globs allowed), in file then line order; empty texts dropped."""
    texts = []
    for pattern in files:
        paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not paths:
            raise FileNotFoundError(f"no file matches {pattern!r}")
        for path in paths:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        text = json.loads(line)[text_field]
                        if text:
                            texts.append(text)
    return texts


def build_stream(cfg: Any, tokenizer: Any) -> CorpusStream:
    """Tokenize every corpus of a :class:`~warmstart.train.TrainConfig` and wrap it in a packed, resumable stream."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token; packing needs one")
    streams = {}
    for i, (name, files) in enumerate(cfg.train_files.items()):
        texts = read_documents(files, cfg.text_field)
        if not texts:
            raise ValueError(f"train_files[{name!r}] holds no documents")
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        if cfg.add_bos:
            ids = [[tokenizer.bos_token_id, *x] for x in ids]
        nbytes = [len(t.encode("utf-8")) for t in texts]
        streams[name] = PackedStream(ids, cfg.seq_len, tokenizer.eos_token_id, cfg.seed + i, cfg.shuffle, nbytes)
    return CorpusStream(streams, cfg.corpus_schedule or None, cfg.mix)
