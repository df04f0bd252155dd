"""Token Distillation's data: snippets of target text around a new token's old pieces, and the batches of
student (pieces merged into the new token) and teacher (old tokenization) sequences made from them.

:func:`collect_snippets` streams the texts once through the OLD tokenizer and keeps, per new token, at most
``snippets`` windows of ``snippet_len`` old tokens centred on an occurrence of the token's pieces (reservoir
sampling, seeded): memory ~ tokens x snippets x snippet_len, never the corpus. :func:`_merge` turns one window
into the student sequence and its alignment with the teacher's positions; :func:`_build_batch` pads a batch of
tokens' windows into tensors (:mod:`warmstart.vocab_swap.tokdistil` runs them).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from warmstart.data.jsonl import batches

_TEXT_BATCH = 256  # texts tokenized per call of the old tokenizer


@dataclass
class Snippets:
    """Per token, the old-tokenizer windows kept (at most ``snippets`` each), and what the stream held."""

    windows: dict[int, list[np.ndarray]]
    occurrences: dict[int, int]  # token -> occurrences of its pieces in the stream
    texts: int = 0
    old_tokens: int = 0
    seconds: float = 0.0


def collect_snippets(
    texts: Iterable[str],
    old_tok: Any,
    pieces: dict[int, list[int]],
    snippets: int,
    snippet_len: int,
    seed: int,
) -> Snippets:
    """Windows of ``snippet_len`` old tokens around occurrences of each token's ``pieces`` in ``texts`` (read
    once, in order), at most ``snippets`` per token by reservoir sampling (seeded): memory ~ tokens x snippets x
    snippet_len, whatever the corpus."""
    t0 = time.perf_counter()
    by_pattern: dict[tuple[int, ...], list[int]] = {}
    for t, p in pieces.items():
        if 0 < len(p) <= snippet_len:
            by_pattern.setdefault(tuple(p), []).append(t)
    vmax = 1 + max((i for p in by_pattern for i in p), default=0)
    singles: dict[int, list[tuple[int, ...]]] = {}
    pairs: dict[int, list[tuple[int, ...]]] = {}
    for p in sorted(by_pattern):
        if len(p) == 1:
            singles.setdefault(p[0], []).append(p)
        else:
            pairs.setdefault(p[0] * vmax + p[1], []).append(p)
    pair_keys = np.array(sorted(pairs), dtype=np.int64)
    single_keys = np.array(sorted(singles), dtype=np.int64)
    rng = np.random.default_rng(int(seed))
    windows: dict[int, list[np.ndarray]] = {}
    seen: dict[int, int] = {}
    out = Snippets(windows, seen)

    def keep(t: int, ids: np.ndarray, s: int, k: int) -> None:
        n = seen.get(t, 0) + 1
        seen[t] = n
        slot = n - 1 if n <= snippets else int(rng.integers(n))
        if slot >= snippets:
            return
        left = (snippet_len - k) // 2
        a = max(0, s - left)
        b = min(len(ids), a + snippet_len)
        a = max(0, b - snippet_len)
        w = ids[a:b].astype(np.int32)
        lst = windows.setdefault(t, [])
        if slot == len(lst):
            lst.append(w)
        else:
            lst[slot] = w

    for batch in batches(texts, _TEXT_BATCH):
        out.texts += len(batch)
        for doc in old_tok(batch, add_special_tokens=False)["input_ids"]:
            ids = np.asarray(doc, dtype=np.int64)
            out.old_tokens += len(ids)
            hits: list[tuple[int, tuple[int, ...]]] = []
            if len(ids) >= 2 and pair_keys.size:
                keys = np.where(ids[:-1] < vmax, ids[:-1], 0) * vmax + np.where(ids[1:] < vmax, ids[1:], 0)
                for i in np.flatnonzero(np.isin(keys, pair_keys)).tolist():
                    for p in pairs[int(keys[i])]:
                        k = len(p)
                        if i + k <= len(ids) and tuple(ids[i : i + k].tolist()) == p:
                            hits.append((i, p))
            if single_keys.size:
                for i in np.flatnonzero(np.isin(ids, single_keys)).tolist():
                    hits.extend((i, p) for p in singles[int(ids[i])])
            for i, p in sorted(hits):
                for t in by_pattern[p]:
                    keep(t, ids, i, len(p))
    out.seconds = time.perf_counter() - t0
    return out


# ---------------------------------------------------------------- batches


def _merge(window: np.ndarray, pattern: Sequence[int]) -> tuple[list[int], list[int], list[int], list[int]]:
    """The student sequence (-1 marks the new token), the teacher position aligned with each student position,
    each teacher position's head label (1: the next old tokens are the pattern, 0: they are not, -1: no
    prediction there in the merged sequence) and the merged positions."""
    w = window.tolist()
    k, n = len(pattern), len(window)
    p = list(pattern)
    student, t_pos, merged = [], [], []
    label = [0] * n
    i = 0
    while i < n:
        if w[i : i + k] == p:
            merged.append(len(student))
            student.append(-1)
            t_pos.append(i + k - 1)
            if i > 0:
                label[i - 1] = 1
            for j in range(i, i + k - 1):  # inside the pattern: predicts a piece, gone after the merge
                label[j] = -1
            i += k
        else:
            student.append(w[i])
            t_pos.append(i)
            i += 1
    label[n - 1] = -1  # nothing to predict after the window
    return student, t_pos, label, merged


@dataclass
class _Batch:
    tokens: list[int]  # new ids, in row order of the batch's parameters
    s_ids: torch.Tensor  # (N, Ls) old ids of the student sequences (0 at merged and padded positions)
    new_at: tuple[torch.Tensor, torch.Tensor]  # (snippet, position) of merged positions
    new_owner: torch.Tensor  # local token of each merged position
    loss_mask: torch.Tensor  # (N, Ls) 1 from the first merged position on, 0 before and on padding
    t_ids: torch.Tensor  # (N, Lt) old ids of the teacher sequences (0-padded)
    t_pos: torch.Tensor  # (N, Ls) teacher position aligned with each student position
    t_label: torch.Tensor  # (N, Lt) 1 / 0 / -1 as in :func:`_merge`
    owner: torch.Tensor  # (N,) local token of each snippet
    counts: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # (B,) loss positions per token


def _build_batch(tokens: list[int], windows: dict[int, list[np.ndarray]], pieces: dict[int, list[int]]) -> _Batch:
    rows = []
    for j, t in enumerate(tokens):
        for w in windows[t]:
            rows.append((j, w, *_merge(w, pieces[t])))
    n = len(rows)
    ls = max(len(r[2]) for r in rows)
    lt = max(len(r[1]) for r in rows)
    s_ids = torch.zeros(n, ls, dtype=torch.long)
    loss_mask = torch.zeros(n, ls)
    t_ids = torch.zeros(n, lt, dtype=torch.long)
    t_pos = torch.zeros(n, ls, dtype=torch.long)
    t_label = torch.full((n, lt), -1, dtype=torch.int8)
    owner = torch.tensor([r[0] for r in rows], dtype=torch.long)
    nb, npos, nown = [], [], []
    for b, (j, w, student, tp, label, merged) in enumerate(rows):
        s_ids[b, : len(student)] = torch.tensor([max(x, 0) for x in student])
        loss_mask[b, merged[0] : len(student)] = 1.0
        t_ids[b, : len(w)] = torch.from_numpy(w.astype(np.int64))
        t_pos[b, : len(tp)] = torch.tensor(tp)
        t_label[b, : len(label)] = torch.tensor(label, dtype=torch.int8)
        nb.extend([b] * len(merged))
        npos.extend(merged)
        nown.extend([j] * len(merged))
    counts = torch.zeros(len(tokens)).index_add_(0, owner, loss_mask.sum(1))
    return _Batch(
        tokens,
        s_ids,
        (torch.tensor(nb), torch.tensor(npos)),
        torch.tensor(nown),
        loss_mask,
        t_ids,
        t_pos,
        t_label,
        owner,
        counts,
    )
