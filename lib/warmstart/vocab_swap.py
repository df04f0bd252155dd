"""Vocabulary swap: give a pretrained causal LM a new tokenizer.

The input and output embedding rows of the new vocabulary are initialised
from the old model's rows by one of five methods (:data:`METHODS`):

``random``
    Every row sampled from a multivariate normal with the mean and
    covariance of the old rows (Hewitt's baseline). The covariance is the
    sample covariance; with fewer rows than dimensions it is used through the
    centred rows themselves (exact, rank-deficient), otherwise through a
    Cholesky factor with escalating jitter. Seeded.
``exact``
    CSMPT7b's vocabulary swap: tokens whose *normalised strings* match are
    copied bit for bit (``aligned`` in the report); the rest as ``random``.
``fvt``
    Fast Vocabulary Transfer (Gee et al. 2022): each new token's string is
    segmented by the OLD tokenizer's model and gets the mean of those rows
    (so an exactly matching token copies itself); strings the old tokenizer
    cannot segment fall back to ``random``.
``focus``
    FOCUS (Dobler & de Melo 2023): overlapping tokens are copied; every other
    new token is the sparsemax-weighted combination of the overlapping
    tokens' rows, with weights ``sparsemax(cos(f(t), f(o_j)))`` over fastText
    vectors ``f`` trained (gensim) on target text tokenised with the NEW
    tokenizer. New tokens absent from that text fall back to ``random``.
``omp``
    Orthogonal matching pursuit (mergekit's ``tokensurgeon``): in a donor
    model that already uses the new tokenizer, each non-shared token's donor
    row is approximated by ``k`` donor rows of shared (anchor) tokens; the
    same coefficients are applied to the original model's anchor rows.
    Batched OMP in torch with a precomputed Gram matrix.

Normalised strings
    Every token is reduced to the UTF-8 *bytes* it stands for: GPT-2 style
    byte-level symbols are mapped back through the byte-to-unicode table,
    SentencePiece's ``▁`` (or the tokenizer's Metaspace replacement) becomes a
    space, byte-fallback tokens ``<0x41>`` become the byte ``0x41``. So
    ``Ġhouse`` and ``▁house`` both read ``b" house"`` and match, and a byte
    token matches the other tokenizer's byte token (preferred) or its single
    byte symbol.

Always, whatever the method:

- special tokens are mapped explicitly by role (bos/eos/pad/unk/mask, then
  other specials by content); a role without counterpart gets the mean row;
- the input embeddings and the LM head are both initialised (the head with
  the same method applied to the head rows), and tied weights stay one tensor;
- the vocabulary is padded to a multiple of ``pad_multiple`` with zero rows
  that generation can never produce (``generation_config.suppress_tokens``);
- ``config.vocab_size`` and bos/eos/pad ids of config and generation config
  follow the new tokenizer.

The core works on plain tensors and tokenizers (:func:`swap_embeddings`),
so a 131072 x 5120 matrix is swapped without building a model
(``python -m warmstart.bench_swap``). :func:`swap_model` applies it to a
model in memory, :func:`swap_model_dir` to a model directory.

CLI::

    python -m warmstart.vocab_swap --model DIR --tokenizer DIR --method fvt --out DIR
        [--donor DIR] [--seed N] [--pad-multiple 64] [--omp-k 8]
        [--fasttext-texts PATH ...] [--fasttext-dim 100] [--cov-rows 16384] ...
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import logging
import math
import re
import sys
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from warmstart.io import atomic_dir

log = logging.getLogger(__name__)

__all__ = [
    "COV_ROWS",
    "METHODS",
    "ROLES",
    "FastTextOptions",
    "InitPlan",
    "SwapReport",
    "SwapResult",
    "TokenizerView",
    "VocabSwapError",
    "apply_plan",
    "batch_omp",
    "build_plan",
    "focus_weights",
    "load_texts",
    "main",
    "nearest_neighbours",
    "padded_size",
    "sample_like",
    "sparsemax",
    "swap_embeddings",
    "swap_model",
    "swap_model_dir",
    "tokenizer_view",
    "train_fasttext",
]

METHODS: tuple[str, ...] = ("random", "exact", "fvt", "focus", "omp")
#: Special-token roles mapped explicitly. When one token has several roles
#: (GPT-2's ``<|endoftext|>`` is bos, eos and unk) the first role with an old
#: counterpart wins: eos first, the row whose head logit ends generation.
ROLES: tuple[str, ...] = ("eos", "bos", "pad", "unk", "mask")
REPORT_NAME = "swap_report.json"

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_ROW_CHUNK = 4096  # rows per block when copying / combining
_SLAB_BYTES = 256 << 20  # float32 bytes of one column slab when combining rows
#: Default number of old rows the covariance of ``random`` rows is estimated from.
COV_ROWS = 16384


class VocabSwapError(ValueError):
    """Bad input to a vocabulary swap (unknown method, missing donor, ...)."""


# ---------------------------------------------------------------- token strings


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable unicode symbol table (what ByteLevel uses)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_TO_UNICODE: dict[int, str] = _bytes_to_unicode()
UNICODE_TO_BYTE: dict[str, int] = {c: b for b, c in BYTE_TO_UNICODE.items()}


def _walk(node: Any) -> Iterable[dict[str, Any]]:
    """Every dict in a tokenizer.json component (Sequence components nest)."""
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


@dataclass
class TokenizerView:
    """A tokenizer's vocabulary reduced to what a swap needs.

    ``keys[i]`` is the normalised byte string of token ``i`` (None for special
    tokens and for ids without a token); ``byte_ids`` maps a byte value to the
    id of the single-byte token that stands for it (``<0xNN>`` byte-fallback
    tokens, or a byte-level symbol); ``roles`` maps bos/eos/... to ids.
    """

    tokenizer: Any
    size: int  # max id + 1
    tokens: list[str | None]
    keys: list[bytes | None]
    kind: str  # "byte_level" | "metaspace" | "plain"
    marker: str | None  # the space marker of metaspace tokenizers
    byte_fallback_ids: set[int]
    byte_ids: dict[int, int]
    special_ids: set[int]
    special_by_content: dict[str, int]
    roles: dict[str, int]
    unk_id: int | None
    _index: dict[bytes, int] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return self.size

    @property
    def index(self) -> dict[bytes, int]:
        """key -> id; a regular piece wins over a byte-fallback token, lower ids first."""
        if self._index is None:
            idx: dict[bytes, int] = {}
            for i, k in enumerate(self.keys):
                if k is not None and i not in self.byte_fallback_ids:
                    idx.setdefault(k, i)
            for i in sorted(self.byte_fallback_ids):
                k = self.keys[i]
                if k is not None:
                    idx.setdefault(k, i)
            self._index = idx
        return self._index

    def text(self, i: int) -> str:
        """Readable form of token ``i`` (its key decoded, or the special token)."""
        if not 0 <= i < self.size:
            return ""
        k = self.keys[i]
        if k is None:
            return self.tokens[i] or ""
        return k.decode("utf-8", errors="backslashreplace")

    def surface(self, key: bytes) -> str | None:
        """``key`` written in this tokenizer's model alphabet (None if it cannot be)."""
        if self.kind == "byte_level":
            return "".join(BYTE_TO_UNICODE[b] for b in key)
        try:
            text = key.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return text.replace(" ", self.marker) if self.marker else text

    def segment(self, key: bytes) -> list[int]:
        """Ids this tokenizer's model segments ``key`` into (FVT's decomposition).

        The model is run on the string directly (no normaliser, no
        pre-tokenizer, so no prefix space is added). Bytes that are not valid
        UTF-8 for a non-byte-level tokenizer are spelled with its byte tokens.
        Unknown and special pieces are dropped; an empty list means "cannot".
        """
        surface = self.surface(key)
        if surface is None:
            ids = [self.byte_ids.get(b) for b in key]
            return [] if any(i is None for i in ids) else [int(i) for i in ids]  # type: ignore[arg-type]
        backend = self.tokenizer.backend_tokenizer
        try:
            ids = [t.id for t in backend.model.tokenize(surface)]
        except Exception:  # e.g. a model that cannot tokenize without its pre-tokenizer
            ids = backend.encode(key.decode("utf-8", errors="replace"), add_special_tokens=False).ids
        return [i for i in ids if i != self.unk_id and i not in self.special_ids and 0 <= i < self.size]


def tokenizer_view(tok: Any) -> TokenizerView:
    """Build the :class:`TokenizerView` of a transformers fast tokenizer."""
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise VocabSwapError(f"a fast (tokenizers-backed) tokenizer is needed, got {type(tok).__name__}")
    spec = json.loads(backend.to_str())
    model_spec = spec.get("model") or {}
    parts = [spec.get("decoder"), spec.get("pre_tokenizer")]
    types = {d.get("type") for d in _walk(parts)}
    marker: str | None = None
    if "ByteLevel" in types:
        kind = "byte_level"
    else:
        kind = "plain"
        for d in _walk(parts + [spec.get("normalizer")]):
            if d.get("type") == "Metaspace":
                marker = d.get("replacement", "\u2581")
                break
            if d.get("type") == "Replace" and isinstance(d.get("pattern"), dict):
                pat = d["pattern"].get("String")
                if pat == "\u2581" and d.get("content") == " ":  # decoder: ▁ -> space
                    marker = pat
                    break
                if pat == " " and d.get("content"):  # normaliser: space -> ▁
                    marker = d["content"]
                    break
        if marker:
            kind = "metaspace"
    byte_fallback = bool(model_spec.get("byte_fallback", False))

    vocab: dict[str, int] = tok.get_vocab()
    size = max(vocab.values()) + 1 if vocab else 0
    tokens: list[str | None] = [None] * size
    for s, i in vocab.items():
        tokens[i] = s
    added = dict(getattr(tok, "added_tokens_decoder", {}) or {})
    special_ids = {int(i) for i, a in added.items() if getattr(a, "special", False)}
    special_ids |= {int(i) for i in getattr(tok, "all_special_ids", []) if i is not None}
    special_ids = {i for i in special_ids if 0 <= i < size}
    special_by_content = {tokens[i]: i for i in sorted(special_ids, reverse=True) if tokens[i] is not None}
    added_content = {int(i): a.content for i, a in added.items()}

    keys: list[bytes | None] = [None] * size
    byte_fallback_ids: set[int] = set()
    byte_ids: dict[int, int] = {}
    for i, s in enumerate(tokens):
        if s is None or i in special_ids:
            continue
        if i in added_content:  # non-special added token: raw text
            keys[i] = added_content[i].encode("utf-8")
            continue
        if kind == "byte_level":
            keys[i] = b"".join(bytes([UNICODE_TO_BYTE[c]]) if c in UNICODE_TO_BYTE else c.encode("utf-8") for c in s)
            if len(keys[i]) == 1 and len(s) == 1:
                byte_ids.setdefault(keys[i][0], i)
            continue
        m = _BYTE_TOKEN.match(s) if byte_fallback else None
        if m:
            b = int(m.group(1), 16)
            keys[i] = bytes([b])
            byte_fallback_ids.add(i)
            byte_ids[b] = i
            continue
        keys[i] = (s.replace(marker, " ") if marker else s).encode("utf-8")
    roles: dict[str, int] = {}
    for role in ROLES:
        rid = getattr(tok, f"{role}_token_id", None)
        if isinstance(rid, int) and 0 <= rid < size:
            roles[role] = rid
    unk = model_spec.get("unk_token")
    unk_id = vocab.get(unk) if isinstance(unk, str) else None
    if unk_id is None and isinstance(model_spec.get("unk_id"), int):
        unk_id = model_spec["unk_id"]
    return TokenizerView(
        tokenizer=tok,
        size=size,
        tokens=tokens,
        keys=keys,
        kind=kind,
        marker=marker,
        byte_fallback_ids=byte_fallback_ids,
        byte_ids=byte_ids,
        special_ids=special_ids,
        special_by_content=special_by_content,
        roles=roles,
        unk_id=unk_id,
    )


def _view(tok: Any) -> TokenizerView:
    return tok if isinstance(tok, TokenizerView) else tokenizer_view(tok)


# ---------------------------------------------------------------- plans


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
    def empty(cls) -> "Combination":
        z = torch.zeros(0, dtype=torch.long)
        return cls(z, torch.zeros(1, dtype=torch.long), z, torch.zeros(0))

    @classmethod
    def from_lists(
        cls, rows: Sequence[int], pieces: Sequence[Sequence[int]], weights: Sequence[Sequence[float]] | None, mean: bool
    ) -> "Combination":
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


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise VocabSwapError(f"unknown method {method!r}: allowed methods are {', '.join(METHODS)}")
    return method


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


# ---------------------------------------------------------------- math


def sparsemax(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Sparsemax (Martins & Astudillo 2016): the Euclidean projection of ``z`` onto the simplex.

    ``out = max(z - tau, 0)`` with ``tau`` such that ``out`` sums to 1 along ``dim``.
    """
    z = z.transpose(dim, -1)
    zs, _ = torch.sort(z, dim=-1, descending=True)
    k = torch.arange(1, z.shape[-1] + 1, dtype=z.dtype, device=z.device)
    cs = zs.cumsum(-1) - 1
    support = k * zs > cs
    kz = support.sum(-1, keepdim=True)
    tau = cs.gather(-1, kz - 1) / kz.to(z.dtype)
    return torch.clamp(z - tau, min=0).transpose(dim, -1)


def _mean_row(m: torch.Tensor) -> torch.Tensor:
    """float64 mean of the rows of ``m``, without a full float copy."""
    acc = torch.zeros(m.shape[1], dtype=torch.float64)
    for a in range(0, m.shape[0], _ROW_CHUNK):
        acc += m[a : a + _ROW_CHUNK].to(torch.float32).sum(0, dtype=torch.float64)
    return acc / max(m.shape[0], 1)


def _mvn_factor(m: torch.Tensor, cov_rows: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, F) such that ``mean + z @ F`` with ``z ~ N(0, I)`` has the rows' mean and covariance.

    The mean is over all rows. Fewer rows than dimensions: ``F`` is the
    centred rows / sqrt(n - 1) (exact sample covariance, rank n - 1, no
    factorisation). Otherwise the Cholesky factor of the sample covariance,
    with jitter added (1e-6 of the mean variance, times 10 until it
    factorises) when it is singular. With ``cov_rows`` the covariance is
    estimated from that many rows drawn without replacement (seeded): its
    cost is ``rows * d^2`` (all 131072 rows of a 5120-wide matrix: a minute on 2 cores).
    """
    n, d = m.shape
    mu = _mean_row(m)
    mu32 = mu.to(torch.float32)
    if n < 2:
        return mu, torch.zeros(1, d)
    if n <= d:
        return mu, (m.to(torch.float32) - mu32) / math.sqrt(n - 1)
    rows = None
    if cov_rows is not None and n > max(cov_rows, d + 1):
        g = torch.Generator().manual_seed(int(seed) + 7919)
        rows = torch.randperm(n, generator=g)[: max(cov_rows, d + 1)].sort().values
    n_cov = n if rows is None else rows.numel()
    cov = torch.zeros(d, d, dtype=torch.float64)
    for a in range(0, n_cov, _ROW_CHUNK):
        chunk = m[a : a + _ROW_CHUNK] if rows is None else m.index_select(0, rows[a : a + _ROW_CHUNK])
        xc = chunk.to(torch.float32) - mu32
        cov += (xc.T @ xc).to(torch.float64)
    cov /= n_cov - 1
    scale = float(cov.diagonal().mean()) or 1.0
    eye = torch.eye(d, dtype=torch.float64)
    jitter = 0.0
    for _ in range(12):
        chol, info = torch.linalg.cholesky_ex(cov + jitter * eye)
        if int(info) == 0:
            return mu, chol.T.to(torch.float32).contiguous()
        jitter = scale * 1e-6 if jitter == 0.0 else jitter * 10
    raise RuntimeError("covariance of the old rows could not be factorised")


def sample_like(m: torch.Tensor, n: int, seed: int, cov_rows: int | None = None) -> torch.Tensor:
    """``n`` rows from the normal with the mean and covariance of ``m``'s rows (float32, seeded).

    ``cov_rows``: estimate the covariance from at most that many rows (None: all)."""
    mu, f = _mvn_factor(m, cov_rows, seed)
    mu32 = mu.to(torch.float32)
    g = torch.Generator().manual_seed(int(seed))
    out = torch.empty(n, m.shape[1], dtype=torch.float32)
    for a in range(0, n, _ROW_CHUNK):
        b = min(a + _ROW_CHUNK, n)
        z = torch.randn(b - a, f.shape[0], generator=g, dtype=torch.float32)
        out[a:b] = torch.addmm(mu32, z, f)
    return out


def batch_omp(
    targets: torch.Tensor,
    atoms: torch.Tensor,
    k: int,
    *,
    chunk: int = 256,
    gram_limit_bytes: int = 2 << 30,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched orthogonal matching pursuit.

    Approximates every row ``x`` of ``targets`` (B, d) as ``sum_j c_j atoms[idx_j]``
    with ``k`` atoms chosen greedily by absolute correlation of the residual
    with the normalised atoms, the coefficients refitted by least squares after
    each pick (Batch-OMP: correlations are updated through the Gram matrix
    ``G = D D^T`` when it fits in ``gram_limit_bytes``, else recomputed from
    the residual). Returns ``(idx (B, k), coef (B, k), rel_err (B,))`` with
    coefficients for the *unnormalised* atoms and the relative residual norm.
    """
    targets = targets.to(torch.float32)
    atoms = atoms.to(torch.float32)
    n_atoms = atoms.shape[0]
    if n_atoms == 0:
        raise VocabSwapError("OMP needs at least one anchor token shared by both vocabularies")
    k = max(1, min(int(k), n_atoms))
    norms = atoms.norm(dim=1)
    valid = norms > 0
    dn = atoms / norms.clamp_min(torch.finfo(torch.float32).tiny)[:, None]
    dn[~valid] = 0
    gram = dn @ dn.T if n_atoms * n_atoms * 4 <= gram_limit_bytes else None
    n = targets.shape[0]
    idx_out = torch.zeros(n, k, dtype=torch.long)
    coef_out = torch.zeros(n, k, dtype=torch.float32)
    err_out = torch.zeros(n, dtype=torch.float32)
    ridge = 1e-10 * torch.eye(k, dtype=torch.float64)
    invalid = None if bool(valid.all()) else ~valid
    # Gram rows of the atoms picked so far, one gathered per step (reused across chunks)
    grows_buf = torch.empty(min(chunk, n), k, n_atoms) if gram is not None else None
    from tqdm.auto import tqdm

    for a in tqdm(range(0, n, chunk), desc="omp", unit="chunk", disable=True if n <= 16 * chunk else None):
        x = targets[a : a + chunk]
        p = x @ dn.T  # (b, A) correlations with the atoms
        corr = p
        nb = x.shape[0]
        sel = torch.zeros(nb, 0, dtype=torch.long)
        c = torch.zeros(nb, 0, dtype=torch.float64)
        grows = grows_buf[:nb] if grows_buf is not None else None
        for t in range(k):
            score = corr.abs()
            if invalid is not None:
                score[:, invalid] = -1.0
            score.scatter_(1, sel, -1.0)
            pick = score.argmax(1, keepdim=True)
            sel = torch.cat([sel, pick], 1)
            if grows is not None:
                grows[:, t] = gram[pick[:, 0]]
                gss = grows[:, : t + 1].gather(2, sel.unsqueeze(1).expand(nb, t + 1, t + 1))
            else:
                ds = dn[sel]
                gss = ds @ ds.transpose(1, 2)
            rhs = p.gather(1, sel).to(torch.float64)
            c = torch.linalg.solve(gss.to(torch.float64) + ridge[: t + 1, : t + 1], rhs)
            if t < k - 1:
                if grows is not None:
                    corr = p - torch.bmm(c.to(torch.float32).unsqueeze(1), grows[:, : t + 1]).squeeze(1)
                else:
                    resid = x - torch.bmm(c.to(torch.float32).unsqueeze(1), dn[sel]).squeeze(1)
                    corr = resid @ dn.T
        recon = torch.bmm(c.to(torch.float32).unsqueeze(1), dn[sel]).squeeze(1)
        err_out[a : a + chunk] = (x - recon).norm(dim=1) / x.norm(dim=1).clamp_min(1e-30)
        idx_out[a : a + chunk] = sel
        coef_out[a : a + chunk] = (c / norms[sel].to(torch.float64).clamp_min(1e-300)).to(torch.float32)
    return idx_out, coef_out, err_out


def _combine(old: torch.Tensor, combo: Combination, out: torch.Tensor) -> None:
    """Write the combined rows of ``combo`` into ``out``.

    One sparse (CSR) x dense product in float32 over the distinct source
    rows, in column slabs so that neither the gathered rows nor the result
    exceed ``_SLAB_BYTES``; duplicate (row, source) pairs add up.
    """
    m = len(combo)
    if m == 0:
        return
    uniq, inv = torch.unique(combo.src, return_inverse=True)
    seg = torch.repeat_interleave(torch.arange(m), combo.ptr[1:] - combo.ptr[:-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        coo = torch.sparse_coo_tensor(torch.stack([seg, inv]), combo.weights.to(torch.float32), (m, uniq.numel()))
        csr = coo.coalesce().to_sparse_csr()
        d = old.shape[1]
        slab = max(1, min(d, _SLAB_BYTES // (4 * max(m, uniq.numel()))))
        for a in range(0, d, slab):
            b = min(a + slab, d)
            res = csr @ old[:, a:b].index_select(0, uniq).to(torch.float32)
            if combo.div is not None:
                res.div_(combo.div[:, None])
            out[combo.rows, a:b] = res.to(out.dtype)


def apply_plan(old: torch.Tensor, plan: InitPlan, seed: int, cov_rows: int | None = COV_ROWS) -> torch.Tensor:
    """The new matrix (``plan.n_rows`` rows, ``old``'s dtype) made from ``old`` by ``plan``."""
    old = old.detach()
    with torch.no_grad():
        out = torch.zeros(plan.n_rows, old.shape[1], dtype=old.dtype)
        for a in range(0, plan.copy_new.numel(), _ROW_CHUNK):
            sl = slice(a, a + _ROW_CHUNK)
            out.index_copy_(0, plan.copy_new[sl], old.index_select(0, plan.copy_old[sl]))
        if len(plan.combo):
            _combine(old, plan.combo, out)
        if plan.mean_rows.numel():
            out[plan.mean_rows] = _mean_row(old).to(old.dtype)
        if plan.random_rows.numel():
            out[plan.random_rows] = sample_like(old, plan.random_rows.numel(), seed, cov_rows).to(old.dtype)
        if plan.zero_rows.numel():
            out[plan.zero_rows] = 0
    return out


# ---------------------------------------------------------------- fastText (FOCUS)


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


def focus_weights(targets: torch.Tensor, anchors: torch.Tensor, chunk: int = 1024) -> Combination:
    """Sparsemax over the cosine similarities of each target vector to the anchor vectors.

    Returns a :class:`Combination` whose ``rows`` are target positions and
    ``src`` anchor positions (the caller maps both to token ids).
    """
    tn = targets / targets.norm(dim=1, keepdim=True).clamp_min(1e-12)
    an = anchors / anchors.norm(dim=1, keepdim=True).clamp_min(1e-12)
    rows, srcs, ws, counts = [], [], [], []
    for a in range(0, tn.shape[0], chunk):
        w = sparsemax(tn[a : a + chunk] @ an.T)
        r, c = w.nonzero(as_tuple=True)
        rows.append(r + a)
        srcs.append(c)
        ws.append(w[r, c])
        counts.append((w > 0).sum(1))
    if not rows:
        return Combination.empty()
    cnt = torch.cat(counts)
    ptr = torch.zeros(cnt.numel() + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(cnt, 0)
    return Combination(torch.arange(cnt.numel()), ptr, torch.cat(srcs), torch.cat(ws).to(torch.float32))


# ---------------------------------------------------------------- method plans


def build_plan(
    old_tok: Any,
    new_tok: Any,
    method: str,
    *,
    old_rows: int,
    pad_multiple: int = 64,
    texts: Iterable[str] | None = None,
    fasttext: FastTextOptions = FastTextOptions(),
    fasttext_vectors: Any = None,
    donor_embed: torch.Tensor | None = None,
    donor_head: torch.Tensor | None = None,
    omp_k: int = 8,
    seed: int = 0,
) -> tuple[InitPlan, InitPlan, dict[str, Any]]:
    """(embedding plan, head plan, extras) for ``method``. The two plans differ
    only for ``omp`` with an untied donor head."""
    _check_method(method)
    old, new = _view(old_tok), _view(new_tok)
    if old_rows < old.size:
        raise VocabSwapError(f"the old embedding has {old_rows} rows but the old tokenizer has ids up to {old.size - 1}")
    base = _base(old, new, old_rows, pad_multiple)
    extra: dict[str, Any] = {}
    if method == "random":
        rnd = list(base.matches) + base.rest
        plan = _assemble(base, {}, Combination.empty(), rnd)
        return plan, plan, extra
    if method == "exact":
        plan = _assemble(base, base.matches, Combination.empty(), base.rest)
        return plan, plan, extra
    if method == "fvt":
        rows, pieces, rnd = [], [], []
        for i in base.rest:
            p = old.segment(new.keys[i])  # type: ignore[arg-type]
            p = [j for j in p if j < old_rows]
            if p:
                rows.append(i)
                pieces.append(p)
            else:
                rnd.append(i)
        combo = Combination.from_lists(rows, pieces, None, mean=True)
        extra["mean_pieces"] = float(np.mean([len(p) for p in pieces])) if pieces else 0.0
        plan = _assemble(base, base.matches, combo, rnd)
        return plan, plan, extra
    anchors_new = sorted(base.matches)
    if method == "focus":
        if fasttext_vectors is None:
            if texts is None:
                raise VocabSwapError("method 'focus' needs target texts (texts=..., CLI --fasttext-texts)")
            t0 = time.perf_counter()
            fasttext_vectors = train_fasttext(texts, new, fasttext, seed=seed)
            extra["fasttext_seconds"] = round(time.perf_counter() - t0, 3)
        names_a = [new.tokens[i] for i in anchors_new]
        names_t = [new.tokens[i] for i in base.rest]
        pos_a, vec_a = _vectors_for(fasttext_vectors, names_a)  # type: ignore[arg-type]
        pos_t, vec_t = _vectors_for(fasttext_vectors, names_t)  # type: ignore[arg-type]
        extra["anchors"] = len(pos_a)
        extra["targets_without_vector"] = len(base.rest) - len(pos_t)
        if not pos_a or not pos_t:
            log.warning("focus: %d anchors and %d targets with fastText vectors", len(pos_a), len(pos_t))
            plan = _assemble(base, base.matches, Combination.empty(), base.rest)
            return plan, plan, extra
        w = focus_weights(vec_t, vec_a)
        anchor_old = _long(base.matches[anchors_new[j]] for j in pos_a)
        target_new = _long(base.rest[j] for j in pos_t)
        combo = Combination(target_new[w.rows], w.ptr, anchor_old[w.src], w.weights)
        extra["mean_support"] = float(w.src.numel() / max(len(w), 1))
        have = set(target_new.tolist())
        plan = _assemble(base, base.matches, combo, [i for i in base.rest if i not in have])
        return plan, plan, extra
    # omp
    if donor_embed is None:
        raise VocabSwapError("method 'omp' needs a donor model that uses the new tokenizer (--donor DIR)")
    if donor_embed.shape[0] < new.size:
        raise VocabSwapError(
            f"the donor embedding has {donor_embed.shape[0]} rows but the new tokenizer has ids up to {new.size - 1}: "
            "the donor must use the new tokenizer"
        )

    def omp_combo(donor: torch.Tensor, tag: str) -> tuple[Combination, list[int]]:
        rest = _long(base.rest)
        nonzero = (donor[rest] != 0).any(1) if len(base.rest) else torch.zeros(0, dtype=torch.bool)
        tgt, zero = rest[nonzero].tolist(), rest[~nonzero].tolist()  # a zero donor row: nothing to express
        if not tgt or not anchors_new:
            return Combination.empty(), base.rest
        t0 = time.perf_counter()
        idx, coef, err = batch_omp(donor[_long(tgt)], donor[_long(anchors_new)], omp_k)
        extra[f"{tag}_omp_seconds"] = round(time.perf_counter() - t0, 3)
        extra[f"{tag}_omp_rel_error"] = float(err.mean())
        anchor_old = _long(base.matches[i] for i in anchors_new)
        kk = idx.shape[1]
        ptr = torch.arange(len(tgt) + 1, dtype=torch.long) * kk
        return Combination(_long(tgt), ptr, anchor_old[idx.reshape(-1)], coef.reshape(-1)), zero

    combo, rnd = omp_combo(donor_embed.detach(), "embed")
    extra["anchors"] = len(anchors_new)
    extra["omp_k"] = int(min(omp_k, max(len(anchors_new), 1)))
    plan = _assemble(base, base.matches, combo, rnd)
    if donor_head is None:
        return plan, plan, extra
    if donor_head.shape[0] < new.size:
        raise VocabSwapError(f"the donor LM head has {donor_head.shape[0]} rows, fewer than the new vocabulary")
    hcombo, hrnd = omp_combo(donor_head.detach(), "head")
    head_plan = _assemble(base, base.matches, hcombo, hrnd)
    return plan, head_plan, extra


# ---------------------------------------------------------------- tensors


@dataclass
class SwapResult:
    embed: torch.Tensor
    head: torch.Tensor | None  # None: tied to ``embed``
    report: SwapReport
    plan: InitPlan
    head_plan: InitPlan


def swap_embeddings(
    old_embed: torch.Tensor,
    old_head: torch.Tensor | None,
    old_tok: Any,
    new_tok: Any,
    method: str,
    *,
    seed: int = 0,
    pad_multiple: int = 64,
    texts: Iterable[str] | None = None,
    fasttext: FastTextOptions = FastTextOptions(),
    fasttext_vectors: Any = None,
    donor_embed: torch.Tensor | None = None,
    donor_head: torch.Tensor | None = None,
    omp_k: int = 8,
    cov_rows: int | None = COV_ROWS,
) -> SwapResult:
    """New embedding (and head) matrices for ``new_tok`` made from the old ones.

    ``old_head=None`` means tied: only the embedding is computed and the
    result's ``head`` is None. Rows keep the old dtype; copied rows are bit
    equal to their source. ``cov_rows`` caps the rows the covariance of
    random rows is estimated from (None: all). The head gets the same plan applied to the head
    rows (its own mean/covariance; for ``omp`` its own donor coefficients when
    ``donor_head`` is given).
    """
    t0 = time.perf_counter()
    _check_method(method)
    if old_head is not None and old_head.shape != old_embed.shape:
        raise VocabSwapError(f"embedding {tuple(old_embed.shape)} and head {tuple(old_head.shape)} shapes differ")
    old, new = _view(old_tok), _view(new_tok)
    plan, head_plan, extra = build_plan(
        old,
        new,
        method,
        old_rows=old_embed.shape[0],
        pad_multiple=pad_multiple,
        texts=texts,
        fasttext=fasttext,
        fasttext_vectors=fasttext_vectors,
        donor_embed=donor_embed,
        donor_head=donor_head if old_head is not None else None,
        omp_k=omp_k,
        seed=seed,
    )
    embed = apply_plan(old_embed, plan, seed, cov_rows)
    head = apply_plan(old_head, head_plan, seed + 1, cov_rows) if old_head is not None else None
    specials = {}
    n_mapped = 0
    for nid, (oid, label) in sorted(_map_specials(old, new, old_embed.shape[0]).items()):
        n_mapped += oid is not None
        specials[label] = {
            "new_id": nid,
            "new_token": new.tokens[nid],
            "old_id": oid,
            "old_token": old.tokens[oid] if oid is not None else None,
            "init": "copy" if oid is not None else "mean",
        }
    report = SwapReport(
        method=method,
        old_vocab=len(old.tokenizer),
        old_rows=int(old_embed.shape[0]),
        new_vocab=len(new.tokenizer),
        padded_vocab=plan.n_rows,
        aligned=int(plan.copy_new.numel()) - n_mapped,
        decomposed=len(plan.combo),
        fallback_random=int(plan.random_rows.numel()),
        mean_init=int(plan.mean_rows.numel()),
        specials_mapped=n_mapped,
        padded_rows=int(plan.zero_rows.numel()),
        tied=old_head is None,
        hidden=int(old_embed.shape[1]),
        seed=int(seed),
        specials=specials,
        suppressed_ids=plan.zero_rows.tolist(),
        extra=extra,
    )
    report.seconds = round(time.perf_counter() - t0, 3)
    log.info(
        "vocab swap %s: %d aligned, %d decomposed, %d random, %d mean, %d specials, %d padded (%.1fs)",
        method,
        report.aligned,
        report.decomposed,
        report.fallback_random,
        report.mean_init,
        report.specials_mapped,
        report.padded_rows,
        report.seconds,
    )
    return SwapResult(embed, head, report, plan, head_plan)


# ---------------------------------------------------------------- models


def _is_tied(model: Any) -> bool:
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    tied_cfg = bool(getattr(cfg, "tie_word_embeddings", False))
    out = model.get_output_embeddings()
    same = out is not None and out.weight is model.get_input_embeddings().weight
    if tied_cfg != same:
        log.warning("config.tie_word_embeddings=%s but the weights are %s; following the config", tied_cfg, "shared" if same else "separate")
    return tied_cfg and out is not None


def _set_ids(obj: Any, ids: Mapping[str, int | None]) -> None:
    for role, i in ids.items():
        setattr(obj, f"{role}_token_id", i)


def swap_model(
    model: Any,
    old_tok: Any,
    new_tok: Any,
    method: str,
    *,
    seed: int = 0,
    pad_multiple: int = 64,
    texts: Iterable[str] | None = None,
    fasttext: FastTextOptions = FastTextOptions(),
    fasttext_vectors: Any = None,
    donor: Any = None,
    omp_k: int = 8,
    cov_rows: int | None = COV_ROWS,
) -> SwapReport:
    """Swap ``model``'s vocabulary in place (embeddings, head, config, generation config).

    ``donor`` (for ``omp``) is a model that uses ``new_tok``: its input
    embeddings give the coefficients, and its head too when both it and
    ``model`` are untied.
    """
    t0 = time.perf_counter()
    _check_method(method)
    emb_mod = model.get_input_embeddings()
    out_mod = model.get_output_embeddings()
    tied = _is_tied(model)
    donor_embed = donor_head = None
    if donor is not None:
        donor_embed = donor.get_input_embeddings().weight
        if not _is_tied(donor) and donor.get_output_embeddings() is not None:
            donor_head = donor.get_output_embeddings().weight
    elif method == "omp":
        raise VocabSwapError("method 'omp' needs a donor model that uses the new tokenizer (--donor DIR)")
    res = swap_embeddings(
        emb_mod.weight,
        None if tied or out_mod is None else out_mod.weight,
        old_tok,
        new_tok,
        method,
        seed=seed,
        pad_multiple=pad_multiple,
        texts=texts,
        fasttext=fasttext,
        fasttext_vectors=fasttext_vectors,
        donor_embed=donor_embed,
        donor_head=donor_head,
        omp_k=omp_k,
        cov_rows=cov_rows,
    )
    n_rows = res.embed.shape[0]
    new = _view(new_tok)
    grad = emb_mod.weight.requires_grad
    emb_mod.weight = torch.nn.Parameter(res.embed, requires_grad=grad)
    if hasattr(emb_mod, "num_embeddings"):
        emb_mod.num_embeddings = n_rows
    if getattr(emb_mod, "padding_idx", None) is not None:
        pad = new.roles.get("pad")
        emb_mod.padding_idx = pad if pad is not None and pad < n_rows else None
    if out_mod is not None:
        if tied:
            out_mod.weight = emb_mod.weight
        else:
            assert res.head is not None
            out_mod.weight = torch.nn.Parameter(res.head, requires_grad=out_mod.weight.requires_grad)
        if hasattr(out_mod, "out_features"):
            out_mod.out_features = n_rows
        bias = getattr(out_mod, "bias", None)
        if bias is not None:  # same rows as the head (bias as a 1-column matrix); padding 0
            nb = apply_plan(bias.detach()[:, None], res.head_plan, seed + 2, cov_rows)[:, 0]
            out_mod.bias = torch.nn.Parameter(nb, requires_grad=bias.requires_grad)
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    ids = {r: new.roles.get(r) for r in ("bos", "eos", "pad")}
    for c in {id(cfg): cfg, id(model.config): model.config}.values():
        c.vocab_size = n_rows
        _set_ids(c, ids)
    if hasattr(model, "vocab_size"):
        model.vocab_size = n_rows
    gc = getattr(model, "generation_config", None)
    if gc is not None:
        _set_ids(gc, ids)
        # ids of the old vocabulary mean nothing now
        for name in ("bad_words_ids", "begin_suppress_tokens", "forced_bos_token_id", "forced_eos_token_id", "sequence_bias"):
            if getattr(gc, name, None) is not None:
                log.info("generation_config.%s referred to the old vocabulary: cleared", name)
                setattr(gc, name, None)
        gc.suppress_tokens = res.report.suppressed_ids or None
    if tied and hasattr(model, "tie_weights"):
        model.tie_weights()
    res.report.seconds = round(time.perf_counter() - t0, 3)
    return res.report


def _load_model(path: str | Path, what: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoModelForCausalLM

    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{what} directory {str(path)!r} does not exist")
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{what} directory {str(path)!r} has no config.json (not a Hugging Face model directory)")
    return AutoModelForCausalLM.from_pretrained(str(p), use_safetensors=True, trust_remote_code=trust_remote_code, dtype="auto")


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _load_tokenizer(path: str | Path, what: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{what} directory {str(path)!r} does not exist")
    # transformers 5 builds an empty tokenizer for a directory without one: check first
    if not any((p / f).is_file() for f in _TOKENIZER_FILES):
        raise FileNotFoundError(
            f"no tokenizer in {what} directory {str(path)!r}: none of {', '.join(_TOKENIZER_FILES)}"
        )
    try:
        return AutoTokenizer.from_pretrained(str(p), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"no tokenizer could be loaded from {what} directory {str(path)!r}: {e}") from e


def swap_model_dir(
    model_dir: str | Path,
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    method: str,
    *,
    old_tokenizer_dir: str | Path | None = None,
    donor_dir: str | Path | None = None,
    seed: int = 0,
    pad_multiple: int = 64,
    texts: Iterable[str] | None = None,
    fasttext: FastTextOptions = FastTextOptions(),
    omp_k: int = 8,
    cov_rows: int | None = COV_ROWS,
    trust_remote_code: bool = False,
) -> SwapReport:
    """Load a model dir and a tokenizer dir, swap, and write ``out_dir``:
    the model (safetensors), the new tokenizer and ``swap_report.json``.
    The old tokenizer is read from ``model_dir`` unless ``old_tokenizer_dir`` is given."""
    t0 = time.perf_counter()
    _check_method(method)
    if method == "omp" and donor_dir is None:
        raise VocabSwapError("method 'omp' needs a donor model that uses the new tokenizer (--donor DIR)")
    if method == "focus" and texts is None:
        raise VocabSwapError("method 'focus' needs target texts to train fastText on (--fasttext-texts PATH)")
    padded_size(1, pad_multiple)
    model = _load_model(model_dir, "model", trust_remote_code)
    old_tok = _load_tokenizer(old_tokenizer_dir or model_dir, "old tokenizer (model)", trust_remote_code)
    new_tok = _load_tokenizer(tokenizer_dir, "tokenizer", trust_remote_code)
    donor = None
    if donor_dir is not None:
        donor = _load_model(donor_dir, "donor", trust_remote_code)
        dtok_dir = Path(donor_dir)
        if (dtok_dir / "tokenizer.json").is_file() or (dtok_dir / "tokenizer_config.json").is_file():
            dtok = _load_tokenizer(dtok_dir, "donor", trust_remote_code)
            if dtok.get_vocab() != new_tok.get_vocab():
                raise VocabSwapError(f"the donor's tokenizer in {str(donor_dir)!r} differs from the new tokenizer")
    report = swap_model(
        model,
        old_tok,
        new_tok,
        method,
        seed=seed,
        pad_multiple=pad_multiple,
        texts=texts,
        fasttext=fasttext,
        donor=donor,
        omp_k=omp_k,
        cov_rows=cov_rows,
    )
    report.seconds = round(time.perf_counter() - t0, 3)
    report.extra.update({"model": str(model_dir), "tokenizer": str(tokenizer_dir)})
    if donor_dir is not None:
        report.extra["donor"] = str(donor_dir)

    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(str(tmp))
        new_tok.save_pretrained(str(tmp))
        report.write(tmp / REPORT_NAME)
    return report


# ---------------------------------------------------------------- sanity table


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


# ---------------------------------------------------------------- CLI


def load_texts(paths: Sequence[str | Path], text_field: str = "text") -> list[str]:
    """Texts from files, directories or globs: ``.jsonl`` (one JSON object a line,
    ``text_field``) or plain text (one text per non-empty line)."""
    files: list[Path] = []
    for p in paths:
        hits = sorted(glob.glob(str(p), recursive=True)) or [str(p)]
        for h in hits:
            hp = Path(h)
            if hp.is_dir():
                files.extend(sorted(q for q in hp.rglob("*") if q.is_file()))
            elif hp.is_file():
                files.append(hp)
            else:
                raise FileNotFoundError(f"text file {str(h)!r} does not exist")
    out: list[str] = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            if f.suffix == ".jsonl":
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        obj = json.loads(line)
                        if text_field not in obj:
                            raise VocabSwapError(f"{f}:{n}: no field {text_field!r}")
                        out.append(str(obj[text_field]))
            else:
                out.extend(line.rstrip("\n") for line in fh if line.strip())
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m warmstart.vocab_swap",
        description="Swap a Hugging Face causal LM's vocabulary for a new tokenizer.",
    )
    p.add_argument("--model", required=True, help="model directory (AutoModelForCausalLM, safetensors, with its tokenizer)")
    p.add_argument("--tokenizer", required=True, help="new tokenizer directory (AutoTokenizer)")
    p.add_argument("--method", required=True, help=f"one of: {', '.join(METHODS)}")
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--old-tokenizer", default=None, help="old tokenizer directory (default: --model)")
    p.add_argument("--donor", default=None, help="omp: a model directory that uses the new tokenizer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pad-multiple", type=int, default=64)
    p.add_argument("--omp-k", type=int, default=8)
    p.add_argument("--cov-rows", type=int, default=COV_ROWS, help="rows the covariance of random rows is estimated from (0: all)")
    d = FastTextOptions()
    p.add_argument("--fasttext-texts", nargs="+", default=None, help="focus: target texts (.jsonl or .txt files, dirs, globs)")
    p.add_argument("--text-field", default="text", help="field of .jsonl texts")
    p.add_argument("--fasttext-dim", type=int, default=d.dim)
    p.add_argument("--fasttext-epochs", type=int, default=d.epochs)
    p.add_argument("--fasttext-window", type=int, default=d.window)
    p.add_argument("--fasttext-min-count", type=int, default=d.min_count)
    p.add_argument("--fasttext-bucket", type=int, default=d.bucket)
    p.add_argument("--fasttext-workers", type=int, default=d.workers)
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        _check_method(args.method)
        texts = load_texts(args.fasttext_texts, args.text_field) if args.fasttext_texts else None
        ft = FastTextOptions(
            dim=args.fasttext_dim,
            epochs=args.fasttext_epochs,
            window=args.fasttext_window,
            min_count=args.fasttext_min_count,
            bucket=args.fasttext_bucket,
            workers=args.fasttext_workers,
        )
        report = swap_model_dir(
            args.model,
            args.tokenizer,
            args.out,
            args.method,
            old_tokenizer_dir=args.old_tokenizer,
            donor_dir=args.donor,
            seed=args.seed,
            pad_multiple=args.pad_multiple,
            texts=texts,
            fasttext=ft,
            omp_k=args.omp_k,
            cov_rows=args.cov_rows or None,
            trust_remote_code=args.trust_remote_code,
        )
    except (VocabSwapError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = {k: v for k, v in report.to_dict().items() if k not in ("specials", "suppressed_ids", "extra")}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
