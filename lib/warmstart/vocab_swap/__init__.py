"""Vocabulary swap: give a pretrained causal LM a new tokenizer.

The input and output embedding rows of the new vocabulary are initialised
from the old model's rows by one of seven methods (:data:`METHODS`), each
planned by its own module (the registry is :data:`PLANNERS`):

``random`` (:mod:`.sampling`)
    Every row sampled from a multivariate normal with the mean and
    covariance of the old rows (Hewitt's baseline).
``exact`` (:mod:`.lexical`)
    Tokens whose normalised strings match are copied bit for bit (CSMPT7b);
    the rest as ``random``.
``fvt`` (:mod:`.lexical`)
    Fast Vocabulary Transfer: the mean of the old rows the OLD tokenizer
    segments the new token's string into.
``focus`` (:mod:`.focus`, vectors from :mod:`.fasttext`)
    FOCUS: a sparsemax-weighted combination of the overlapping tokens' rows,
    weighted by fastText similarity in the new tokenizer's text.
``omp`` (:mod:`.omp`)
    Orthogonal matching pursuit in a donor model that uses the new
    tokenizer (mergekit's ``tokensurgeon``), applied to the old anchor rows.
``hf-default`` (:mod:`.hf_default`)
    Exact matches copied; the rest get the rows transformers'
    ``resize_token_embeddings`` adds (mean resizing: the old mean plus
    1e-9-covariance noise), drawn by transformers itself.
``tokdistil`` (:mod:`.tokdistil`)
    Token Distillation (Dobler et al., ICLR 2026): from an ``fvt`` or
    ``focus`` start, each new token's input row is learned, the model frozen,
    so that its hidden states on target snippets match those of the token's
    old multi-piece tokenization; untied head rows by next-token
    cross-entropy. Needs the model (:func:`swap_model`) and target texts.

Normalised strings (:mod:`.tokens`)
    Every token is reduced to the UTF-8 *bytes* it stands for, so
    ``Ġhouse`` and ``▁house`` both read ``b" house"`` and match, and a byte
    token matches the other tokenizer's byte token (preferred) or its single
    byte symbol.

Always, whatever the method:

- special tokens are mapped explicitly by role (bos/eos/pad/unk/mask, then
  other specials by content); a role without counterpart gets the mean row;
- the input embeddings and the LM head are both initialised (the head with
  the same method applied to the head rows), and tied weights stay one tensor;
- the vocabulary is padded to a multiple of ``pad_multiple`` with zero rows
  that generation can never produce (``generation_config.suppress_tokens``);
- ``config.vocab_size`` and bos/eos/pad ids of config and generation config
  follow the new tokenizer.

Modules, lowest first (a module imports only modules above it in this list):
:mod:`.tokens` (normalised strings, :class:`TokenizerView`),
:mod:`.fasttext` (:class:`FastTextOptions`, :func:`train_fasttext`),
:mod:`.plan` (:class:`InitPlan`, :class:`SwapReport`, the split every method
starts from), :mod:`.sampling`, :mod:`.lexical`, :mod:`.focus`, :mod:`.omp`,
:mod:`.hf_default`, :mod:`.snippets` (tokdistil's data), :mod:`.tokdistil` (the methods;
:class:`TokDistilOptions`),
:mod:`.methods` (registry, :func:`build_plan`),
:mod:`.apply` (:func:`apply_plan`), :mod:`.surgery` (:func:`swap_embeddings`
on tensors, :func:`swap_model`, :func:`swap_model_dir`), :mod:`.neighbours`
(:func:`nearest_neighbours` and the tokens it probes), :mod:`.details` (the
vocab_swap stage's details and headline of a swap), :mod:`.cli` (:func:`main`,
:func:`load_texts`).

CLI::

    python -m warmstart.vocab_swap --model DIR --tokenizer DIR --method fvt --out DIR
        [--donor DIR] [--seed N] [--pad-multiple 64] [--omp-k 8]
        [--texts PATH ...] [--fasttext-dim 100] [--cov-rows 16384] [--tokdistil-steps 8] ...
"""

from __future__ import annotations

from warmstart.vocab_swap.apply import apply_plan
from warmstart.vocab_swap.cli import load_texts, main
from warmstart.vocab_swap.fasttext import FastTextOptions, train_fasttext
from warmstart.vocab_swap.focus import focus_weights, sparsemax
from warmstart.vocab_swap.methods import METHODS, PLANNERS, build_plan
from warmstart.vocab_swap.neighbours import nearest_neighbours
from warmstart.vocab_swap.omp import batch_omp
from warmstart.vocab_swap.plan import (
    PAD_MULTIPLE,
    REPORT_NAME,
    Combination,
    InitPlan,
    PlanRequest,
    SwapReport,
    padded_size,
)
from warmstart.vocab_swap.sampling import COV_ROWS, sample_like
from warmstart.vocab_swap.surgery import SwapResult, swap_embeddings, swap_model, swap_model_dir
from warmstart.vocab_swap.tokdistil import TokDistilOptions, distil
from warmstart.vocab_swap.tokens import (
    BYTE_TO_UNICODE,
    ROLES,
    UNICODE_TO_BYTE,
    TokenizerView,
    VocabSwapError,
    tokenizer_view,
)

__all__ = [
    "BYTE_TO_UNICODE",
    "COV_ROWS",
    "METHODS",
    "PAD_MULTIPLE",
    "PLANNERS",
    "REPORT_NAME",
    "ROLES",
    "UNICODE_TO_BYTE",
    "Combination",
    "FastTextOptions",
    "InitPlan",
    "PlanRequest",
    "SwapReport",
    "SwapResult",
    "TokDistilOptions",
    "TokenizerView",
    "VocabSwapError",
    "apply_plan",
    "batch_omp",
    "build_plan",
    "distil",
    "focus_weights",
    "load_texts",
    "main",
    "nearest_neighbours",
    "padded_size",
    "sample_like",
    "sparsemax",
    "swap_embeddings",
    "swap_model",
    "swap_model_dir",
    "tokenizer_view",
    "train_fasttext",
]
