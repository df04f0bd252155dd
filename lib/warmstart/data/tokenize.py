"""The study's tokenized splits: ``data/tokens/<tokenizer>/<lang>/<split>``, written once, read by every run.

``tokenize.corpora`` names, per tokenizer (``target``: the trained target tokenizer; ``base``: the base
model's), the languages whose splits it tokenizes (``tokenize.splits``). :func:`tokenize_study` writes them
(:func:`~warmstart.data.shards.tokenize_files`) and returns the stage's details; :func:`token_dir` is where
a run finds them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

TOKENIZERS = ("target", "base")
DOCUMENTS = "documents"  # the split suffix of a documents view: <split>-documents


def token_dir(params: Any, tokenizer: str, lang: str, split: str = "train") -> Path:
    """Where the ``tokenizer``'s shards of ``lang``'s ``split`` live (``lang`` may be source/target)."""
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {tokenizer!r}; tokenized splits exist for {list(TOKENIZERS)}")
    return params.path("tokens", tokenizer, params.resolve_lang(lang), split)


def load_tokenizer(params: Any, which: str) -> Any:
    """The ``target`` tokenizer, or the ``base`` model's (the tiny base's source tokenizer, or the hf one)."""
    from transformers import AutoTokenizer

    if which == "target":
        return AutoTokenizer.from_pretrained(params.path("tokenizer", "target"))
    if which != "base":
        raise ValueError(f"unknown tokenizer {which!r}; expected one of {list(TOKENIZERS)}")
    b = params.base
    if b.source == "hf":
        return AutoTokenizer.from_pretrained(b.tokenizer_id or b.model_id, trust_remote_code=b.trust_remote_code)
    return AutoTokenizer.from_pretrained(params.path("tokenizer", "source"))


def tokenize_study(params: Any) -> dict:
    """Tokenize every (tokenizer, language, split) of ``tokenize`` into ``data/tokens``, then the documents views
    (``tokenize.documents``: ``train-documents``); the stage's details."""
    from warmstart.data.shards import tokenize_files

    cfg = params.tokenize
    known = params.languages
    for key, table in (("corpora", cfg.corpora), ("documents", cfg.documents)):
        for which, langs in table.items():
            bad = [lang for lang in langs if params.resolve_lang(lang) not in known]
            if bad:
                raise ValueError(f"tokenize.{key}.{which} names {bad}, which the corpus does not hold; corpus: {known}")

    def langs_of(langs: list[str]) -> list[str]:
        return list(dict.fromkeys(params.resolve_lang(x) for x in langs))

    # (tokenizer, language, split, documents?): every split of tokenize.corpora, then the documents views
    jobs = [
        (w, lang, split, False) for w, langs in cfg.corpora.items() for lang in langs_of(langs) for split in cfg.splits
    ]
    jobs += [(w, lang, "train", True) for w, langs in cfg.documents.items() for lang in langs_of(langs)]
    rows, toks = [], {}
    for which, lang, split, documents in jobs:
        if which not in toks:
            toks[which] = load_tokenizer(params, which)
        name = f"{split}-{DOCUMENTS}" if documents else split
        t0 = time.perf_counter()
        m = tokenize_files(
            [str(params.path("corpus", lang, f"{split}.jsonl"))],
            token_dir(params, which, lang, name),
            toks[which],
            workers=cfg.workers,
            batch_docs=cfg.batch_docs,
            batch_chars=cfg.batch_chars,
            shard_tokens=cfg.shard_tokens,
            name=f"{which}/{lang}/{name}",
            documents=documents,
        )
        rows.append(
            {
                "tokenizer": which,
                "lang": lang,
                "split": name,
                "documents": m["documents"],
                "tokens": m["tokens"],
                "bytes": m["bytes"],
                "bytes_per_token": round(m["bytes"] / m["tokens"], 4),
                "dtype": m["dtype"],
                "shards": len(m["shards"]),
                "fingerprint": m["tokenizer"]["fingerprint"][:16],
                "seconds": round(time.perf_counter() - t0, 2),
            }
        )
    return {"workers": cfg.workers, "splits": rows}
