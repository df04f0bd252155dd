"""EOS-separated packing of tokenized documents into fixed-length rows.

This is CSMPT's ``Concat`` dataset: documents are concatenated, each followed
by one EOS token, and the stream is cut into rows of exactly ``seq_len``
tokens; a document may straddle rows. Nothing is padded and nothing dropped.

* :class:`PackedStream`: one corpus, held in memory (:class:`ListDocuments`)
  or memory-mapped from token shards (:class:`MappedDocuments`, the trainer's
  path: :mod:`warmstart.data.shards`); both give the same rows. Deterministic and resumable: the
  document order of epoch ``e`` is a permutation drawn from ``(seed, e)``, so
  the whole position is three integers ``{epoch, index, offset}`` (offset =
  tokens of the current document already emitted, EOS included in its
  length). ``state_dict()``/``load_state_dict()`` round-trip exactly.
* :class:`CorpusStream`: several named corpora, either hot-swapped at given
  steps (CSMPT swapped corpora mid-run; a corpus swapped back in resumes
  where it stopped) or mixed row by row with fixed weights (smooth weighted
  round robin: after ``k`` rows each corpus has had ``w * k`` rows up to less
  than one, deterministically).
* :func:`document_attention_mask`: the 4D mask that keeps attention inside a
  document (causal or bidirectional per row), in the format transformers
  Llama/Mistral accept as ``attention_mask`` (a 4D mask is used as given).

Every row also carries ``doc_ids`` (segment index within the row) and
``position_ids`` (position within the segment, restarting at 0 for every
document piece). Passing those ``position_ids`` with ``attention_mask=None``
**and ``use_cache=False``** makes transformers (5.x) build the block-diagonal
causal mask itself (packed-sequence detection; flash-attention varlen on
GPU). Beware: with the default ``use_cache=True`` the model creates a cache
object and silently skips that detection, so documents see each other (a
test pins this). Pass neither to train on the plain concatenation.

Loss roles (chat fine-tuning): a stream built ``with_roles`` also gives each token a role, the loss weight
class of that token as a label (:data:`ROLES`): shards written with roles (:func:`warmstart.data.shards.
write_role_shards`) give their own, the separators and BOS of such documents are ``ignore``; plain text
(the replay rows) is ``text`` throughout, separators included, as plain training trains them.

Byte accounting: each document may carry its UTF-8 byte length; the bytes of
a document are credited in proportion to the tokens emitted, using integer
cumulative rounding, so they add up exactly to the document's length once
it has been emitted in full.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

# a token's loss role as a label: ignore (template and separators of chat items), text (plain text, replay),
# prompt (system/user turns of a chat item), response (assistant turns: inside the template's generation marks)
ROLES = ("ignore", "text", "prompt", "response")
ROLE_IGNORE, ROLE_TEXT, ROLE_PROMPT, ROLE_RESPONSE = range(4)


@dataclass
class PackedBatch:
    """Rows from a stream: ``[n, seq_len]`` int64 tensors plus bookkeeping (``roles``: uint8, streams built
    ``with_roles`` only)."""

    input_ids: torch.Tensor
    doc_ids: torch.Tensor
    position_ids: torch.Tensor
    bytes: int = 0
    corpora: list[str] = field(default_factory=list)
    roles: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, rows: slice | Sequence[int]) -> PackedBatch:
        idx = rows if isinstance(rows, slice) else torch.as_tensor(list(rows), dtype=torch.long)
        corp = self.corpora[rows] if isinstance(rows, slice) else [self.corpora[i] for i in rows]
        roles = None if self.roles is None else self.roles[idx]
        return PackedBatch(self.input_ids[idx], self.doc_ids[idx], self.position_ids[idx], 0, corp, roles)


class ListDocuments:
    """Documents held in memory: token-id sequences, each followed by ``eos_id`` (and preceded by ``bos_id``)."""

    def __init__(self, docs: Sequence[Sequence[int]], eos_id: int, doc_bytes: Sequence[int] | None = None, bos_id=None):
        pre = [] if bos_id is None else [int(bos_id)]
        self.docs = [np.asarray([*pre, *d, eos_id], dtype=np.int64) for d in docs]
        self.doc_bytes = list(doc_bytes) if doc_bytes is not None else [0] * len(self.docs)
        if len(self.doc_bytes) != len(self.docs):
            raise ValueError("doc_bytes must have one entry per document")

    def __len__(self) -> int:
        return len(self.docs)

    def length(self, i: int) -> int:
        return len(self.docs[i])

    def nbytes(self, i: int) -> int:
        return self.doc_bytes[i]

    def fill(self, i: int, lo: int, hi: int, out: np.ndarray) -> None:
        out[:] = self.docs[i][lo:hi]

    def fill_roles(self, i: int, lo: int, hi: int, out: np.ndarray) -> None:
        out[:] = ROLE_TEXT


class MappedDocuments:
    """Documents of memory-mapped token shards (:class:`~warmstart.data.shards.TokenShards`), with the same
    separators as :class:`ListDocuments`: only the rows' slices are ever read from disk."""

    def __init__(self, shards, eos_id: int, bos_id: int | None = None):
        self.shards, self.eos_id, self.bos_id = shards, int(eos_id), bos_id
        self.pre = 0 if bos_id is None else 1

    def __len__(self) -> int:
        return len(self.shards)

    def length(self, i: int) -> int:
        return self.shards.length(i) + self.pre + 1

    def nbytes(self, i: int) -> int:
        return self.shards.nbytes(i)

    def fill(self, i: int, lo: int, hi: int, out: np.ndarray) -> None:
        s, a, b = self.shards.span(i)
        n, k = b - a, 0
        if self.pre and lo == 0:
            out[0], k = self.bos_id, 1
        t_lo, t_hi = max(lo - self.pre, 0), min(hi - self.pre, n)
        if t_hi > t_lo:
            out[k : k + t_hi - t_lo] = self.shards.shard_tokens(s)[a + t_lo : a + t_hi]
            k += t_hi - t_lo
        if k < hi - lo:  # the separator after the document
            out[k] = self.eos_id

    def fill_roles(self, i: int, lo: int, hi: int, out: np.ndarray) -> None:
        """The roles of tokens ``lo:hi`` as :meth:`fill` lays them out: the shards' own (BOS and separator
        ``ignore``), or ``text`` throughout for shards written without roles."""
        if not self.shards.has_roles:
            out[:] = ROLE_TEXT
            return
        out[:] = ROLE_IGNORE
        s, a, b = self.shards.span(i)
        t_lo, t_hi = max(lo - self.pre, 0), min(hi - self.pre, b - a)
        if t_hi > t_lo:
            k = 1 if self.pre and lo == 0 else 0
            out[k : k + t_hi - t_lo] = self.shards.shard_roles(s)[a + t_lo : a + t_hi]


class PackedStream:
    """Endless, deterministic stream of packed rows over one corpus of documents.

    ``docs``: token-id sequences *without* the separator (``eos_id`` is appended to each), or a
    :class:`ListDocuments`/:class:`MappedDocuments` source. ``doc_bytes``: optional UTF-8 byte length per
    document (for a list). ``shuffle``: a fresh seeded permutation of the documents every epoch.
    Only the permutation (8 bytes per document) is held in memory; a mapped corpus is read row by row.
    """

    def __init__(
        self,
        docs,
        seq_len: int,
        eos_id: int,
        seed: int = 0,
        shuffle: bool = True,
        doc_bytes: Sequence[int] | None = None,
        with_roles: bool = False,
    ):
        if not isinstance(docs, ListDocuments | MappedDocuments):
            docs = ListDocuments(docs, eos_id, doc_bytes)
        if not len(docs):
            raise ValueError("PackedStream needs at least one document")
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        self.docs = docs
        self.seq_len, self.eos_id, self.seed, self.shuffle = seq_len, eos_id, seed, shuffle
        self.with_roles = with_roles
        self.epoch = self.index = self.offset = 0
        self._perm_epoch, self._perm = -1, None

    # -- state -----------------------------------------------------------
    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index, "offset": self.offset}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.epoch, self.index, self.offset = int(state["epoch"]), int(state["index"]), int(state["offset"])

    # -- iteration -------------------------------------------------------
    def _order(self) -> np.ndarray:
        if self._perm_epoch != self.epoch:
            n = len(self.docs)
            self._perm = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)
            self._perm_epoch = self.epoch
        return self._perm

    def next_row(self, read: bool = True) -> tuple:
        """One row: (input_ids, doc_ids, position_ids, bytes consumed, roles). ``read=False`` advances the
        position and counts the bytes without reading tokens (the rows another rank trains on); the arrays are
        then None. ``roles`` (uint8) only ``with_roles``, else None."""
        T = self.seq_len
        roles = np.empty(T, np.uint8) if read and self.with_roles else None
        if read:
            ids, seg, pos = np.empty(T, np.int64), np.empty(T, np.int64), np.empty(T, np.int64)
        filled, nseg, nbytes = 0, 0, 0
        docs, n_docs = self.docs, len(self.docs)
        while filled < T:
            d = int(self._order()[self.index])
            n = docs.length(d)
            take = min(T - filled, n - self.offset)
            if read:
                docs.fill(d, self.offset, self.offset + take, ids[filled : filled + take])
                if roles is not None:
                    docs.fill_roles(d, self.offset, self.offset + take, roles[filled : filled + take])
                seg[filled : filled + take] = nseg
                pos[filled : filled + take] = np.arange(take)
            b = docs.nbytes(d)
            nbytes += b * (self.offset + take) // n - b * self.offset // n
            filled, nseg, self.offset = filled + take, nseg + 1, self.offset + take
            if self.offset == n:
                self.offset, self.index = 0, self.index + 1
                if self.index == n_docs:
                    self.index, self.epoch = 0, self.epoch + 1
        if not read:
            return None, None, None, nbytes, None
        return ids, seg, pos, nbytes, roles

    def next_rows(self, n: int, name: str = "") -> PackedBatch:
        rows = [self.next_row() for _ in range(n)]
        return _stack(rows, [name] * n, self.seq_len)


def _stack(rows: list[tuple], corpora: list[str], seq_len: int) -> PackedBatch:
    """Rows into a batch; a row that was not read (another rank's) is zeros."""
    zero = np.zeros(seq_len, np.int64)

    def col(k: int, z: np.ndarray = zero) -> torch.Tensor:
        return torch.from_numpy(np.stack([z if r[k] is None else r[k] for r in rows]))

    with_roles = any(r[4] is not None for r in rows)
    return PackedBatch(
        input_ids=col(0),
        doc_ids=col(1),
        position_ids=col(2),
        bytes=sum(r[3] for r in rows),
        corpora=corpora,
        roles=col(4, zero.astype(np.uint8)) if with_roles else None,
    )


class CorpusStream:
    """Named corpora, hot-swapped by step or mixed by weight.

    ``schedule``: ``[(step, name), ...]`` sorted, first at step 0; from
    ``step`` on, rows come from ``name``. ``mix``: ``{name: weight}``; rows
    are assigned to corpora by smooth weighted round robin (the corpus with
    the largest deficit ``w_i * (k + 1) - count_i`` gets row ``k``; ties go to
    the first listed). Give one or the other; with neither, the single
    corpus is used. The state holds every corpus position, the mixing
    counts and the number of rows drawn.
    """

    def __init__(
        self,
        streams: Mapping[str, PackedStream],
        schedule: Sequence[tuple[int, str]] | None = None,
        mix: Mapping[str, float] | None = None,
    ):
        self.streams = dict(streams)
        if schedule and mix:
            raise ValueError("give a hot-swap schedule or mixing weights, not both")
        if not schedule and not mix:
            if len(self.streams) != 1:
                raise ValueError("several corpora need a schedule or mixing weights")
            schedule = [(0, next(iter(self.streams)))]
        self.schedule = sorted((int(s), str(c)) for s, c in schedule) if schedule else None
        if self.schedule and self.schedule[0][0] != 0:
            raise ValueError("the corpus schedule must start at step 0")
        if mix:
            total = float(sum(mix.values()))
            self.mix = {k: float(v) / total for k, v in mix.items()}
        else:
            self.mix = None
        unknown = ({c for _, c in self.schedule or []} | set(self.mix or {})) - set(self.streams)
        if unknown:
            raise ValueError(f"unknown corpora {sorted(unknown)}; known: {sorted(self.streams)}")
        self.rows = 0
        self.counts = {k: 0 for k in self.mix or {}}

    def corpus_at(self, step: int) -> str:
        """Corpus in use at ``step`` under the hot-swap schedule ("mix" when mixing)."""
        if self.mix:
            return "mix"
        return [c for s, c in self.schedule if s <= step][-1]

    def _mixed_choice(self) -> str:
        k = self.rows
        return max(self.mix, key=lambda c: (self.mix[c] * (k + 1) - self.counts[c], -list(self.mix).index(c)))

    def next_rows(self, n: int, step: int, read: Container[int] | None = None) -> PackedBatch:
        """The next ``n`` rows. ``read``: the row indices (0..n-1) to read; the others advance the stream and
        count their bytes but are zeros (a rank reads only its own rows). None reads every row."""
        rows, names = [], []
        for r in range(n):
            name = self._mixed_choice() if self.mix else self.corpus_at(step)
            if self.mix:
                self.counts[name] += 1
            rows.append(self.streams[name].next_row(read is None or r in read))
            names.append(name)
            self.rows += 1
        return _stack(rows, names, next(iter(self.streams.values())).seq_len)

    def state_dict(self) -> dict:
        return {
            "rows": self.rows,
            "counts": dict(self.counts),
            "streams": {k: s.state_dict() for k, s in self.streams.items()},
        }

    def load_state_dict(self, state: Mapping) -> None:
        self.rows = int(state["rows"])
        self.counts = {k: int(v) for k, v in state["counts"].items()}
        for k, s in state["streams"].items():
            self.streams[k].load_state_dict(s)
