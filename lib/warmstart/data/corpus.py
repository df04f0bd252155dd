"""The corpus stage: sources -> filters -> document split -> dedup -> jsonl.

Output ``<data_dir>/corpus/<lang>/{train,val,test}.jsonl``, one paragraph per
line: ``{"id", "doc", "page", "lang", "kind", "text"}``, paragraphs of a
document consecutive and in reading order. The directory is written whole or
not at all. :func:`build_corpus` returns the stage metrics.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from pathlib import Path

from tqdm.auto import tqdm

from warmstart.config import Params
from warmstart.data.clean import Deduplicator, LanguageFilter, utf8_len, words
from warmstart.data.sources import Document, SourceReport, iter_documents
from warmstart.data.split import SPLITS, assign_splits
from warmstart.io import atomic_dir, read_jsonl, write_jsonl

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


def _filter(docs: list[Document], params: Params) -> tuple[list[tuple[Document, list]], dict[str, Counter]]:
    cfg = params.corpus
    candidates = (
        None
        if cfg.langid.candidates == "all"
        else (params.languages if cfg.langid.candidates == "corpus" else list(cfg.langid.candidates))
    )
    lid = LanguageFilter(cfg.langid.threshold, candidates)
    removed: dict[str, Counter] = defaultdict(Counter)
    kept = []
    for d in tqdm(docs, desc="filter", leave=False):
        paras = []
        for p in d.paragraphs:
            if p.kind == "code":
                if not cfg.keep_code:
                    removed[d.lang]["code"] += 1
                    continue
            elif len(p.text) < cfg.min_chars:
                removed[d.lang]["min_chars"] += 1
                continue
            elif not lid.keep(p.text, d.lang):
                removed[d.lang]["langid"] += 1
                continue
            paras.append(p)
        kept.append((d, paras))
    return kept, removed


def build_corpus(params: Params, out_dir: str | Path | None = None) -> dict:
    """Run the whole corpus stage; returns the metrics it also writes to JSON."""
    t0 = time.time()
    cfg = params.corpus
    report = SourceReport()
    docs = list(iter_documents(params, report))
    langs = params.languages
    by_lang = Counter(d.lang for d in docs)
    empty = [lang for lang in langs if by_lang[lang] == 0]
    if empty:
        raise ValueError(f"no documents for language(s) {empty}: add a source for them in corpus.sources")

    stats_in = {lang: {"documents": 0, "paragraphs": 0, "bytes": 0} for lang in langs}
    doc_sets: dict[str, set] = defaultdict(set)
    for d in docs:
        doc_sets[d.lang].add(d.doc)
        stats_in[d.lang]["paragraphs"] += len(d.paragraphs)
        stats_in[d.lang]["bytes"] += utf8_len(p.text for p in d.paragraphs)
    for lang in langs:
        stats_in[lang]["documents"] = len(doc_sets[lang])

    kept, removed = _filter(docs, params)

    doc_bytes: Counter = Counter()
    for d, paras in kept:
        doc_bytes[d.doc] += utf8_len(p.text for p in paras)
    for d, _ in kept:
        doc_bytes.setdefault(d.doc, 0)
    assignment = assign_splits(
        dict(doc_bytes),
        cfg.split.val_fraction,
        cfg.split.test_fraction,
        params.shared.seed,
        cfg.split.val_documents,
        cfg.split.test_documents,
    )

    records: dict[tuple[str, str], list[dict]] = defaultdict(list)
    dedups = {
        lang: Deduplicator(
            cfg.dedup.exact, cfg.dedup.near_threshold, cfg.dedup.num_perm, cfg.dedup.shingle_chars, params.shared.seed
        )
        for lang in langs
    }
    # held-out text first, so a paragraph shared with train is dropped from train
    priority = {"test": 0, "val": 1, "train": 2}
    for d, paras in sorted(kept, key=lambda dp: priority[assignment[dp[0].doc]]):
        split = assignment[d.doc]
        for i, p in enumerate(paras):
            dup = dedups[d.lang].check(p.text)
            if dup:
                removed[d.lang][dup] += 1
                continue
            records[(d.lang, split)].append(
                {"id": f"{d.page}#{i}", "doc": d.doc, "page": d.page, "lang": d.lang, "kind": p.kind, "text": p.text}
            )
    order = {d.page: n for n, (d, _) in enumerate(kept)}
    for recs in records.values():  # back to reading order
        recs.sort(key=lambda r: (order[r["page"]], int(r["id"].rsplit("#", 1)[1])))

    for lang in langs:  # before anything is written: a too-small language fails the stage, loudly
        n = utf8_len(r["text"] for r in records.get((lang, "train"), []))
        if n < cfg.min_train_bytes:
            total = stats_in[lang]["paragraphs"]
            raise ValueError(
                f"corpus: {lang} keeps only {n:,} bytes of training text after filtering, below "
                f"corpus.min_train_bytes={cfg.min_train_bytes:,}; language ID removed {removed[lang]['langid']:,} "
                f"of its {total:,} paragraphs (an untranslated source, such as the handbook's da-DK, is mostly "
                f"English). Add a source for {lang} in corpus.sources, or choose another language"
            )
    out = Path(out_dir) if out_dir is not None else corpus_dir(params)
    splits_stats: dict[str, dict] = {}
    with atomic_dir(out) as tmp:
        for lang in langs:
            splits_stats[lang] = {}
            for split in SPLITS:
                recs = records.get((lang, split), [])
                if not recs:
                    raise ValueError(
                        f"corpus: the {split} split of {lang} is empty after filtering; "
                        f"lower corpus.min_chars / corpus.langid.threshold or add documents"
                    )
                write_jsonl(tmp / lang / f"{split}.jsonl", recs)
                texts = [r["text"] for r in recs]
                splits_stats[lang][split] = {
                    "documents": len({r["doc"] for r in recs}),
                    "paragraphs": len(recs),
                    "bytes": utf8_len(texts),
                    "words": sum(words(t) for t in texts),
                }

    split_docs = {s: sorted(d for d, x in assignment.items() if x == s) for s in SPLITS}
    metrics = {
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
    return metrics


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
