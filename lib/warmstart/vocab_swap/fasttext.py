"""fastText vectors of the new tokenizer's tokens: FOCUS's auxiliary embedding space."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from warmstart.vocab_swap.tokens import VocabSwapError, _view


@dataclass(frozen=True)
class FastTextOptions:
    """gensim FastText settings for FOCUS's auxiliary token vectors.

    Defaults follow FOCUS's reference code (deepfocus: 100 dimensions,
    3 epochs, min_count 10; fastText's skip-gram, window 5, n-grams 3-6);
    ``bucket`` is smaller than fastText's 2M to keep memory modest.
    ``workers=1`` makes training reproducible.
    """

    dim: int = 100
    epochs: int = 3
    window: int = 5
    min_count: int = 10
    minn: int = 3
    maxn: int = 6
    bucket: int = 200_000
    workers: int = 1
    sg: int = 1


def _stable_hash(s: str) -> int:
    """Process-independent replacement for ``hash`` (gensim seeds vectors with it)."""
    return int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "little")


def train_fasttext(texts: Iterable[str], new_tok: Any, opts: FastTextOptions = FastTextOptions(), seed: int = 0) -> Any:
    """gensim ``KeyedVectors`` of the new tokenizer's token strings, trained on ``texts``
    tokenised with the new tokenizer (FOCUS's auxiliary embedding space)."""
    try:
        from gensim.models import FastText
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise VocabSwapError("method 'focus' needs gensim (pip install gensim)") from e
    view = _view(new_tok)
    tok = view.tokenizer
    names = view.tokens
    backend = tok.backend_tokenizer
    sentences: list[list[str]] = []
    batch: list[str] = []
    max_len = 10_000  # gensim truncates longer sentences

    def flush() -> None:
        for enc in backend.encode_batch(batch, add_special_tokens=False):
            ids = [i for i in enc.ids if i not in view.special_ids]
            for a in range(0, len(ids), max_len):
                sentences.append([names[i] for i in ids[a : a + max_len]])  # type: ignore[misc]
        batch.clear()

    for t in texts:
        if t:
            batch.append(t)
            if len(batch) >= 1024:
                flush()
    if batch:
        flush()
    if not sentences:
        raise VocabSwapError("method 'focus' needs target-language texts to train fastText on; got none")
    model = FastText(
        vector_size=opts.dim,
        window=opts.window,
        min_count=opts.min_count,
        min_n=opts.minn,
        max_n=opts.maxn,
        bucket=opts.bucket,
        sg=opts.sg,
        workers=opts.workers,
        seed=int(seed),
        hashfxn=_stable_hash,
    )
    model.build_vocab(corpus_iterable=sentences)
    model.train(corpus_iterable=sentences, total_examples=len(sentences), epochs=opts.epochs)
    return model.wv


def _vectors_for(vectors: Any, names: Sequence[str]) -> tuple[list[int], torch.Tensor]:
    """(positions of ``names`` that have a vector, their vectors as float32)."""
    if hasattr(vectors, "key_to_index"):  # gensim KeyedVectors: only tokens seen in training
        k2i = vectors.key_to_index
        pos = [j for j, s in enumerate(names) if s in k2i]
        arr = vectors.vectors[[k2i[names[j]] for j in pos]] if pos else np.zeros((0, vectors.vector_size))
    else:  # a mapping token string -> vector
        pos = [j for j, s in enumerate(names) if s in vectors]
        arr = np.stack([np.asarray(vectors[names[j]], dtype=np.float32) for j in pos]) if pos else np.zeros((0, 1))
    return pos, torch.as_tensor(np.asarray(arr, dtype=np.float32))
