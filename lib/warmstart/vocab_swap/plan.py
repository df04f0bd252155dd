"""Plans: how every row of a new embedding matrix is made from the old rows.

An :class:`InitPlan` lists rows copied bit for bit, rows combined from old
rows (a :class:`Combination`), rows set to the mean old row, rows sampled like
the old rows and zero (padding) rows. Every method starts from the same split
(:func:`_base`): special tokens mapped by role, exact matches of normalised
strings, and the rest; a method's planner (``methods.PLANNERS``) decides what
happens to the rest, from a :class:`PlanRequest`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from warmstart.vocab_swap.tokens import ROLES, TokenizerView, VocabSwapError

if TYPE_CHECKING:
    from warmstart.vocab_swap.fasttext import FastTextOptions

REPORT_NAME = "swap_report.json"
#: Default multiple the new vocabulary is padded to.
PAD_MULTIPLE = 64


@dataclass
class Combination:
    """Rows built as weighted sums of old rows, in CSR layout.

    Row ``rows[r]`` = ``sum(weights[j] * old[src[j]] for j in ptr[r]:ptr[r+1]) / div[r]``.
    """

    rows: torch.Tensor  # (m,) new ids
    ptr: torch.Tensor  # (m + 1,)
    src: torch.Tensor  # (nnz,) old ids
    weights: torch.Tensor  # (nnz,) float32
    div: torch.Tensor | None = None  # (m,) float32, or None for 1

    @classmethod
    def empty(cls) -> Combination:
        z = torch.zeros(0, dtype=torch.long)
        return cls(z, torch.zeros(1, dtype=torch.long), z, torch.zeros(0))

    @classmethod
    def from_lists(
        cls, rows: Sequence[int], pieces: Sequence[Sequence[int]], weights: Sequence[Sequence[float]] | None, mean: bool
    ) -> Combination:
        lens = torch.tensor([len(p) for p in pieces], dtype=torch.long)
        ptr = torch.zeros(len(pieces) + 1, dtype=torch.long)
        ptr[1:] = torch.cumsum(lens, 0)
        src = torch.tensor([i for p in pieces for i in p], dtype=torch.long)
        if weights is None:
            w = torch.ones(len(src), dtype=torch.float32)
        else:
            w = torch.tensor([x for ws in weights for x in ws], dtype=torch.float32)
        div = lens.to(torch.float32) if mean else None
        return cls(torch.tensor(list(rows), dtype=torch.long), ptr, src, w, div)

    def __len__(self) -> int:
        return int(self.rows.numel())


@dataclass
class InitPlan:
    """How every row of one new matrix is made (ids are new-vocabulary ids)."""

    n_rows: int  # padded vocabulary
    copy_new: torch.Tensor  # rows copied bit for bit ...
    copy_old: torch.Tensor  # ... from these old rows
    combo: Combination  # rows combined from old rows
    mean_rows: torch.Tensor  # rows set to the mean old row
    random_rows: torch.Tensor  # rows sampled like the old rows
    zero_rows: torch.Tensor  # padding (and ids without a token): zero, never generated
    #: who makes ``random_rows``: "mvn" (:func:`~warmstart.vocab_swap.sampling.sample_like`) or "hf"
    #: (transformers' ``resize_token_embeddings``, :mod:`~warmstart.vocab_swap.hf`)
    sampler: str = "mvn"


@dataclass
class SwapReport:
    """What a swap did. Counts add up to ``padded_vocab``:
    ``specials_mapped + mean_init + aligned + decomposed + fallback_random + padded_rows``."""

    method: str
    old_vocab: int  # tokens of the old tokenizer
    old_rows: int  # rows of the old embedding matrix
    new_vocab: int  # tokens of the new tokenizer
    padded_vocab: int  # rows of the new matrices (a multiple of pad_multiple)
    aligned: int  # non-special tokens copied from an exactly matching old token
    decomposed: int  # rows combined from old rows: fvt pieces, focus sparsemax, omp atoms
    fallback_random: int  # rows sampled from the old rows' normal distribution
    mean_init: int  # special tokens without counterpart: the mean old row
    specials_mapped: int  # special tokens copied from the old tokenizer's counterpart
    padded_rows: int  # zero rows that generation suppresses
    tied: bool
    hidden: int
    seed: int
    seconds: float = 0.0
    specials: dict[str, dict[str, Any]] = field(default_factory=dict)
    suppressed_ids: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path


def padded_size(n: int, multiple: int) -> int:
    if multiple < 1:
        raise VocabSwapError(f"pad_multiple must be >= 1, got {multiple}")
    return -(-n // multiple) * multiple


def _map_specials(old: TokenizerView, new: TokenizerView, old_rows: int) -> dict[int, tuple[int | None, str]]:
    """new special id -> (old id or None, label). By role, then by content."""
    out: dict[int, tuple[int | None, str]] = {}

    def ok(i: int | None) -> int | None:
        return i if i is not None and 0 <= i < old_rows else None

    for role in ROLES:
        nid = new.roles.get(role)
        if nid is None:
            continue
        oid = ok(old.roles.get(role))
        if oid is None:
            oid = ok(old.special_by_content.get(new.tokens[nid] or ""))
        if nid not in out or (out[nid][0] is None and oid is not None):
            out[nid] = (oid, role)
    for nid in sorted(new.special_ids):
        if nid not in out:
            out[nid] = (ok(old.special_by_content.get(new.tokens[nid] or "")), new.tokens[nid] or "special")
    return out


def _match(old: TokenizerView, new: TokenizerView, i: int, old_rows: int) -> int | None:
    """Old id whose normalised string equals new token ``i`` (byte tokens prefer byte tokens)."""
    key = new.keys[i]
    if key is None:
        return None
    oid: int | None = None
    if i in new.byte_fallback_ids:
        oid = old.byte_ids.get(key[0])
    if oid is None:
        oid = old.index.get(key)
    return oid if oid is not None and oid < old_rows else None


@dataclass
class _Base:
    """Specials, exact matches and the rest: what every method starts from."""

    n_rows: int
    specials: dict[int, tuple[int | None, str]]
    matches: dict[int, int]  # new id -> old id (non-special exact matches)
    rest: list[int]  # non-special new ids without exact match
    zero: list[int]  # padding and ids without a token


def _base(old: TokenizerView, new: TokenizerView, old_rows: int, pad_multiple: int) -> _Base:
    n_rows = padded_size(new.size, pad_multiple)
    specials = _map_specials(old, new, old_rows)
    matches: dict[int, int] = {}
    rest: list[int] = []
    zero: list[int] = []
    for i in range(new.size):
        if i in specials:
            continue
        if new.tokens[i] is None:
            zero.append(i)
            continue
        oid = _match(old, new, i, old_rows)
        if oid is None:
            rest.append(i)
        else:
            matches[i] = oid
    zero.extend(range(new.size, n_rows))
    return _Base(n_rows, specials, matches, rest, zero)


def _long(xs: Iterable[int]) -> torch.Tensor:
    return torch.tensor(list(xs), dtype=torch.long)


def _assemble(base: _Base, copy: Mapping[int, int], combo: Combination, random_rows: Iterable[int]) -> InitPlan:
    copy_pairs = sorted({**{n: o for n, (o, _) in base.specials.items() if o is not None}, **copy}.items())
    mean_rows = sorted(n for n, (o, _) in base.specials.items() if o is None)
    return InitPlan(
        n_rows=base.n_rows,
        copy_new=_long(n for n, _ in copy_pairs),
        copy_old=_long(o for _, o in copy_pairs),
        combo=combo,
        mean_rows=_long(mean_rows),
        random_rows=_long(sorted(random_rows)),
        zero_rows=_long(base.zero),
    )


@dataclass
class PlanRequest:
    """What a method's planner works from: both vocabularies, the split every
    method starts from (``base``) and the method's own inputs. A planner puts
    what the report should show into ``extra``."""

    old: TokenizerView
    new: TokenizerView
    old_rows: int
    base: _Base
    seed: int
    texts: Iterable[str] | None  # focus: target texts to train fastText on
    fasttext: FastTextOptions  # focus
    fasttext_vectors: Any  # focus: ready vectors (skip training)
    donor_embed: torch.Tensor | None  # omp
    donor_head: torch.Tensor | None  # omp
    omp_k: int  # omp
    tokdistil_start: str = "focus"  # tokdistil: the heuristic whose rows it starts from
    extra: dict[str, Any] = field(default_factory=dict)
