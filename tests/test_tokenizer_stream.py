"""The tokenizer's streamed training sample (``tokenizer.max_train_bytes``): warmstart.data.mixing.sampled_texts."""

from __future__ import annotations

import random

import pytest

from warmstart.config import Tokenizer as TokenizerConfig
from warmstart.data.mixing import sampled_texts
from warmstart.tokenizer import train_tokenizer

WORDS = "hus båt fjell elv skog vei by land sjø himmel sol måne stjerne".split()


def _texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 40))) for _ in range(n)]


def _size(texts) -> int:
    return sum(len(t.encode()) for t in texts)


@pytest.mark.parametrize("kind", ["byte_bpe", "sp_unigram"])
def test_a_streamed_text_trains_the_same_tokenizer_as_the_list(kind):
    texts = _texts(300, 0)
    reads = []

    def stream():
        reads.append(1)
        return iter(texts)

    cfg = TokenizerConfig(kind=kind, vocab_size=300, target_mix={"target": 1.0})
    a = train_tokenizer(texts, cfg).backend_tokenizer.to_str()
    b = train_tokenizer(stream, cfg).backend_tokenizer.to_str()
    assert a == b and len(reads) >= 2  # the unigram trainer reads the stream twice: it restarts


def test_sample_whole_passes_then_a_seeded_partial_pass():
    nb, en = _texts(200, 1), _texts(100, 2)
    sources = {"nb": lambda: iter(nb), "en": lambda: iter(en)}
    everything = _size(nb) + _size(en)
    # a budget above the plan keeps the plan: weights 1:1 over sizes nb > en means en is read more than once
    texts, plan = sampled_texts(sources, {"nb": 1.0}, 16, 10 * everything, seed=7)
    assert list(texts()) == nb and plan["nb"].target == _size(nb)
    texts, plan = sampled_texts(sources, {"nb": 1.0, "en": 1.0}, 16, 10 * everything, seed=7)
    got = list(texts())
    r_nb, r_en = (plan[k].target / _size(x) for k, x in (("nb", nb), ("en", en)))
    assert r_nb < 1 < r_en < 2  # nb: part of one pass; en: one whole pass, then part of another
    n_nb = sum(1 for t in got if t in set(nb))
    assert got[n_nb : n_nb + len(en)] == en and set(got[n_nb + len(en) :]) <= set(en)
    for part, rate, size in ((got[:n_nb], r_nb, _size(nb)), (got[n_nb + len(en) :], r_en - 1, _size(en))):
        assert abs(_size(part) - rate * size) < 0.2 * rate * size  # the seeded partial pass keeps about its share
    assert list(texts()) == got  # the same sample every time
    # a budget cuts every language's share by the same factor; the sample is spread over the corpus
    small, _ = sampled_texts(sources, {"nb": 1.0, "en": 1.0}, 16, everything // 4, seed=7)
    s = list(small())
    assert abs(_size(s) - everything / 4) < 0.2 * everything / 4
    assert s != list(sampled_texts(sources, {"nb": 1.0, "en": 1.0}, 16, everything // 4, seed=8)[0]())
    assert any(t in s for t in nb[150:]) and any(t in s for t in nb[:50])


def test_sample_refuses_bad_input():
    with pytest.raises(ValueError, match="max_train_bytes must be > 0"):
        sampled_texts({"nb": lambda: iter(["a"])}, {"nb": 1.0}, 16, 0, 1)
    with pytest.raises(ValueError, match=r"no data: \['sv'\]"):
        sampled_texts({"nb": lambda: iter(["a"])}, {"sv": 1.0}, 16, 10, 1)
