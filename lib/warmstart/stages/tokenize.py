"""Stage ``tokenize``: every split a run trains on, tokenized once per tokenizer into memory-mapped shards.

Writes ``data/tokens/<tokenizer>/<lang>/<split>/`` (:mod:`warmstart.data.shards`: token ids, a document
index, each document's UTF-8 bytes, a manifest with the tokenizer's fingerprint and the sources' hashes);
details ``reports/tokenize/tokenize.json``; headline ``reports/metrics/tokenize.json``. Every training run
reads these shards (:mod:`warmstart.data.stream`) and never tokenizes its corpus again.
"""

from __future__ import annotations

from typing import Any

from warmstart import fragments
from warmstart.data.tokenize import tokenize_study
from warmstart.io import write_json
from warmstart.outputs import write_headline
from warmstart.stages.contract import SHARED, declared

PARAMS = (
    *SHARED,
    "corpus.extra_languages",
    "tokenize",
    "base.source",
    "base.model_id",
    "base.tokenizer_id",
    "base.trust_remote_code",
)


def run(params: Any) -> dict[str, Any]:
    """Tokenize the study's splits; write details, headline and fragment."""
    params = declared(params, "tokenize", PARAMS)
    details = tokenize_study(params)
    write_json(params.report_path("tokenize", "tokenize.json"), details)
    rows = details["splits"]
    cols = ["tokenizer", "lang", "split", "documents", "tokens", "bytes", "bytes_per_token", "dtype", "shards"]
    fragments.write_fragment(
        params.shared.reports_dir,
        "tokenize",
        25,
        "Tokenized splits",
        paragraphs=[
            "Every split a run trains on is tokenized once per tokenizer into memory-mapped shards of token "
            "ids with a document index and each document's UTF-8 byte count; runs read rows from the maps, "
            f"so a run's memory does not grow with its corpus ({details['workers']} encoding worker(s)). A "
            "`-documents` split holds whole documents (their paragraphs joined): the context stage's long "
            "fine-tune reads it."
        ],
        tables=[fragments.table([[r[c] for c in cols] for r in rows], "Tokenized splits", columns=cols)],
        seconds=sum(r["seconds"] for r in rows),
    )
    headline = {f"tokens_{r['tokenizer']}_{r['lang']}_{r['split']}": r["tokens"] for r in rows}
    return write_headline(params, "tokenize", headline)
