"""Exact and near deduplication that streams: 8 bytes of memory per kept paragraph and band, signatures on disk.

:class:`~warmstart.data.clean.Deduplicator` (datasketch's ``MinHashLSH`` in memory) costs about 2 KB per
paragraph, which a real corpus cannot afford. :class:`StreamDeduplicator` makes the same decisions in the same
order (feed paragraphs in priority order; the first copy is kept):

* exact: the first 8 bytes of the SHA-1 of the normalised text, in a :class:`U64Index`;
* near: the paragraph's MinHash (datasketch, same permutations and seed) cut into the bands datasketch's
  ``MinHashLSH`` chooses for the threshold; each band's values hashed to 64 bits and looked up in one
  :class:`U64Index` per band. A paragraph sharing a band with a kept one is a near duplicate, as in datasketch;
  with ``verify`` a candidate counts only when the share of equal MinHash values (the Jaccard estimate) is at
  least ``verify``: chance band collisions then remove nothing (datatrove's MinHash, measured, does not
  verify and removed 53 of 32,000 clean documents at 91 MB). The kept signatures then go to a file on disk.

Two 64-bit hashes collide with probability 2^-64 per pair: the decisions equal datasketch's but for that.
Signatures are computed by :class:`Signer` (picklable, so worker processes compute them in parallel).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from warmstart.data.clean import _shingles, normalize_for_dedup


class U64Index:
    """A growing multimap of integer keys (uint64, or uint32 where a collision is harmless) to uint32 values:
    sorted numpy runs merged as they grow (12 or 8 bytes per entry) and a small dict of the newest entries.
    Lookups cost one binary search per run (O(log n) runs)."""

    def __init__(self, buffer: int = 1 << 15, key_bits: int = 64):
        self.buffer = buffer
        self.kdtype = np.dtype(np.uint64 if key_bits == 64 else np.uint32)
        self.kmask = (1 << key_bits) - 1
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []
        self.recent: dict[int, list[int]] = {}
        self.size = 0

    def get(self, key: int) -> list[int]:
        key &= self.kmask
        out = list(self.recent.get(key, ()))
        k = self.kdtype.type(key)
        for keys, vals in self.runs:
            lo = int(np.searchsorted(keys, k, side="left"))
            if lo < len(keys) and keys[lo] == k:
                hi = int(np.searchsorted(keys, k, side="right"))
                out.extend(int(v) for v in vals[lo:hi])
        return out

    def __contains__(self, key: int) -> bool:
        key &= self.kmask
        if key in self.recent:
            return True
        k = self.kdtype.type(key)
        for keys, _ in self.runs:
            i = int(np.searchsorted(keys, k))
            if i < len(keys) and keys[i] == k:
                return True
        return False

    def add(self, key: int, value: int = 0) -> None:
        self.recent.setdefault(key & self.kmask, []).append(value)
        self.size += 1
        if len(self.recent) >= self.buffer:
            self._flush()

    def _flush(self) -> None:
        pairs = [(k, v) for k, vs in self.recent.items() for v in vs]
        run = (
            np.fromiter((k for k, _ in pairs), self.kdtype, len(pairs)),
            np.fromiter((v for _, v in pairs), np.uint32, len(pairs)),
        )
        self.recent = {}
        # merge while the newest run is at least half the size of the one before (logarithmically many runs)
        while self.runs and len(self.runs[-1][0]) <= 2 * len(run[0]):
            keys, vals = self.runs.pop()
            run = (np.concatenate([keys, run[0]]), np.concatenate([vals, run[1]]))
        order = np.argsort(run[0], kind="stable")
        self.runs.append((run[0][order], run[1][order]))

    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in self.runs)


def lsh_bands(threshold: float, num_perm: int, false_negative_weight: float = 0.5) -> list[tuple[int, int]]:
    """The MinHash index ranges of the bands datasketch's ``MinHashLSH`` uses for ``threshold``."""
    from datasketch import MinHashLSH

    w = false_negative_weight
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(1.0 - w, w))
    return [(i * lsh.r, (i + 1) * lsh.r) for i in range(lsh.b)]


class Signer:
    """A paragraph's dedup signature: (exact key, MinHash values); picklable for worker processes."""

    def __init__(self, exact: bool, near: bool, num_perm: int, shingle_chars: int, seed: int):
        self.exact, self.near = exact, near
        self.num_perm, self.shingle_chars, self.seed = num_perm, shingle_chars, seed
        self._perm = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_perm": None}

    def exact_key(self, text: str) -> int:
        return int.from_bytes(hashlib.sha1(normalize_for_dedup(text).encode("utf-8")).digest()[:8], "big")

    def minhash(self, text: str) -> np.ndarray:
        from datasketch import MinHash

        if self._perm is None:  # the permutations (and scheme) of MinHash(num_perm, seed), drawn once
            first = MinHash(num_perm=self.num_perm, seed=self.seed)
            self._perm = (first.permutations, first.scheme)
        m = MinHash(num_perm=self.num_perm, seed=self.seed, permutations=self._perm[0], scheme=self._perm[1])
        m.update_batch(sorted(_shingles(text, self.shingle_chars)))
        return m.hashvalues.astype(np.uint32)

    def __call__(self, text: str) -> tuple[int, np.ndarray | None]:
        return (self.exact_key(text) if self.exact else 0), (self.minhash(text) if self.near else None)


class StreamDeduplicator:
    """Exact and near duplicates in priority order with bounded memory (see the module docstring).

    ``check(key, signature)`` -> None (new: remembered) or ``"exact_dup"`` / ``"near_dup"``, the same contract as
    :meth:`~warmstart.data.clean.Deduplicator.check` on the paragraph's text.
    """

    def __init__(
        self,
        exact: bool = True,
        near_threshold: float | None = 0.8,
        num_perm: int = 64,
        false_negative_weight: float = 0.5,
        verify: float | None = None,
        spill_dir: str | Path | None = None,
    ):
        self.exact = exact
        self.hashes = U64Index()
        self.bands = lsh_bands(near_threshold, num_perm, false_negative_weight) if near_threshold is not None else []
        # verified candidates: 32-bit band keys (a chance collision only costs a verification)
        self.tables = [U64Index(key_bits=64 if verify is None else 32) for _ in self.bands]
        self.verify, self.num_perm, self.kept = verify, num_perm, 0
        self._fd = None
        if self.bands and verify is not None:
            fd, path = tempfile.mkstemp(prefix="signatures-", dir=spill_dir)
            os.unlink(path)  # anonymous: gone with the process
            self._fd = fd

    def _band_keys(self, sig: np.ndarray) -> list[int]:
        return [
            int.from_bytes(hashlib.blake2b(sig[a:b].astype("<u8").tobytes(), digest_size=8).digest(), "big")
            for a, b in self.bands
        ]

    def _similar(self, sig: np.ndarray, kept: list[int]) -> bool:
        if self._fd is None:
            return bool(kept)
        size = self.num_perm * 4
        for k in dict.fromkeys(kept):
            other = np.frombuffer(os.pread(self._fd, size, k * size), dtype=np.uint32)
            if np.mean(other == sig) >= self.verify:
                return True
        return False

    def check(self, key: int, sig: np.ndarray | None) -> str | None:
        if self.exact:
            if key in self.hashes:
                return "exact_dup"
            self.hashes.add(key)
        if self.bands:
            bkeys = self._band_keys(sig)
            if self._fd is None:
                if any(k in t for k, t in zip(bkeys, self.tables)):
                    return "near_dup"
            elif self._similar(sig, [v for k, t in zip(bkeys, self.tables) for v in t.get(k)]):
                return "near_dup"
            for k, t in zip(bkeys, self.tables):
                t.add(k, self.kept)
            if self._fd is not None:
                os.pwrite(self._fd, np.ascontiguousarray(sig, dtype=np.uint32).tobytes(), self.kept * self.num_perm * 4)
            self.kept += 1
            if self.kept >= 1 << 32:
                raise ValueError("near dedup indexes at most 2**32 kept paragraphs per language")
        return None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
