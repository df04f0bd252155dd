"""The corpus stage: sources -> filters -> document split -> dedup -> jsonl.

Output ``<data_dir>/corpus/<lang>/{train,val,test}.jsonl``, one paragraph per
line: ``{"id", "doc", "page", "lang", "kind", "text"}``, in reading order: a
page's paragraphs are consecutive, a document's need not be (the handbook's
pages interleave its chapters; :func:`warmstart.data.jsonl.iter_documents`
groups them). The directory is written whole or not at all. :func:`build_corpus` returns the stage metrics.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

from warmstart.config import Params
from warmstart.data.clean import LanguageFilter, first_bytes, words
from warmstart.data.dedup import StreamDeduplicator
from warmstart.data.engine import FILTERS, candidates, read_docs, read_paragraphs, run_pass1
from warmstart.data.split import SPLITS, assign_splits
from warmstart.io import atomic_dir, iter_jsonl


def corpus_dir(params: Params) -> Path:
    return params.path("corpus")


def _split_path(params_or_dir: Params | str | Path, lang: str, split: str) -> Path:
    root = corpus_dir(params_or_dir) if isinstance(params_or_dir, Params) else Path(params_or_dir)
    path = root / lang / f"{split}.jsonl"
    if not path.is_file():
        have = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
        raise FileNotFoundError(f"no corpus split {path}; languages present: {have} (run the corpus stage)")
    return path


def iter_split(params_or_dir: Params | str | Path, lang: str, split: str) -> Iterator[dict]:
    """Records of one language and split, as the corpus stage wrote them, streamed from disk (a missing split
    fails at the call, not at the first record)."""
    return iter_jsonl(_split_path(params_or_dir, lang, split))


def iter_split_texts(params_or_dir: Params | str | Path, lang: str, split: str) -> Iterator[str]:
    """The texts of :func:`iter_split`, streamed."""
    return (r["text"] for r in iter_split(params_or_dir, lang, split))


def head_records(params_or_dir: Params | str | Path, lang: str, splits: list[str], max_bytes: int) -> list[dict]:
    """The leading records of ``splits`` (in that order; the first must exist, a later one may be absent) whose
    texts add up to at most ``max_bytes`` of UTF-8 (at least one record), streamed: memory is bounded by
    ``max_bytes``, not the split."""
    out, total = [], 0
    for split in splits:
        if split != splits[0] and not _split_path_or_none(params_or_dir, lang, split):
            continue
        for r in iter_split(params_or_dir, lang, split):
            n = len(r["text"].encode("utf-8"))
            if out and total + n > max_bytes:
                return out
            out.append(r)
            total += n
    return out


def _split_path_or_none(params_or_dir: Params | str | Path, lang: str, split: str) -> Path | None:
    try:
        return _split_path(params_or_dir, lang, split)
    except FileNotFoundError:
        return None


def held_out_texts(params: Params | str | Path, lang: str, split: str, max_bytes: int) -> list[str]:
    """The leading non-blank texts of one corpus split, up to ``max_bytes``: what bits per byte is measured on."""
    texts = first_bytes((t for t in iter_split_texts(params, lang, split) if t.strip()), max_bytes)
    if not texts:
        raise ValueError(f"no held-out {split} text for {lang}")
    return texts


def load_split(params_or_dir: Params | str | Path, lang: str, split: str) -> list[dict]:
    """Every record of one split in memory: for tests and small corpora; stages stream with :func:`iter_split`."""
    return list(iter_split(params_or_dir, lang, split))


def load_texts(params_or_dir: Params | str | Path, lang: str, split: str) -> list[str]:
    """Every text of one split in memory (see :func:`load_split`)."""
    return list(iter_split_texts(params_or_dir, lang, split))


def _pass1(params: Params, spill: Path, langs: list[str]) -> dict:
    """Read, filter and sign every document on ``corpus.executor`` (:mod:`warmstart.data.engine`); the counts."""
    LanguageFilter(params.corpus.langid.threshold, candidates(params))  # a bad candidate list fails before any task
    parts = run_pass1(params, spill)
    stats_in = {lang: {"documents": 0, "paragraphs": 0, "bytes": 0} for lang in langs}
    doc_sets: dict[str, set] = defaultdict(set)
    removed: dict[str, Counter] = defaultdict(Counter)
    doc_bytes: Counter = Counter()
    for r in read_docs(parts):
        doc_sets[r["lang"]].add(r["doc"])
        stats_in[r["lang"]]["paragraphs"] += r["paragraphs"]
        stats_in[r["lang"]]["bytes"] += r["bytes"]
        removed[r["lang"]].update(r["removed"])
        doc_bytes[r["doc"]] += r["kept_bytes"]
    for lang in langs:
        stats_in[lang]["documents"] = len(doc_sets[lang])
    report = json.loads((parts[0] / "report.json").read_text(encoding="utf-8"))
    return {"parts": parts, "stats_in": stats_in, "removed": removed, "doc_bytes": dict(doc_bytes), "report": report}


def build_corpus(params: Params, out_dir: str | Path | None = None) -> dict:
    """Run the whole corpus stage; returns the metrics it also writes to JSON.

    Two passes over the sources, in bounded memory (what grows with the corpus: a few integers per document,
    8-12 bytes per kept paragraph and LSH band, and the disk spill). 1. Read, filter (code, length, language ID)
    and sign each paragraph on ``corpus.executor`` (:mod:`warmstart.data.engine`); kept paragraphs go to the
    tasks' parts on disk, merged back into reading order. 2. Split by document, then deduplicate held-out text first (test, val, train: a paragraph shared
    with train is dropped from train) and write each split in reading order.
    """
    t0 = time.time()
    cfg = params.corpus
    langs = params.languages
    out = Path(out_dir) if out_dir is not None else corpus_dir(params)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.spill-", dir=out.parent) as spill_root:
        p1 = _pass1(params, Path(spill_root), langs)
        stats_in, removed, parts, report = p1["stats_in"], p1["removed"], p1["parts"], p1["report"]
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
                splits_stats[lang] = _pass2(params, lang, parts, assignment, removed[lang], tmp / lang, spill_root)
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
            "handbook": report["handbook"],
            "skipped_files": report["skipped_files"],
            "skipped_line_count": report["skipped_line_count"],
            "skipped_lines": report["skipped_lines"],
        },
        "seconds": round(time.time() - t0, 2),
    }


def _pass2(params: Params, lang: str, parts: list, assignment: dict, removed: Counter, out: Path, spill_root) -> dict:
    """Deduplicate one language's paragraphs in priority order (test, val, train) and write its splits."""
    d = params.corpus.dedup
    dedup = StreamDeduplicator(d.exact, d.near_threshold, d.num_perm, d.false_negative_weight, d.verify, spill_root)
    stats = {}
    out.mkdir(parents=True)
    try:
        for split in ("test", "val", "train"):  # held-out text first
            docs, n, nbytes, nwords = set(), 0, 0, 0
            with open(out / f"{split}.jsonl", "w", encoding="utf-8") as fh:
                for rec, key, sig in read_paragraphs(parts, lang, d.num_perm):
                    if assignment[rec["doc"]] != split:
                        continue
                    dup = dedup.check(key, sig)  # without near dedup there are no bands and sig is not read
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
