"""Paragraph filters: language identification, length, exact and near duplicates."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable

_WS = re.compile(r"\s+")

# Handbook/BCP-47 style code -> py3langid label, where the primary subtag differs.
_LANGID_ALIASES = {"nb": "no", "nob": "no", "nno": "nn"}


def langid_code(lang: str) -> str:
    """'nb-NO' -> 'no', 'cs-CZ' -> 'cs', 'zh-TW' -> 'zh' (py3langid's labels)."""
    primary = lang.split("-")[0].lower()
    return _LANGID_ALIASES.get(primary, primary)


class LanguageFilter:
    """Keeps paragraphs that py3langid assigns to the expected language.

    ``candidates`` restricts the identifier's label set: with "corpus" only the
    corpus languages compete, which is what we need to drop untranslated
    English from a translation without confusing Bokmål with Danish.
    """

    def __init__(self, threshold: float, candidates: list[str] | None):
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        self.threshold = threshold
        self.ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        labels = set(self.ident.nb_classes)
        if candidates is not None:
            codes = sorted({langid_code(c) for c in candidates})
            unknown = [c for c in codes if c not in labels]
            if unknown:
                raise ValueError(
                    f"corpus.langid: no language-ID model for {unknown}; known labels: {', '.join(sorted(labels))}"
                )
            if len(codes) > 1:
                self.ident.set_languages(codes)
            self.labels = set(codes)
        else:
            self.labels = labels

    def classify(self, text: str) -> tuple[str, float]:
        label, prob = self.ident.classify(text)
        return str(label), float(prob)

    def keep(self, text: str, lang: str) -> bool:
        want = langid_code(lang)
        if want not in self.labels:
            raise ValueError(
                f"language {lang!r} ({want}) is not among the language-ID candidates {sorted(self.labels)}"
            )
        if len(self.labels) == 1:
            return True
        label, prob = self.classify(text)
        return label == want and prob >= self.threshold


def normalize_for_dedup(text: str) -> str:
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def _shingles(text: str, k: int) -> set[bytes]:
    t = normalize_for_dedup(text)
    if len(t) <= k:
        return {t.encode("utf-8")}
    return {t[i : i + k].encode("utf-8") for i in range(len(t) - k + 1)}


class Deduplicator:
    """Exact (normalised hash) and near (MinHash LSH) duplicate detection.

    Feed paragraphs in priority order: the first copy is kept, later ones are
    reported as duplicates. The corpus stage feeds test, then val, then train,
    so a paragraph shared with held-out text is dropped from training.
    """

    def __init__(
        self,
        exact: bool = True,
        near_threshold: float | None = 0.8,
        num_perm: int = 64,
        shingle_chars: int = 5,
        seed: int = 1,
    ):
        self.exact = exact
        self.near_threshold = near_threshold
        self.num_perm = num_perm
        self.shingle_chars = shingle_chars
        self.seed = seed
        self._hashes: set[str] = set()
        self._lsh = None
        self._n = 0
        if near_threshold is not None:
            from datasketch import MinHashLSH

            self._lsh = MinHashLSH(threshold=near_threshold, num_perm=num_perm)

    def _minhash(self, text: str):
        from datasketch import MinHash

        m = MinHash(num_perm=self.num_perm, seed=self.seed)
        m.update_batch(sorted(_shingles(text, self.shingle_chars)))
        return m

    def check(self, text: str) -> str | None:
        """None if new (and remember it), else 'exact_dup' or 'near_dup'."""
        if self.exact:
            h = hashlib.sha1(normalize_for_dedup(text).encode("utf-8")).hexdigest()
            if h in self._hashes:
                return "exact_dup"
            self._hashes.add(h)
        if self._lsh is not None:
            m = self._minhash(text)
            if self._lsh.query(m):
                return "near_dup"
            self._lsh.insert(str(self._n), m)
            self._n += 1
        return None


def jaccard(a: str, b: str, k: int = 5) -> float:
    """Exact Jaccard similarity of the character shingle sets (for tests and tuning)."""
    sa, sb = _shingles(a, k), _shingles(b, k)
    return len(sa & sb) / max(1, len(sa | sb))


def words(text: str) -> int:
    return len(text.split())


def utf8_len(texts: Iterable[str]) -> int:
    return sum(len(t.encode("utf-8")) for t in texts)


def first_bytes(texts: Iterable[str], max_bytes: int) -> list[str]:
    """The leading texts whose UTF-8 size adds up to at most ``max_bytes`` (at least one text). ``texts`` is read
    only as far as needed, so a stream of a whole corpus split costs ``max_bytes`` of memory."""
    out, total = [], 0
    for t in texts:
        n = len(t.encode("utf-8"))
        if out and total + n > max_bytes:
            break
        out.append(t)
        total += n
    return out
