"""Stage ``tokenizer``: the target tokenizer (and the tiny base model's source one) with their fertility.

* ``target``: trained on :func:`~warmstart.data.mixing.mixed_texts` of the
  ``train`` splits by ``tokenizer.target_mix`` (keys resolved through
  ``Params.resolve_lang``);
* ``source``: the tiny base model's tokenizer of the embedded default, trained
  here (not in the base stage) on the source-language ``train`` split with the
  same config, so both have the same vocabulary size.

Fertility is measured on the ``test`` split of every corpus language. Writes
``data/tokenizer/{source,target}``; details ``reports/tokenizer/fertility.json``
(the table plus ``ratio_tokens_per_word[lang] = target / source``); headline
``reports/metrics/tokenizer.json``.
"""

from __future__ import annotations

import time
from typing import Any

from warmstart import fragments
from warmstart.data.clean import first_bytes, utf8_len
from warmstart.data.corpus import iter_split_texts, load_texts
from warmstart.data.jsonl import iter_texts
from warmstart.data.mixing import mixed_texts, sampled_texts, target_weights
from warmstart.io import write_json
from warmstart.outputs import save_figure, write_headline
from warmstart.stages.contract import SHARED, declared
from warmstart.tokenizer import fertility_ratios, fertility_table, train_tokenizer

PARAMS = (*SHARED, "corpus.extra_languages", "tokenizer")


def plot(table, vocab_size: int, kind: str, path) -> None:
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(7, 3.6))
    sns.barplot(data=table, x="lang", y="tokens_per_word", hue="tokenizer", ax=ax)
    ax.set(title=f"Fertility at {vocab_size:,} tokens ({kind})", xlabel="test split language", ylabel="tokens per word")
    for c in ax.containers:
        ax.bar_label(c, fmt="%.2f", fontsize=8)
    save_figure(fig, path)


def _mix(weights: dict[str, float]) -> str:
    """``{"nb-NO": 0.8, "da-DK": 0.2}`` as "nb-NO 80%, da-DK 20%" (the shares normalised to 100%)."""
    total = sum(weights.values())
    return ", ".join(f"{lang} {w / total:.0%}" for lang, w in weights.items())


def _about(kind: str, vocab_size: int, training_bytes: int, weights: dict[str, float]) -> str:
    """The fragment's paragraph: both tokenizers, the target one's training text, how fertility is measured."""
    return (
        f"Both tokenizers are {kind} with {vocab_size:,} tokens; the target one is trained on "
        f"{training_bytes:,} bytes of text mixed as {_mix(weights)}. Fertility is measured "
        "on each language's test split (tokens per whitespace word; lower is better)."
    )


def _tables(table, ratios: dict[str, float]) -> list[dict]:
    """The fragment's tables: the fertility table and the target-over-source ratios by language."""
    return [
        fragments.table(table, "Fertility of the source and target tokenizers"),
        fragments.table(
            [[k, v] for k, v in ratios.items()],
            "Tokens per word, target over source tokenizer",
            columns=["language", "ratio"],
        ),
    ]


def _training_text(params: Any, weights: dict[str, float]) -> dict[str, Any]:
    """Each tokenizer's training text: the whole mix in memory, or (``tokenizer.max_train_bytes``) a streamed
    sample read from the corpus files as the trainer consumes it (a function giving the texts afresh)."""
    cfg, src, seed = params.tokenizer, params.shared.source_lang, params.shared.seed
    if cfg.max_train_bytes is None:
        train = {lang: load_texts(params, lang, "train") for lang in {src, *weights}}
        return {
            "source": train[src],
            "target": mixed_texts({k: train[k] for k in weights}, weights, cfg.max_repeats, seed),
        }
    files = {lang: params.path("corpus", lang, "train.jsonl") for lang in {src, *weights}}
    sources = {lang: (lambda f=f: iter_texts([f], "text")) for lang, f in files.items()}
    source, _ = sampled_texts({src: sources[src]}, {src: 1.0}, 1.0, cfg.max_train_bytes, seed)
    target, _ = sampled_texts(sources, weights, cfg.max_repeats, cfg.max_train_bytes, seed)
    return {"source": source, "target": target}


def run(params: Any) -> dict[str, Any]:
    """Train both tokenizers, measure fertility; write details, headline, figure and fragment."""
    params = declared(params, "tokenizer", PARAMS)
    t0 = time.perf_counter()
    cfg = params.tokenizer
    src, tgt = params.shared.source_lang, params.shared.target_lang
    weights = target_weights(cfg.target_mix, params.resolve_lang, params.languages)
    texts = _training_text(params, weights)
    toks = {name: train_tokenizer(texts[name], cfg, params.path("tokenizer", name)) for name in ("source", "target")}
    tests = {
        lang: first_bytes(iter_split_texts(params, lang, "test"), cfg.fertility_bytes) for lang in params.languages
    }
    table = fertility_table(toks, tests)
    ratios = fertility_ratios(table, params.languages)
    details = {
        "vocab_size": {name: len(tok) for name, tok in toks.items()},
        "kind": cfg.kind,
        "target_training_bytes": utf8_len(texts["target"]() if callable(texts["target"]) else texts["target"]),
        "target_mix": weights,
        "ratio_tokens_per_word": ratios,
        "table": table.to_dict(orient="records"),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    write_json(params.report_path("tokenizer", "fertility.json"), details)
    fig = params.report_path("figures", "fertility.png")
    plot(table, cfg.vocab_size, cfg.kind, fig)
    fragments.write_fragment(
        params.shared.reports_dir,
        "tokenizer",
        20,
        "Tokenizers and fertility",
        paragraphs=[_about(cfg.kind, cfg.vocab_size, details["target_training_bytes"], weights)],
        tables=_tables(table, ratios),
        figures=[{"path": str(fig), "caption": "Tokens per word per test language."}],
        numbers={f"ratio_tokens_per_word.{k}": v for k, v in ratios.items()},
        seconds=details["seconds"],
    )
    tpw = {(r["tokenizer"], r["lang"]): r["tokens_per_word"] for r in details["table"]}
    return write_headline(
        params,
        "tokenizer",
        {
            f"tokens_per_word_{tgt}_source_tokenizer": tpw[("source", tgt)],
            f"tokens_per_word_{tgt}_target_tokenizer": tpw[("target", tgt)],
            f"fertility_ratio_{tgt}": ratios[tgt],
            f"fertility_ratio_{src}": ratios[src],
            "target_vocab_size": len(toks["target"]),
        },
    )
