"""Stage ``vocab_swap@<method>``: the base model with the target tokenizer, ``data/models/swap-<method>``.

One method per DVC matrix item (``vocab_swap.methods``): the new embedding rows
are initialised by :mod:`warmstart.vocab_swap`. Details (row counts, step-0
bits per byte, nearest neighbours): ``reports/vocab_swap/<method>.json``;
headline: ``reports/metrics/vocab_swap/<method>.json``.
"""

from __future__ import annotations

from typing import Any

from warmstart.bpb import first_bytes, held_out_texts
from warmstart.data.corpus import iter_split_texts
from warmstart.io import write_json
from warmstart.model import load_model
from warmstart.outputs import write_headline
from warmstart.runs import base_model_dir, swap_model_dir
from warmstart.stages.contract import SHARED, declared
from warmstart.train.launch import bpb_table, read_run

PARAMS = (*SHARED, "base.trust_remote_code", "base.seq_len", "vocab_swap")
TEXTS = ("focus", "tokdistil")  # the methods that read target training text


def details_path(params: Any, method: str):
    return params.report_path("vocab_swap", f"{method}.json")


def run(params: Any, method: str) -> dict[str, Any]:
    """Swap the base model's vocabulary with ``method``; write details and headline; return the headline."""
    from transformers import AutoTokenizer

    from warmstart import vocab_swap as vs
    from warmstart.vocab_swap.details import swap_details, swap_headline
    from warmstart.vocab_swap.neighbours import probe_tokens

    params = declared(params, "vocab_swap", PARAMS)
    v = params.vocab_swap
    if method not in v.methods:
        raise ValueError(f"method {method!r} is not in vocab_swap.methods {list(v.methods)}")
    target, source = params.shared.target_lang, params.shared.source_lang
    out = swap_model_dir(params, method)
    report = vs.swap_model_dir(
        base_model_dir(params),
        params.path("tokenizer", "target"),
        out,
        method,
        donor_dir=read_run(params, "scratch")["final"] if method == "omp" else None,
        seed=params.shared.seed,
        pad_multiple=v.pad_multiple,
        omp_k=v.omp_k,
        texts=first_bytes(iter_split_texts(params, target, "train"), v.text_bytes) if method in TEXTS else None,
        fasttext=vs.FastTextOptions(dim=v.fasttext_dim, epochs=v.fasttext_epochs, min_count=3),
        hf_mean_resizing=v.hf_mean_resizing,
        tokdistil=vs.TokDistilOptions(**v.tokdistil.model_dump()),
        trust_remote_code=params.base.trust_remote_code,
    )
    model, tok = load_model(out), AutoTokenizer.from_pretrained(out)
    base, base_tok = load_model(base_model_dir(params)), AutoTokenizer.from_pretrained(base_model_dir(params))
    seq_len = params.base.seq_len
    bpb = bpb_table(model, tok, params, seq_len, v.eval_bytes)
    base_bpb = bpb_table(base, base_tok, params, seq_len, v.eval_bytes)
    probes = probe_tokens(tok, held_out_texts(params, target, "test", v.eval_bytes), v.neighbours)
    nn = vs.nearest_neighbours(model, tok, base, base_tok, probes, k=3)
    details = swap_details(method, report, bpb, base_bpb, target, source, nn)
    write_json(details_path(params, method), details)
    return write_headline(params, f"vocab_swap/{method}", swap_headline(details))
