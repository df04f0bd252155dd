"""The study's adapted model extended by a method and fine-tuned on long documents: the pieces of the
``context@<method>`` stage (its long documents, retrieval suites and measures, the fine-tune's trainer config,
the run's record and headline).

``short`` is the pseudo-method of Alfred's "2K baseline": the same fine-tune at the trained length, nothing
extended, which measures what the extension costs at short context.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SHORT = "short"  # the pseudo-method: fine-tune at the trained length, nothing extended (Alfred's 2K baseline)


def check_method(method: str) -> None:
    """Refuse a method that is neither a RoPE extension method nor ``short``."""
    from warmstart.context.rope_scaling import METHODS

    if method != SHORT and method not in METHODS:
        raise ValueError(f"context.methods: unknown method {method!r}; known: {', '.join([*METHODS, SHORT])}")


def extend_or_copy(src: Path, init: Path, method: str, factor: int, trained_len: int, options: dict) -> None:
    """The model dir ``init``: ``src`` extended by ``method`` to ``factor x trained_len``, or copied for ``short``."""
    import shutil

    from warmstart.context.rope_scaling import extend_dir

    if method == SHORT:
        shutil.copytree(src, init)
    else:
        extend_dir(src, init, method, factor, trained_len, **options)


def doubling_lengths(trained_len: int, factor: int) -> list[int]:
    """The measured context lengths ``L, 2L, 4L, ..`` up to ``factor x L``."""
    return [trained_len * k for k in range(1, factor + 1) if k == 1 or (k & (k - 1)) == 0]


def texts_by_document(params: Any, split: str) -> Iterator[str]:
    """The target corpus' paragraphs joined per document, in order of first appearance: the long documents.
    Read a document at a time (:func:`~warmstart.data.jsonl.iter_documents`), as the tokenize stage's
    ``train-documents`` split holds them."""
    from warmstart.data.jsonl import iter_documents

    return iter_documents([params.path("corpus", params.shared.target_lang, f"{split}.jsonl")], "text")


def long_documents(params: Any, tok: Any) -> Path:
    """The tokenize stage's ``train-documents`` shards of the target language written by ``tok``'s tokenizer
    (the target's or the base's, whichever the extended run uses): what the fine-tune streams, tokenized once
    for every method."""
    import json

    from warmstart.data.shards import fingerprint
    from warmstart.data.tokenize import DOCUMENTS, TOKENIZERS, token_dir

    lang, fp = params.shared.target_lang, fingerprint(tok)
    dirs = [token_dir(params, which, lang, f"train-{DOCUMENTS}") for which in TOKENIZERS]
    for d in dirs:
        if (d / "manifest.json").is_file() and json.loads((d / "manifest.json").read_text())["tokenizer"][
            "fingerprint"
        ] == fp:
            return d
    have = [str(d) for d in dirs if (d / "manifest.json").is_file()]
    raise FileNotFoundError(
        f"no whole-document shards of {lang}'s train split for the extended model's tokenizer (have: {have}); "
        f"add {lang} (or 'target') to tokenize.documents under the tokenizer the context run uses, and rerun tokenize"
    )


def retrieval_suites(texts: list[str], tok: Any, lengths: list[int], suite: Any, seed: int) -> list[tuple[int, list]]:
    """The retrieval suite (``context.suite``) built from ``texts`` at every length; a task whose smallest item
    does not fit a length is left out there (with a warning), not failed."""
    from warmstart.context.retrieval import build_suite

    return [
        (n, build_suite(texts, tok, n, suite.items, seed, tasks=list(suite.tasks), on_short="skip")) for n in lengths
    ]


def measure(model: Any, tok: Any, params: Any, lengths: list[int], texts: list[str], suite: list | None) -> dict:
    """Bits per byte by length and by position of the longest length, and the suite's scores by length."""
    from warmstart.context.measure import bpb_by_length, bpb_by_position
    from warmstart.context.retrieval import score_suite

    c = params.context
    # up to 4 windows of the longest length (fewer when the test text is short, e.g. the smoke profile)
    n_tok = sum(len(tok(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)
    windows = min(4, (n_tok - 1) // lengths[-1])
    if windows < 1:
        raise ValueError(
            f"context.eval_bytes: the test text gives {n_tok} tokens, fewer than one window of {lengths[-1]}"
        )
    out: dict[str, Any] = {
        "bpb_by_length": {str(k): v for k, v in bpb_by_length(model, tok, texts, lengths, n_windows=windows).items()},
        "bpb_by_position": bpb_by_position(model, tok, texts, lengths[-1], c.position_buckets, n_windows=windows),
    }
    if suite is not None:
        out["suite"] = {
            str(n): score_suite(model, tok, items, batch_size=c.suite.batch_size) for n, items in suite if items
        }
    return out


def finetune_config(
    init: Path, train_file: Path, length: int, f: Any, out: Path, seed: int, trust_remote_code: bool
) -> Any:
    """The trainer config of the fine-tune (``context.finetune`` as ``f``) of ``init`` on ``train_file`` (token
    shards, or jsonl tokenized into the run's cache) at
    ``length``, with the same tokens per step at any length, in ``out / "finetune"`` (``out``: the run's dir)."""
    from warmstart.train.config import TrainConfig
    from warmstart.train.launch import optim_fields

    return TrainConfig(
        model_path=str(init),
        tokenizer_path=str(init),
        train_files={"long": [str(train_file)]},
        seq_len=length,
        micro_batch=max(1, f.tokens_per_step // length),
        **optim_fields(f),  # every optimiser and schedule field of context.finetune
        out_dir=str(out / "finetune"),
        log_every=f.log_every,
        seed=seed,
        keep_last=1,
        trust_remote_code=trust_remote_code,
    )


def run_record(
    params: Any,
    run: Any,
    source_run: str,
    source_model: Path,
    length: int,
    init: Path,
    final: Path,
    log: list[dict],
    vocab_size: int,
    t0: float,
) -> dict[str, Any]:
    """The ``run.json`` of the extension run ``run`` (its method, source, lengths, the fine-tuned model's config,
    the log's summary and the seconds since ``t0``)."""
    from warmstart.train.launch import summarize_log

    c, method = params.context, run.method
    model_config = json.loads((final / "config.json").read_text())
    return {
        "name": run.name,
        "kind": run.kind,
        "method": method,
        "source_run": source_run,
        "source_model": str(source_model),
        "trained_len": params.pretrain.seq_len,
        "length": length,
        "factor": 1 if method == SHORT else c.factor,
        "options": c.options.get(method, {}),
        "init": str(init),
        "final": str(final),
        "log": str(run.log(params)),
        "tokens": log[-1]["tokens"] if log else 0,
        "bytes": log[-1]["bytes"] if log else 0,
        "rope_parameters": model_config.get("rope_parameters"),
        "model_config": model_config,
        "vocab_size": vocab_size,
        **summarize_log(log),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def headline(record: dict[str, Any], before: dict, after: dict, lengths: list[int]) -> dict[str, Any]:
    """Bits per byte at the shortest and longest length, zero-shot and fine-tuned, and the fine-tuned suite's
    normalised mean at the longest length."""
    head = {"method": record["method"], "length": record["length"], "finetune_tokens": record["tokens"]}
    for when, m in (("zeroshot", before), ("finetuned", after)):
        for n in (lengths[0], lengths[-1]):
            head[f"{when}_bpb_{n}"] = m["bpb_by_length"][str(n)]
    head[f"finetuned_suite_mean_{lengths[-1]}"] = after["suite"].get(str(lengths[-1]), {}).get("normalised_mean")
    return head
