"""The corpus stage: sources -> filters -> document split -> dedup -> jsonl.

Output ``<data_dir>/corpus/<lang>/{train,val,test}.jsonl``, one paragraph per
line: ``{"id", "doc", "page", "lang", "kind", "text"}``, paragraphs of a
document consecutive and in reading order. The directory is written whole or
not at all. :func:`build_corpus` returns the stage metrics.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from warmstart.config import Params
from warmstart.data.clean import LanguageFilter, utf8_len, words
from warmstart.data.dedup import Signer, StreamDeduplicator
from warmstart.data.parallel import ordered_map
from warmstart.data.sources import Document, SourceReport, iter_documents
from warmstart.data.split import SPLITS, assign_splits
from warmstart.io import atomic_dir, read_jsonl

FILTERS = ("code", "min_chars", "langid", "exact_dup", "near_dup")


def corpus_dir(params: Params) -> Path:
    return params.path("corpus")


def load_split(params_or_dir: Params | str | Path, lang: str, split: str) -> list[dict]:
    """Records of one language and split, as the corpus stage wrote them."""
    root = corpus_dir(params_or_dir) if isinstance(params_or_dir, Params) else Path(params_or_dir)
    path = root / lang / f"{split}.jsonl"
    if not path.is_file():
        have = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
        raise FileNotFoundError(f"no corpus split {path}; languages present: {have} (run the corpus stage)")
    return read_jsonl(path)


def load_texts(params_or_dir: Params | str | Path, lang: str, split: str) -> list[str]:
    return [r["text"] for r in load_split(params_or_dir, lang, split)]


# ---------------------------------------------------------------- pass 1: filter and sign (in workers)

_WORKER: dict = {}


def _init_worker(threshold: float, candidates: list[str] | None, keep_code: bool, min_chars: int, signer) -> None:
    _WORKER.update(lid=LanguageFilter(threshold, candidates), keep_code=keep_code, min_chars=min_chars, sign=signer)


def _classify(docs: list[Document]) -> list[tuple[Document, list[str | None], list[tuple]]]:
    """Per document: each paragraph's verdict (None: kept, else the filter that removed it) and the kept
    paragraphs' dedup signatures."""
    w = _WORKER
    out = []
    for d in docs:
        verdicts, sigs = [], []
        for p in d.paragraphs:
            if p.kind == "code":
                v = None if w["keep_code"] else "code"
            elif len(p.text) < w["min_chars"]:
                v = "min_chars"
            elif not w["lid"].keep(p.text, d.lang):
                v = "langid"
            else:
                v = None
            verdicts.append(v)
            if v is None:
                sigs.append(w["sign"](p.text))
        out.append((d, verdicts, sigs))
    return out


def _doc_batches(docs, size: int = 64):
    batch = []
    for d in docs:
        batch.append(d)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Spill:
    """One language's kept paragraphs in reading order, on disk: a jsonl of records and a file of fixed-size
    signatures (exact key, MinHash values), read back in step."""

    def __init__(self, root: Path, lang: str, num_perm: int):
        self.root, self.num_perm = root / lang, num_perm
        self.root.mkdir(parents=True)
        self.text = open(self.root / "paragraphs.jsonl", "w", encoding="utf-8")
        self.sigs = open(self.root / "signatures.bin", "wb")

    def add(self, rec: dict, key: int, sig) -> None:
        self.text.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self.sigs.write(np.uint64(key).tobytes())
        self.sigs.write(np.zeros(self.num_perm, np.uint32).tobytes() if sig is None else sig.tobytes())

    def close(self) -> None:
        self.text.close()
        self.sigs.close()

    def read(self):
        size = 8 + 4 * self.num_perm
        with (
            open(self.root / "paragraphs.jsonl", encoding="utf-8") as ft,
            open(self.root / "signatures.bin", "rb") as fs,
        ):
            for line in ft:
                raw = fs.read(size)
                yield json.loads(line), int(np.frombuffer(raw[:8], np.uint64)[0]), np.frombuffer(raw[8:], np.uint32)


def _pass1(params: Params, report: SourceReport, spill_root: Path, langs: list[str]) -> dict:
    """Read, filter and sign every document (``corpus.workers`` processes); kept paragraphs go to the spills."""
    cfg = params.corpus
    candidates = (
        None
        if cfg.langid.candidates == "all"
        else (params.languages if cfg.langid.candidates == "corpus" else list(cfg.langid.candidates))
    )
    LanguageFilter(cfg.langid.threshold, candidates)  # a bad candidate list fails here, before any worker starts
    d = cfg.dedup
    signer = Signer(d.exact, d.near_threshold is not None, d.num_perm, d.shingle_chars, params.shared.seed)
    spills = {lang: _Spill(spill_root, lang, d.num_perm) for lang in langs}
    stats_in = {lang: {"documents": 0, "paragraphs": 0, "bytes": 0} for lang in langs}
    doc_sets: dict[str, set] = defaultdict(set)
    removed: dict[str, Counter] = defaultdict(Counter)
    doc_bytes: Counter = Counter()
    args = (cfg.langid.threshold, candidates, cfg.keep_code, cfg.min_chars, signer)
    batches = _doc_batches(iter_documents(params, report))
    try:
        for results in tqdm(
            ordered_map(_classify, batches, cfg.workers, _init_worker, args), desc="filter", leave=False
        ):
            for doc, verdicts, sigs in results:
                doc_sets[doc.lang].add(doc.doc)
                stats_in[doc.lang]["paragraphs"] += len(doc.paragraphs)
                stats_in[doc.lang]["bytes"] += utf8_len(p.text for p in doc.paragraphs)
                kept = [p for p, v in zip(doc.paragraphs, verdicts) if v is None]
                for v in verdicts:
                    if v is not None:
                        removed[doc.lang][v] += 1
                doc_bytes[doc.doc] += utf8_len(p.text for p in kept)
                for i, (p, (key, sig)) in enumerate(zip(kept, sigs)):
                    rec = {"id": f"{doc.page}#{i}", "doc": doc.doc, "page": doc.page, "lang": doc.lang, "kind": p.kind}
                    spills[doc.lang].add(rec | {"text": p.text}, key, sig)
    finally:
        for sp in spills.values():
            sp.close()
    for lang in langs:
        stats_in[lang]["documents"] = len(doc_sets[lang])
    return {"spills": spills, "stats_in": stats_in, "removed": removed, "doc_bytes": dict(doc_bytes)}


def build_corpus(params: Params, out_dir: str | Path | None = None) -> dict:
    """Run the whole corpus stage; returns the metrics it also writes to JSON.

    Two passes over the sources, in bounded memory (what grows with the corpus: a few integers per document,
    8 bytes per kept paragraph and LSH band, and the disk spill). 1. Read, filter (code, length, language ID)
    and sign each paragraph, in ``corpus.workers`` processes; kept paragraphs go to a spill on disk in reading
    order. 2. Split by document, then deduplicate held-out text first (test, val, train: a paragraph shared
    with train is dropped from train) and write each split in reading order.
    """
    t0 = time.time()
    cfg = params.corpus
    report = SourceReport()
    langs = params.languages
    out = Path(out_dir) if out_dir is not None else corpus_dir(params)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.spill-", dir=out.parent) as spill_root:
        p1 = _pass1(params, report, Path(spill_root), langs)
        stats_in, removed, spills = p1["stats_in"], p1["removed"], p1["spills"]
        empty = [lang for lang in langs if stats_in[lang]["documents"] == 0]
        if empty:
            raise ValueError(f"no documents for language(s) {empty}: add a source for them in corpus.sources")
        assignment = assign_splits(
            p1["doc_bytes"],
            cfg.split.val_fraction,
            cfg.split.test_fraction,
            params.shared.seed,
            cfg.split.val_documents,
            cfg.split.test_documents,
        )
        splits_stats: dict[str, dict] = {}
        with atomic_dir(out) as tmp:
            for lang in langs:
                splits_stats[lang] = _pass2(params, spills[lang], assignment, removed[lang], tmp / lang, spill_root)
            for lang in langs:  # a too-small language fails the stage, loudly, before the output is put in place
                _check_train_bytes(params, lang, splits_stats[lang], stats_in[lang], removed[lang])
            for lang in langs:
                for split in SPLITS:
                    if not splits_stats[lang][split]["paragraphs"]:
                        raise ValueError(
                            f"corpus: the {split} split of {lang} is empty after filtering; "
                            f"lower corpus.min_chars / corpus.langid.threshold or add documents"
                        )

    split_docs = {s: sorted(d for d, x in assignment.items() if x == s) for s in SPLITS}
    return {
        "languages": {
            lang: {
                "input": stats_in[lang],
                "removed": {f: removed[lang][f] for f in FILTERS},
                "splits": splits_stats[lang],
            }
            for lang in langs
        },
        "split_documents": split_docs,
        "sources": {
            "handbook": report.handbook,
            "skipped_files": report.skipped_files,
            "skipped_line_count": report.skipped_line_count,
            "skipped_lines": report.skipped_lines,
        },
        "seconds": round(time.time() - t0, 2),
    }


def _pass2(params: Params, spill: _Spill, assignment: dict, removed: Counter, out: Path, spill_root) -> dict:
    """Deduplicate one language's paragraphs in priority order (test, val, train) and write its splits."""
    d = params.corpus.dedup
    dedup = StreamDeduplicator(d.exact, d.near_threshold, d.num_perm, d.false_negative_weight, d.verify, spill_root)
    stats = {}
    out.mkdir(parents=True)
    try:
        for split in ("test", "val", "train"):  # held-out text first
            docs, n, nbytes, nwords = set(), 0, 0, 0
            with open(out / f"{split}.jsonl", "w", encoding="utf-8") as fh:
                for rec, key, sig in spill.read():
                    if assignment[rec["doc"]] != split:
                        continue
                    dup = dedup.check(key, sig if d.near_threshold is not None else None)
                    if dup:
                        removed[dup] += 1
                        continue
                    fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                    docs.add(rec["doc"])
                    n, nbytes, nwords = n + 1, nbytes + len(rec["text"].encode("utf-8")), nwords + words(rec["text"])
            stats[split] = {"documents": len(docs), "paragraphs": n, "bytes": nbytes, "words": nwords}
    finally:
        dedup.close()
    return {s: stats[s] for s in SPLITS}


def _check_train_bytes(params: Params, lang: str, stats: dict, stats_in: dict, removed: Counter) -> None:
    """Refuse a language with less than ``corpus.min_train_bytes`` of training text, saying why."""
    cfg = params.corpus
    n = stats["train"]["bytes"]
    if n < cfg.min_train_bytes:
        raise ValueError(
            f"corpus: {lang} keeps only {n:,} bytes of training text after filtering, below "
            f"corpus.min_train_bytes={cfg.min_train_bytes:,}; language ID removed {removed['langid']:,} "
            f"of its {stats_in['paragraphs']:,} paragraphs (an untranslated source, such as the handbook's da-DK, is "
            f"mostly English). Add a source for {lang} in corpus.sources, or choose another language"
        )


def corpus_table(metrics: dict):
    """One row per language and split: documents, paragraphs, bytes, words."""
    import pandas as pd

    rows = [
        {"lang": lang, "split": split, **vals}
        for lang, m in metrics["languages"].items()
        for split, vals in m["splits"].items()
    ]
    return pd.DataFrame(rows)


def filter_table(metrics: dict):
    """Paragraphs in, and how many each filter removed, per language."""
    import pandas as pd

    rows = [
        {"lang": lang, "paragraphs_in": m["input"]["paragraphs"], **m["removed"]}
        for lang, m in metrics["languages"].items()
    ]
    return pd.DataFrame(rows)
