"""Target-language tokenizers: training, saving, fertility.

Three kinds, all built with the Hugging Face ``tokenizers`` library and wrapped
in a ``transformers`` fast tokenizer (saved as a standard ``tokenizer.json``):

``byte_bpe``
    GPT-2 style byte-level BPE: ``ByteLevel`` pre-tokenizer (no prefix space)
    and decoder, the 256 byte symbols as the initial alphabet. Every string
    round-trips; ``unk`` is never produced.
``sp_bpe``
    SentencePiece-style BPE: ``Metaspace`` (``▁`` for spaces, no dummy prefix)
    and byte fallback: the 256 tokens ``<0x00>`` .. ``<0xFF>`` are in the
    vocabulary, so a character that is not a piece is spelled in UTF-8 bytes.
``sp_unigram``
    The same with a Unigram language model (SentencePiece's default).

Ids are laid out the same way for every kind: the special tokens of
:meth:`SpecialTokens.as_list` first (pad, bos, eos, unk, mask = 0..4), then,
for the ``sp_`` kinds, the 256 byte tokens (5..260), then the learned pieces.
No special token is added by encoding (no BOS/EOS template): callers that
pack documents add ``eos`` themselves.

Round trip: ``decode(encode(x)) == normalize(x)`` for every string, where
``normalize`` is the configured Unicode normalisation (identity for
``none``). The ``sp_`` kinds share SentencePiece's one blind spot: a literal
``▁`` (U+2581) in the input decodes as a space. Literal text such as
``<0x41>`` is never read as a byte token (no pre-token can spell one).

Training is deterministic: the same texts and config give a byte-identical
``tokenizer.json``.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from warmstart.config import Tokenizer as TokenizerConfig
from warmstart.io import atomic_dir

log = logging.getLogger(__name__)

__all__ = [
    "BYTE_TOKENS",
    "FERTILITY_COLUMNS",
    "fertility",
    "fertility_table",
    "min_vocab_size",
    "save_atomic",
    "train_tokenizer",
]

#: SentencePiece byte-fallback tokens, in byte order.
BYTE_TOKENS: list[str] = [f"<0x{i:02X}>" for i in range(256)]
#: Metaspace replacement character (SentencePiece's "lower one eighth block").
SPIECE_UNDERLINE = "\u2581"
#: ``model_max_length`` of the wrapped tokenizer: "no limit" to transformers
#: (above its LARGE_INTEGER threshold); the model config holds the context size.
MODEL_MAX_LENGTH = 10**30
#: Learned pieces the ``sp_`` kinds need at least, beyond specials and bytes.
_SP_MIN_PIECES = 1
#: Unigram log-probabilities are rounded to this many decimals (determinism).
_SCORE_DECIMALS = 4
#: Batch size for encoding in :func:`fertility`.
_BATCH = 1024

FERTILITY_COLUMNS = [
    "tokenizer",
    "lang",
    "words",
    "tokens",
    "bytes",
    "tokens_per_word",
    "bytes_per_token",
    "split_word_share",
]


# ---------------------------------------------------------------- training


def min_vocab_size(cfg: TokenizerConfig) -> int:
    """Smallest ``vocab_size`` the kind can be trained with.

    ``byte_bpe``: 256 byte symbols + the special tokens. ``sp_bpe`` /
    ``sp_unigram``: the special tokens + 256 byte-fallback tokens + 1 learned
    piece. Their character alphabet depends on the data and is cut to fit
    (the most frequent characters stay; the others are spelled in bytes).
    """
    n_special = len(cfg.special_tokens.as_list())
    if cfg.kind == "byte_bpe":
        return n_special + len(pre_tokenizers.ByteLevel.alphabet())
    return n_special + len(BYTE_TOKENS) + _SP_MIN_PIECES


def _check_vocab_size(cfg: TokenizerConfig) -> None:
    minimum = min_vocab_size(cfg)
    if cfg.vocab_size < minimum:
        n_special = len(cfg.special_tokens.as_list())
        if cfg.kind == "byte_bpe":
            parts = f"256 byte symbols + {n_special} special tokens"
        else:
            parts = f"{n_special} special tokens + 256 byte-fallback tokens + {_SP_MIN_PIECES} learned piece"
        raise ValueError(
            f"tokenizer.vocab_size={cfg.vocab_size} is too small for kind {cfg.kind!r}: "
            f"the minimum is {minimum} ({parts})"
        )


def _normalizer(cfg: TokenizerConfig) -> normalizers.Normalizer | None:
    return {"none": None, "NFC": normalizers.NFC(), "NFKC": normalizers.NFKC()}[cfg.normalization]


def _pre_tokenizer(cfg: TokenizerConfig) -> pre_tokenizers.PreTokenizer:
    steps: list[pre_tokenizers.PreTokenizer] = []
    if cfg.split_digits:
        steps.append(pre_tokenizers.Digits(individual_digits=True))
    elif cfg.kind != "byte_bpe":
        # Every byte token contains "0x". Split digits make a piece spelled
        # "<0x41>" impossible; without them, isolating "0x" does the same, so
        # literal text never collides with (or is read as) a byte token.
        steps.append(pre_tokenizers.Split("0x", behavior="isolated"))
    if cfg.kind == "byte_bpe":
        steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))
    else:
        steps.append(pre_tokenizers.Metaspace(replacement=SPIECE_UNDERLINE, prepend_scheme="never", split=True))
    return steps[0] if len(steps) == 1 else pre_tokenizers.Sequence(steps)


def _decoder(cfg: TokenizerConfig) -> decoders.Decoder:
    if cfg.kind == "byte_bpe":
        return decoders.ByteLevel()
    return decoders.Sequence(
        [decoders.ByteFallback(), decoders.Metaspace(replacement=SPIECE_UNDERLINE, prepend_scheme="never", split=True)]
    )


def _pipeline(tok: HFTokenizer, cfg: TokenizerConfig) -> HFTokenizer:
    norm = _normalizer(cfg)
    if norm is not None:
        tok.normalizer = norm
    tok.pre_tokenizer = _pre_tokenizer(cfg)
    tok.decoder = _decoder(cfg)
    return tok


def _nonempty(texts: Iterable[str]) -> Iterator[str]:
    if isinstance(texts, str):
        raise TypeError("texts must be an iterable of strings, not a single string")
    for t in texts:
        if not isinstance(t, str):
            raise TypeError(f"texts must be strings, got {type(t).__name__}")
        if t:
            yield t


def train_tokenizer(
    texts: Iterable[str] | Callable[[], Iterable[str]],
    cfg: TokenizerConfig,
    out_dir: str | Path | None = None,
) -> PreTrainedTokenizerFast:
    """Train a tokenizer of ``cfg.kind`` on ``texts``; optionally save it.

    ``vocab_size`` counts everything (specials, byte tokens, pieces); a
    too-small value raises :class:`ValueError` before any training. The
    result may be smaller than ``vocab_size`` when the text runs out of
    merges (a warning is logged). With ``out_dir`` the tokenizer is written
    with ``save_pretrained`` into a temporary sibling directory that then
    replaces ``out_dir``, so a reader never sees a half-written tokenizer.

    ``texts`` may be a function returning the texts afresh (a streamed sample,
    :func:`~warmstart.data.mixing.sampled_texts`): they are then never held in memory.
    """
    specials = cfg.special_tokens.as_list()
    _check_vocab_size(cfg)
    held = None if callable(texts) else list(_nonempty(texts))
    counted = [0]

    def corpus() -> Iterator[str]:
        counted[0] = 0
        for t in _nonempty(held if held is not None else texts()):
            counted[0] += 1
            yield t

    if next(iter(corpus()), None) is None:
        raise ValueError("no training text: the tokenizer needs at least one non-empty text")

    if cfg.kind == "byte_bpe":
        tok = _train_byte_bpe(corpus, cfg, specials)
    elif cfg.kind == "sp_bpe":
        tok = _train_sp_bpe(corpus, cfg, specials)
    elif cfg.kind == "sp_unigram":
        tok = _train_sp_unigram(corpus, cfg, specials)
    else:  # pragma: no cover - pydantic restricts kind
        raise ValueError(f"tokenizer.kind={cfg.kind!r} is not one of byte_bpe, sp_bpe, sp_unigram")

    size = tok.get_vocab_size(with_added_tokens=True)
    if size > cfg.vocab_size:  # pragma: no cover - guarded by construction
        raise RuntimeError(f"trained vocabulary has {size} tokens, more than vocab_size={cfg.vocab_size}")
    if size < cfg.vocab_size:
        log.warning(
            "tokenizer vocabulary has %d tokens, fewer than tokenizer.vocab_size=%d: "
            "the training text (%d texts) ran out of pieces",
            size,
            cfg.vocab_size,
            counted[0],
        )
    ids = [tok.token_to_id(s) for s in specials]
    if ids != list(range(len(specials))):  # pragma: no cover - guarded by construction
        raise RuntimeError(f"special tokens {specials} got ids {ids}, expected 0..{len(specials) - 1}")

    st = cfg.special_tokens
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=st.bos,
        eos_token=st.eos,
        pad_token=st.pad,
        unk_token=st.unk,
        mask_token=st.mask,
        model_max_length=MODEL_MAX_LENGTH,
        clean_up_tokenization_spaces=False,
    )
    if out_dir is not None:
        save_atomic(fast, out_dir)
    return fast


def _train_byte_bpe(corpus: Callable[[], Iterable[str]], cfg: TokenizerConfig, specials: list[str]) -> HFTokenizer:
    tok = _pipeline(HFTokenizer(models.BPE()), cfg)
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    # the unk token is in the vocabulary (id 3) but byte-level BPE never needs it
    return tok


def _model_json(tok: HFTokenizer) -> dict[str, Any]:
    return json.loads(tok.to_str())["model"]


def _with_specials(model: models.Model, cfg: TokenizerConfig, specials: list[str]) -> HFTokenizer:
    tok = _pipeline(HFTokenizer(model), cfg)
    tok.add_special_tokens(specials)  # already in the vocabulary: keeps ids 0..4
    return tok


def _train_sp_bpe(corpus: Callable[[], Iterable[str]], cfg: TokenizerConfig, specials: list[str]) -> HFTokenizer:
    n_special, n_bytes = len(specials), len(BYTE_TOKENS)
    budget = cfg.vocab_size - n_bytes  # specials + characters + merges
    tok = _pipeline(HFTokenizer(models.BPE(unk_token=cfg.special_tokens.unk, byte_fallback=True)), cfg)
    trainer = trainers.BpeTrainer(
        vocab_size=budget,
        min_frequency=cfg.min_frequency,
        special_tokens=specials,
        # the most frequent characters that fit; the others fall back to bytes
        limit_alphabet=budget - n_special,
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    trained = _model_json(tok)
    # insert the byte tokens after the specials; merges refer to strings, not ids
    vocab: dict[str, int] = {}
    for piece, i in sorted(trained["vocab"].items(), key=lambda kv: kv[1]):
        if i < n_special:
            vocab[piece] = i
        else:
            vocab[piece] = i + n_bytes
    for b, piece in enumerate(BYTE_TOKENS):
        if piece in vocab:  # pragma: no cover - _pre_tokenizer makes this impossible
            raise RuntimeError(f"learned a piece equal to the byte token {piece!r}")
        vocab[piece] = n_special + b
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in trained["merges"]]
    model = models.BPE(
        vocab=vocab,
        merges=merges,
        unk_token=cfg.special_tokens.unk,
        byte_fallback=True,
        fuse_unk=False,
    )
    return _with_specials(model, cfg, specials)


def _train_sp_unigram(corpus: Callable[[], Iterable[str]], cfg: TokenizerConfig, specials: list[str]) -> HFTokenizer:
    n_special, n_bytes = len(specials), len(BYTE_TOKENS)
    budget = cfg.vocab_size - n_bytes
    tok = _pipeline(HFTokenizer(models.Unigram()), cfg)
    chars = _char_counts(corpus(), tok)
    trainer = trainers.UnigramTrainer(
        # the trainer refuses to start with fewer slots than distinct characters
        vocab_size=max(budget, n_special + len(chars)),
        special_tokens=specials,
        unk_token=cfg.special_tokens.unk,
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    trained = _model_json(tok)["vocab"]  # [[piece, log prob], ...], specials first
    head = [p for p, _ in trained[:n_special]]
    if head != specials:  # pragma: no cover - the trainer puts specials first
        raise RuntimeError(f"unexpected Unigram trainer output: starts with {head}, expected {specials}")
    pieces = _canonical_unigram_pieces([(p, s) for p, s in trained[n_special:]], chars)
    clash = sorted({p for p, _ in pieces} & set(BYTE_TOKENS))
    if clash:  # pragma: no cover - _pre_tokenizer makes this impossible
        raise RuntimeError(f"learned pieces equal to byte tokens: {clash}")
    # The trainer keeps every character of the text, so it can overshoot
    # vocab_size; byte fallback covers what is dropped: keep the best pieces.
    pieces = pieces[: budget - n_special]
    # Byte tokens are only used for fallback (no pre-token can spell one, see
    # _pre_tokenizer); at the lowest piece score they leave the model's
    # minimum, hence its unknown-character penalty, unchanged.
    byte_score = min((s for _, s in pieces), default=0.0)
    vocab = [(p, 0.0) for p in specials] + [(b, byte_score) for b in BYTE_TOKENS] + pieces
    model = models.Unigram(vocab, unk_id=specials.index(cfg.special_tokens.unk), byte_fallback=True)
    return _with_specials(model, cfg, specials)


#: tokenizers' UnigramTrainer scores characters it had to add back at
#: ``min_score + k * 1e-4`` (k = 0, 1, ... in hash-set order).
_UNIGRAM_PENALTY_DELTA = 1e-4


def _char_counts(corpus: Iterable[str], tok: HFTokenizer) -> Counter[str]:
    """Character counts of the text the trainer sees (normalised, ``▁`` for space)."""
    counts: Counter[str] = Counter()
    norm = tok.normalizer
    for text in corpus:
        counts.update(norm.normalize_str(text) if norm is not None else text)
    if " " in counts:
        counts[SPIECE_UNDERLINE] += counts.pop(" ")
    return counts


def _canonical_unigram_pieces(pieces: list[tuple[str, float]], chars: Counter[str]) -> list[tuple[str, float]]:
    """Make the trainer's output independent of hash-map order.

    The EM sums run in hash-map order, so scores carry ~1e-13 of run-to-run
    noise, equal-count pieces come out in random order, and characters the
    model did not keep are re-added with scores in random order. So: round
    the scores; give re-added characters scores below every learned piece,
    most frequent first; sort by (score, piece).
    """
    if not pieces:
        return []
    low = min(s for _, s in pieces)
    singles = [p for p, _ in pieces if len(p) == 1]
    readded = set()
    for p, s in pieces:
        if len(p) == 1:
            k = (s - low) / _UNIGRAM_PENALTY_DELTA
            if abs(k - round(k)) < 1e-3 and round(k) < len(singles):
                readded.add(p)
    out = [(p, round(s, _SCORE_DECIMALS)) for p, s in pieces if p not in readded]
    if readded:
        base = round(low, _SCORE_DECIMALS)
        for rank, p in enumerate(sorted(readded, key=lambda c: (-chars[c], c))):
            out.append((p, round(base - (rank + 1) * _UNIGRAM_PENALTY_DELTA, _SCORE_DECIMALS)))
    out.sort(key=lambda ps: (-ps[1], ps[0]))
    return out


def save_atomic(tok: PreTrainedTokenizerFast, out_dir: str | Path) -> Path:
    """``save_pretrained`` into a temporary sibling, then swap it into place (:func:`warmstart.io.atomic_dir`)."""
    with atomic_dir(out_dir) as tmp:
        tok.save_pretrained(str(tmp))
        if not (tmp / "tokenizer.json").is_file():
            raise RuntimeError(f"save_pretrained wrote no tokenizer.json in {tmp}")
    return Path(out_dir)


# ---------------------------------------------------------------- fertility

_WORD = re.compile(r"\S+")


def _backend(tok: Any) -> HFTokenizer:
    if isinstance(tok, HFTokenizer):
        return tok
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise TypeError(f"fertility needs a fast (tokenizers-backed) tokenizer, got {type(tok).__name__}")
    return backend


def _split_words(text: str, offsets: list[tuple[int, int]]) -> tuple[int, int]:
    """(words, words covered by more than one token) of one text."""
    spans = [m.span() for m in _WORD.finditer(text)]
    n_words = len(spans)
    if n_words == 0:
        return 0, 0
    # next_word[p]: index of the word that contains char p or starts after it;
    # prev_word[p]: index of the word that contains p or ends before it.
    n = len(text)
    starts = np.fromiter((s for s, _ in spans), dtype=np.int64, count=n_words)
    ends = np.fromiter((e for _, e in spans), dtype=np.int64, count=n_words)
    pos = np.arange(n, dtype=np.int64)
    next_word = np.searchsorted(ends, pos, side="right")  # first word with end > p
    prev_word = np.searchsorted(starts, pos, side="right") - 1  # last word with start <= p
    off = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    off = off[off[:, 1] > off[:, 0]]  # empty spans cover nothing
    if len(off) == 0:
        return n_words, 0
    first = next_word[off[:, 0]]
    last = prev_word[off[:, 1] - 1]
    hit = first <= last  # False for a token made only of whitespace
    first, last = first[hit], last[hit]
    cover = np.zeros(n_words + 1, dtype=np.int64)
    np.add.at(cover, first, 1)
    np.add.at(cover, last + 1, -1)
    per_word = np.cumsum(cover[:-1])
    return n_words, int((per_word > 1).sum())


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def fertility(tok: Any, texts: Iterable[str]) -> dict[str, float | int]:
    """Fertility of ``tok`` on ``texts``.

    Definitions (all totals over ``texts``; no special tokens are added):

    - ``words``: whitespace-separated words, ``len(text.split())``.
    - ``tokens``: tokens of ``tok.encode(text, add_special_tokens=False)``.
    - ``bytes``: UTF-8 bytes, ``len(text.encode("utf-8"))``.
    - ``tokens_per_word``: ``tokens / words``, NorMistral's subword-to-word
      split ratio (lower is better; 1.0 means one token per word).
    - ``bytes_per_token``: ``bytes / tokens`` (compression; higher is better).
    - ``split_word_share``: share of words covered by more than one token.
      A token covers a word when its character span (the encoding's offset
      mapping) overlaps the word's character span; a token made only of
      whitespace covers no word, and a token spanning two words covers both.
      Byte-fallback tokens of one character share its span, so a word with
      a byte-encoded character counts as split.

    Ratios with a zero denominator are NaN. ``tok`` is a transformers fast
    tokenizer or a ``tokenizers.Tokenizer``; texts are encoded in batches.
    """
    backend = _backend(tok)
    batch: list[str] = []
    totals = {"words": 0, "tokens": 0, "bytes": 0, "split": 0}

    def flush() -> None:
        for text, enc in zip(batch, backend.encode_batch(batch, add_special_tokens=False), strict=True):
            n_words, n_split = _split_words(text, enc.offsets)
            totals["words"] += n_words
            totals["split"] += n_split
            totals["tokens"] += len(enc.ids)
            totals["bytes"] += len(text.encode("utf-8"))
        batch.clear()

    for text in _nonempty(texts):
        batch.append(text)
        if len(batch) >= _BATCH:
            flush()
    if batch:
        flush()
    words, tokens, nbytes = totals["words"], totals["tokens"], totals["bytes"]
    return {
        "words": words,
        "tokens": tokens,
        "bytes": nbytes,
        "tokens_per_word": ratio(tokens, words),
        "bytes_per_token": ratio(nbytes, tokens),
        "split_word_share": ratio(totals["split"], words),
    }


def fertility_table(tokenizers: Mapping[str, Any], texts_by_lang: Mapping[str, list[str]]) -> pd.DataFrame:
    """One row per (tokenizer, language): the :func:`fertility` numbers."""
    rows = [
        {"tokenizer": name, "lang": lang, **fertility(tok, texts)}
        for name, tok in tokenizers.items()
        for lang, texts in texts_by_lang.items()
    ]
    return pd.DataFrame(rows, columns=FERTILITY_COLUMNS)


def fertility_ratios(table: pd.DataFrame, languages: Iterable[str]) -> dict[str, float]:
    """Per language, tokens per word of the ``target`` tokenizer over the ``source`` one (rows of ``table``)."""
    tpw = table.set_index(["tokenizer", "lang"])["tokens_per_word"]
    return {lang: ratio(tpw[("target", lang)], tpw[("source", lang)]) for lang in languages}
