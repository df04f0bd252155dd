"""Seeded tiny-vocabulary retrieval tasks for the context-extension testbed, and their tokenizer.

Every item is one document of space-separated symbols, ``prompt + answer``;
``length`` counts its tokens *plus* the EOS the trainer's packer appends, so
an item of length ``L`` fills exactly one training row of ``seq_len = L``
(and an evaluation forward of exactly ``L`` positions).

The haystack is the periodic filler ``a b c d a b ...`` (random phase): it is
perfectly predictable, so the language-modelling loss the trainer optimises
over the whole row concentrates on the needles and the answers.

Needles spell their content with the letters ``A``-``J`` and answers with the
digits ``0``-``9`` (``C`` in a needle is ``2`` in the answer): the model must
retrieve and transcribe. Why not the same symbols: the trainer's loss covers
every token, and with one alphabet the needle's own (unpredictable) digits
train the model *against* copying at exactly the tokens it must copy at
answer time. Measured on 2 CPU cores (items of 32 tokens, 600 steps of 16
rows, full-sequence loss): one alphabet stayed at chance (0% exact match,
10% of answer tokens right), two reached 23% exact / 76% of tokens, and with
a length curriculum (16 -> 32 -> ... tokens) 96% exact within 200 steps.

``passkey`` (Mohtashami & Jaggi 2023, landmark attention's passkey test)
    ``... K H C E B ... Q`` -> ``7 2 4 1``: one needle ``K`` + ``n_digits``
    random letters somewhere in the haystack; after the query mark ``Q`` the
    model must give them as digits. Chance: ``10^-n_digits``.
``kv`` (short-key value retrieval, a single-query associative recall)
    ``n_pairs`` needles ``K <key> <V> <V>`` (distinct one-letter keys
    ``g``-``l``, distinct two-letter values) in the haystack; the query
    ``Q <key>`` asks for one key's value, as two digits. Harder than the
    passkey: the model must match the key, and distractor values sit at
    other depths. Chance: 1/100 for a random value, 1/``n_pairs`` for a
    value of the prompt.

The *depth* of an item is the fraction of the haystack before its (queried)
needle: 0 = at the start, 1 = just before the query. :func:`make_items` with
``even=True`` spreads depths evenly (stratified: item ``i`` of ``n`` lies in
``[i/n, (i+1)/n)``), so every depth bucket holds the same number of items.
Each answer occurs exactly once in its prompt, as its needle
(:func:`answer_count`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SPECIALS = ("<pad>", "<unk>", "<eos>")
DIGITS = tuple("0123456789")  # answers
LETTERS = tuple("ABCDEFGHIJ")  # needles: LETTERS[d] stands for DIGITS[d]
FILLER = tuple("abcd")
KEYS = tuple("ghijkl")
KEY_MARK, QUERY_MARK = "K", "Q"
VOCAB: tuple[str, ...] = SPECIALS + DIGITS + LETTERS + FILLER + KEYS + (KEY_MARK, QUERY_MARK)
TOKEN_ID = {t: i for i, t in enumerate(VOCAB)}
TASKS = ("passkey", "kv")


@dataclass(frozen=True)
class Item:
    """One retrieval item: ``tokens`` = prompt + answer (no EOS); the answer is the last ``n_answer`` tokens."""

    task: str
    tokens: tuple[str, ...]
    n_answer: int
    depth: float

    @property
    def prompt(self) -> tuple[str, ...]:
        return self.tokens[: -self.n_answer]

    @property
    def answer(self) -> tuple[str, ...]:
        return self.tokens[-self.n_answer :]

    @property
    def text(self) -> str:
        return " ".join(self.tokens)

    @property
    def length(self) -> int:
        """Tokens including the EOS the packer appends."""
        return len(self.tokens) + 1

    def ids(self, eos: bool = True) -> list[int]:
        out = [TOKEN_ID[t] for t in self.tokens]
        return out + [TOKEN_ID["<eos>"]] if eos else out


def min_length(task: str, n_digits: int = 4, n_pairs: int = 4) -> int:
    """The shortest ``length`` (EOS included) an item of ``task`` fits in, with one filler token."""
    if task == "passkey":
        return (1 + n_digits) + 1 + n_digits + 1 + 1
    if task == "kv":
        return 4 * n_pairs + 2 + 2 + 1 + 1
    raise ValueError(f"task: unknown {task!r}; known tasks: {', '.join(TASKS)}")


def _check(task: str, length: int, n_digits: int, n_pairs: int) -> int:
    if task not in TASKS:
        raise ValueError(f"task: unknown {task!r}; known tasks: {', '.join(TASKS)}")
    if not 1 <= n_digits <= 12:
        raise ValueError(f"n_digits must be in [1, 12], got {n_digits}")
    if not 1 <= n_pairs <= len(KEYS):
        raise ValueError(f"n_pairs must be in [1, {len(KEYS)}], got {n_pairs}")
    need = min_length(task, n_digits, n_pairs)
    if length < need:
        raise ValueError(f"length {length} is shorter than a {task} item needs ({need} tokens with EOS)")
    return need


def _haystack(n: int, rng: random.Random, inserts: list[tuple[int, list[str]]]) -> list[str]:
    """``n`` periodic filler tokens with each ``(index, tokens)`` inserted before filler token ``index``."""
    phase = rng.randrange(len(FILLER))
    fill = [FILLER[(phase + j) % len(FILLER)] for j in range(n)]
    out: list[str] = []
    prev = 0
    for idx, toks in sorted(inserts, key=lambda x: x[0]):
        out += fill[prev:idx]
        out += toks
        prev = idx
    return out + fill[prev:]


def make_item(task: str, length: int, depth: float, rng: random.Random, n_digits: int = 4, n_pairs: int = 4) -> Item:
    """One ``task`` item of exactly ``length`` tokens (EOS included) with its needle at ``depth`` in [0, 1]."""
    need = _check(task, length, n_digits, n_pairs)
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be in [0, 1], got {depth}")
    n_fill = length - need + 1
    at = min(n_fill, int(round(depth * n_fill)))
    if task == "passkey":
        code = [rng.randrange(10) for _ in range(n_digits)]
        body = _haystack(n_fill, rng, [(at, [KEY_MARK, *(LETTERS[d] for d in code)])])
        return Item(task, tuple(body + [QUERY_MARK] + [DIGITS[d] for d in code]), n_digits, depth)
    keys = rng.sample(KEYS, n_pairs)
    values = [divmod(v, 10) for v in rng.sample(range(100), n_pairs)]
    pairs = [[KEY_MARK, k, LETTERS[a], LETTERS[b]] for k, (a, b) in zip(keys, values)]
    inserts = [(at, pairs[0])] + [(rng.randint(0, n_fill), p) for p in pairs[1:]]
    body = _haystack(n_fill, rng, inserts)
    return Item(task, tuple(body + [QUERY_MARK, keys[0], DIGITS[values[0][0]], DIGITS[values[0][1]]]), 2, depth)


def make_items(
    task: str,
    length: int,
    n: int,
    seed: int,
    even: bool = True,
    n_digits: int = 4,
    n_pairs: int = 4,
) -> list[Item]:
    """``n`` items, deterministic in ``(task, length, n, seed)``; ``even``: depths stratified over [0, 1]."""
    _check(task, length, n_digits, n_pairs)
    rng = random.Random(f"warmstart.context.tasks:{task}:{length}:{seed}")
    items = []
    for i in range(n):
        depth = (i + rng.random()) / n if even else rng.random()
        items.append(make_item(task, length, min(depth, 1.0), rng, n_digits, n_pairs))
    return items


def mixed_items(tasks: Sequence[str], length: int, n: int, seed: int, **kw: int) -> list[Item]:
    """``n`` items cycling over ``tasks`` (random depths), shuffled deterministically: training data."""
    per = [make_items(t, length, -(-n // len(tasks)), seed * 7919 + k, even=False, **kw) for k, t in enumerate(tasks)]
    items = [it for group in zip(*per) for it in group][:n]
    random.Random(f"mix:{seed}:{length}").shuffle(items)
    return items


def as_needle(tokens: Sequence[str]) -> tuple[str, ...]:
    """Digits spelled as needle letters (``7 2`` -> ``H C``); other symbols unchanged."""
    return tuple(LETTERS[DIGITS.index(t)] if t in DIGITS else t for t in tokens)


def answer_count(item: Item) -> int:
    """How many times the answer (as needle letters) occurs as a contiguous run in the prompt (1 for every item)."""
    p, a = item.prompt, as_needle(item.answer)
    return sum(1 for i in range(len(p) - len(a) + 1) if p[i : i + len(a)] == a)


def depth_bucket(depth: float, buckets: int) -> int:
    return min(int(depth * buckets), buckets - 1)


def chance(task: str, n_digits: int = 4) -> float:
    """Exact-match accuracy of guessing uniformly among possible answers."""
    return 10.0**-n_digits if task == "passkey" else 1 / 100


def make_tokenizer():
    """A word-level ``PreTrainedTokenizerFast`` over :data:`VOCAB` (whitespace-split; EOS ``<eos>``, pad ``<pad>``)."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(WordLevel(dict(TOKEN_ID), unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins word-level tokens with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>", model_max_length=1 << 20
    )


def save_tokenizer(out_dir: str | Path) -> Path:
    """Write the testbed tokenizer to ``out_dir`` (loadable with ``AutoTokenizer.from_pretrained``)."""
    from warmstart.tokenizer import save_atomic

    return save_atomic(make_tokenizer(), out_dir)
