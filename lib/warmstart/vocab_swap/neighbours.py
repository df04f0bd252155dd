"""Sanity table: the old tokens whose embeddings are nearest to new tokens' embeddings."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from warmstart.vocab_swap.tokens import TokenizerView, VocabSwapError, _view


def _embedding_matrix(m: Any) -> torch.Tensor:
    if isinstance(m, torch.Tensor):
        return m.detach()
    return m.get_input_embeddings().weight.detach()


def _token_id(view: TokenizerView, t: int | str) -> int:
    if isinstance(t, int):
        if not 0 <= t < view.size:
            raise VocabSwapError(f"token id {t} is outside the vocabulary (size {view.size})")
        return t
    vocab = view.tokenizer.get_vocab()
    if t in vocab:
        return int(vocab[t])
    ids = view.tokenizer.encode(t, add_special_tokens=False)
    if len(ids) == 1:
        return int(ids[0])
    raise VocabSwapError(f"{t!r} is not one token of the new tokenizer (it encodes to {len(ids)} tokens)")


def nearest_neighbours(
    new_model: Any,
    new_tok: Any,
    old_model: Any,
    old_tok: Any,
    tokens: Sequence[int | str],
    k: int = 5,
) -> Any:
    """For each new token, the ``k`` old tokens whose input embeddings are closest by cosine.

    ``tokens`` are new ids, new token strings (``"▁hus"``) or texts that the
    new tokenizer encodes as one token. Models may be given as embedding
    matrices. Returns a long pandas DataFrame: token, new_id, rank, old_token,
    old_id, old_text, cosine.
    """
    import pandas as pd

    new, old = _view(new_tok), _view(old_tok)
    e_new = _embedding_matrix(new_model).to(torch.float32)
    e_old = _embedding_matrix(old_model).to(torch.float32)
    n_old = min(e_old.shape[0], old.size)
    on = e_old[:n_old] / e_old[:n_old].norm(dim=1, keepdim=True).clamp_min(1e-12)
    rows = []
    for t in tokens:
        i = _token_id(new, t)
        v = e_new[i] / e_new[i].norm().clamp_min(1e-12)
        sims = on @ v
        top = torch.topk(sims, min(k, n_old))
        for rank, (s, j) in enumerate(zip(top.values.tolist(), top.indices.tolist()), 1):
            rows.append(
                {
                    "token": new.tokens[i],
                    "new_id": i,
                    "text": new.text(i),
                    "rank": rank,
                    "old_token": old.tokens[j],
                    "old_id": j,
                    "old_text": old.text(j),
                    "cosine": s,
                }
            )
    cols = ["token", "new_id", "text", "rank", "old_token", "old_id", "old_text", "cosine"]
    return pd.DataFrame(rows, columns=cols)


def probe_tokens(tokenizer: Any, texts: list[str], n: int, min_chars: int = 4) -> list[int]:
    """The ``n`` most frequent whole-word tokens of ``texts`` (alphabetic, ``min_chars`` letters or more): the
    new tokens the sanity table probes."""
    counts: Counter[int] = Counter()
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        counts.update(ids)
    out = []
    for i, _ in counts.most_common():
        text = tokenizer.decode([i]).strip()
        if len(text) >= min_chars and text.isalpha():
            out.append(i)
            if len(out) == n:
                break
    return out
