"""Stage ``corpus``: sources -> cleaned, deduplicated, split text, ``data/corpus/<lang>/{train,val,test}.jsonl``.

Details (per-language counts, filters, split documents, source provenance):
``reports/corpus/corpus.json``; headline: ``reports/metrics/corpus.json``.
"""

from __future__ import annotations

from typing import Any

from warmstart import fragments
from warmstart.data.corpus import build_corpus, corpus_table, filter_table
from warmstart.describe import corpus_sources
from warmstart.io import write_json
from warmstart.outputs import save_figure, write_headline
from warmstart.stages.contract import SHARED, declared

PARAMS = (*SHARED, "corpus")


def plot(table, filters, path) -> None:
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    sns.barplot(data=table, x="lang", y="bytes", hue="split", ax=axes[0])
    axes[0].set(title="Corpus size", xlabel="language", ylabel="UTF-8 bytes")
    removed = filters.melt(
        id_vars="lang",
        value_vars=["code", "min_chars", "langid", "exact_dup", "near_dup"],
        var_name="filter",
        value_name="paragraphs",
    )
    sns.barplot(data=removed, x="filter", y="paragraphs", hue="lang", ax=axes[1])
    axes[1].set(title="Removed by filter", xlabel="filter", ylabel="paragraphs removed")
    fig.tight_layout()
    save_figure(fig, path)


def run(params: Any) -> dict[str, Any]:
    """Build the corpus; write details, headline metrics, the figure and the report fragment."""
    params = declared(params, "corpus", PARAMS)
    details = build_corpus(params)
    write_json(params.report_path("corpus", "corpus.json"), details)
    described = "; ".join(f"{s.text} (licence: {s.licence})" for s in corpus_sources(params))  # from the record
    table, filters = corpus_table(details), filter_table(details)
    fig = params.report_path("figures", "corpus.png")
    plot(table, filters, fig)
    split = details["split_documents"]
    fragments.write_fragment(
        params.shared.reports_dir,
        "corpus",
        10,
        "Corpus",
        paragraphs=[
            f"Source: {described}. Documents are split whole; the same documents are held "
            f"out in every language: val {split['val']}, test {split['test']}."
        ],
        tables=[
            fragments.table(table, "Corpus per language and split (UTF-8 bytes, whitespace words)"),
            fragments.table(filters, "Paragraphs removed by each filter"),
        ],
        figures=[{"path": str(fig), "caption": "Corpus size and filter removals."}],
        numbers={f"bytes.{r.lang}.{r.split}": r.bytes for r in table.itertuples()},
        seconds=details["seconds"],
    )
    src, tgt = params.shared.source_lang, params.shared.target_lang
    train = {lang: m["splits"]["train"]["bytes"] for lang, m in details["languages"].items()}
    removed = {lang: m["removed"]["langid"] for lang, m in details["languages"].items()}
    return write_headline(
        params,
        "corpus",
        {
            f"train_bytes_{src}": train[src],
            f"train_bytes_{tgt}": train[tgt],
            f"langid_removed_{tgt}": removed[tgt],
            "test_documents": len(split["test"]),
            "val_documents": len(split["val"]),
            "skipped_files": len(details["sources"]["skipped_files"]),
            "skipped_lines": details["sources"]["skipped_line_count"],
        },
    )
