"""Document-level splits that are identical in every language.

Documents (handbook chapters, files, dataset rows) are ranked by a seeded hash
of their id, which does not depend on the language, and held out in that order
until each held-out split reaches its share of the bytes. Chapters of the
handbook have the same id in every translation, so the same chapters are held
out everywhere and no test content is ever trained on, in any language.
"""

from __future__ import annotations

import hashlib

SPLITS = ("train", "val", "test")


def _rank(doc: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{doc}".encode()).hexdigest()


def assign_splits(
    doc_bytes: dict[str, int],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    val_documents: list[str] | None = None,
    test_documents: list[str] | None = None,
) -> dict[str, str]:
    """Map every document id to 'train', 'val' or 'test'.

    ``doc_bytes`` holds the size of each document summed over all languages.
    Explicit ``*_documents`` lists take precedence over the fractions. A
    document that would overshoot a split's share by more than half is
    skipped; each held-out split gets at least one document when its fraction
    is > 0, and at least one document is left for training.
    """
    val_documents, test_documents = list(val_documents or []), list(test_documents or [])
    unknown = sorted(set(val_documents + test_documents) - set(doc_bytes))
    if unknown:
        raise ValueError(f"corpus.split names unknown documents {unknown}; known: {sorted(doc_bytes)}")
    both = sorted(set(val_documents) & set(test_documents))
    if both:
        raise ValueError(f"corpus.split: documents {both} are listed as both val and test")
    if len(doc_bytes) < 2 + (val_fraction > 0 and not val_documents):
        raise ValueError(f"need at least {2 + (val_fraction > 0)} documents to split, got {len(doc_bytes)}")

    out = {d: "train" for d in doc_bytes}
    for d in val_documents:
        out[d] = "val"
    for d in test_documents:
        out[d] = "test"
    total = sum(doc_bytes.values())
    order = sorted((d for d in doc_bytes if out[d] == "train"), key=lambda d: _rank(d, seed))
    for split, frac, explicit in (("test", test_fraction, test_documents), ("val", val_fraction, val_documents)):
        if explicit or frac <= 0:
            continue
        # take documents in seeded order, skipping any that would overshoot the
        # share by more than half; fall back to the smallest if none fits
        got, limit = 0, 1.5 * frac * total
        for d in list(order):
            if got >= frac * total or len(order) <= 1:
                break
            if got + doc_bytes[d] <= limit:
                order.remove(d)
                out[d] = split
                got += doc_bytes[d]
        if got == 0 and len(order) > 1:
            d = min(order, key=lambda d: (doc_bytes[d], _rank(d, seed)))
            order.remove(d)
            out[d] = split
    if "train" not in out.values():
        raise ValueError("corpus.split leaves no document for training")
    return out
