"""Tokenizer training, saving and fertility (warmstart.tokenizer)."""

from __future__ import annotations

import json
import os
import random
import unicodedata
from pathlib import Path

import pandas as pd
import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from conftest import SPECIALS
from warmstart import tokenizer as wtok
from warmstart.config import SpecialTokens
from warmstart.config import Tokenizer as TokenizerConfig
from warmstart.data.mixing import mixed_texts, plan_mixture
from warmstart.tokenizer import (
    BYTE_TOKENS,
    FERTILITY_COLUMNS,
    fertility,
    fertility_table,
    min_vocab_size,
    train_tokenizer,
)

KINDS = ["byte_bpe", "sp_bpe", "sp_unigram"]

# Tiny Norwegian training text: enough repetition for merges at min_frequency=2.
TRAIN = [
    "Blåbærsyltetøy er godt på brødskiva.",
    "Vi går på tur i skogen og ser på trærne.",
    "Hei på deg, hvordan går det med deg i dag?",
    "Kari og Ola bor i Bergen, og de går på skolen der.",
    "Ærlig talt: øl og brød er godt på en lørdag.",
    "I 2024 var det 365 dager og 12 måneder.",
] * 4

# Round-trip probes: Norwegian letters, digits, emoji (never seen in training),
# tabs, newlines, runs of spaces, leading/trailing space, text that looks like
# a byte token, punctuation after a space (what clean_up_tokenization_spaces
# would "fix"), CJK and symbols. All already NFC.
PROBES = [
    "Blåbærsyltetøy på brødskiva, takk!",
    "Ærlig talt: 1234 øl og 56 brød. ÆØÅ æøå",
    "emoji 😀🇳🇴 og tab\tog\nlinjeskift\r\n",
    "  to  mellomrom\t\tog hale  ",
    "hei , du . ja ! ( parentes )",
    "<0x41> ser ut som et byte-token",
    "中文 ∑ ≤ € ẞ ñ ő",
    "",
]


def cfg(kind: str = "byte_bpe", vocab_size: int = 400, **kw) -> TokenizerConfig:
    return TokenizerConfig(kind=kind, vocab_size=vocab_size, target_mix={"target": 1.0}, **kw)


@pytest.fixture(scope="module")
def trained() -> dict[str, object]:
    return {kind: train_tokenizer(TRAIN, cfg(kind)) for kind in KINDS}


def test_probes_are_nfc():
    assert all(unicodedata.normalize("NFC", p) == p for p in PROBES)


# ---------------------------------------------------------------- round trip


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip(trained, kind):
    tok = trained[kind]
    for text in PROBES:
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text, (kind, text, tok.convert_ids_to_tokens(ids))
        assert tok.unk_token_id not in ids  # bytes (or byte fallback) cover everything


@pytest.mark.parametrize("kind", KINDS)
def test_learns_pieces(trained, kind):
    """Training did something: the text takes far fewer tokens than characters."""
    tok = trained[kind]
    n_tokens = sum(len(tok.encode(t, add_special_tokens=False)) for t in TRAIN)
    assert n_tokens < 0.75 * sum(len(t) for t in TRAIN)
    assert len(tok.tokenize(" brød")) == 1
    if kind != "sp_unigram":  # HF's Unigram EM prunes hard on a text this small
        assert len(tok.tokenize(" på")) == 1
        assert len(tok.tokenize(" godt")) == 1


@pytest.mark.parametrize("kind", ["sp_bpe", "sp_unigram"])
def test_byte_fallback_for_unseen_characters(trained, kind):
    tok = trained[kind]
    assert "😀" not in "".join(TRAIN)
    pieces = tok.tokenize("😀")
    assert pieces == ["<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]


@pytest.mark.parametrize("split_digits", [True, False])
@pytest.mark.parametrize("kind", ["sp_bpe", "sp_unigram"])
def test_literal_byte_token_text_is_not_a_byte_token(kind, split_digits):
    # frequent in the training text, so BPE would merge it into "<0x41>"
    literal = ["<0x41> <0xC3><0xA5> x<0x41>y"] * 20
    tok = train_tokenizer(TRAIN + literal, cfg(kind, split_digits=split_digits))
    assert tok.convert_ids_to_tokens(list(range(5, 261))) == BYTE_TOKENS
    for text in ["<0x41>", "x<0x41>y", "<0xC3><0xA5>", "<0x4"]:
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text, tok.convert_ids_to_tokens(ids)


def test_byte_bpe_is_gpt2_style(trained):
    tok = trained["byte_bpe"]
    backend = json.loads(tok.backend_tokenizer.to_str())
    assert backend["decoder"]["type"] == "ByteLevel"
    byte_level = [p for p in backend["pre_tokenizer"]["pretokenizers"] if p["type"] == "ByteLevel"]
    assert byte_level and byte_level[0]["add_prefix_space"] is False
    # every byte is a symbol: 256 single-character tokens after the specials
    vocab = tok.get_vocab()
    assert all(vocab[c] >= 5 for c in wtok.pre_tokenizers.ByteLevel.alphabet())
    assert tok.tokenize("hei der") == tok.tokenize("hei") + tok.tokenize(" der")  # no prefix space


@pytest.mark.parametrize("kind", KINDS)
def test_normalization(kind):
    decomposed = "bla\u030ab\u00e6r"  # "blåbær" with a combining ring above
    nfc = unicodedata.normalize("NFC", decomposed)
    train = TRAIN + [decomposed + " ﬁn"] * 2

    tok = train_tokenizer(train, cfg(kind, normalization="NFC"))
    assert tok.decode(tok.encode(decomposed, add_special_tokens=False)) == nfc
    assert tok.decode(tok.encode("ﬁn", add_special_tokens=False)) == "ﬁn"  # NFC keeps the ligature

    tok = train_tokenizer(train, cfg(kind, normalization="NFKC"))
    assert tok.decode(tok.encode("ﬁn", add_special_tokens=False)) == "fin"

    tok = train_tokenizer(train, cfg(kind, normalization="none"))
    assert tok.decode(tok.encode(decomposed, add_special_tokens=False)) == decomposed


# ---------------------------------------------------------------- ids and sizes


@pytest.mark.parametrize("kind", KINDS)
def test_special_token_ids(trained, kind):
    tok = trained[kind]
    assert tok.convert_tokens_to_ids(SPECIALS) == [0, 1, 2, 3, 4]
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id, tok.mask_token_id) == (
        0,
        1,
        2,
        3,
        4,
    )
    assert len(tok) <= 400
    # no BOS/EOS is added implicitly
    assert tok.encode("hei") == tok.encode("hei", add_special_tokens=False)
    # a special token in the text is one token
    assert tok.encode("<s>hei</s>", add_special_tokens=False)[0] == 1
    if kind != "byte_bpe":
        assert tok.convert_ids_to_tokens(list(range(5, 261))) == BYTE_TOKENS
        assert BYTE_TOKENS[0] == "<0x00>" and BYTE_TOKENS[-1] == "<0xFF>"


def test_custom_special_tokens():
    st = SpecialTokens(bos="<|begin|>", eos="<|end|>", pad="<|pad|>", unk="<|unk|>", mask="<|mask|>")
    for kind in KINDS:
        tok = train_tokenizer(TRAIN, cfg(kind, special_tokens=st))
        assert tok.convert_tokens_to_ids(st.as_list()) == [0, 1, 2, 3, 4]
        assert tok.bos_token == "<|begin|>" and tok.eos_token_id == 2 and tok.mask_token_id == 4
        assert tok.convert_tokens_to_ids("<s>") == tok.unk_token_id  # the defaults are not there


def _random_words(n: int = 600, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(3, 8))) for _ in range(n)]
    return [" ".join(words[i : i + 20]) for i in range(0, n, 20)] * 2


@pytest.mark.parametrize("kind", KINDS)
def test_vocab_size_is_reached_when_text_allows(kind):
    tok = train_tokenizer(_random_words(), cfg(kind, vocab_size=330))
    assert len(tok) == 330


def test_min_vocab_size():
    assert min_vocab_size(cfg("byte_bpe")) == 5 + 256
    assert min_vocab_size(cfg("sp_bpe")) == 5 + 256 + 1
    assert min_vocab_size(cfg("sp_unigram")) == 5 + 256 + 1


def _must_not_be_read():
    raise AssertionError("the texts were read before the vocab_size check")
    yield ""  # pragma: no cover


@pytest.mark.parametrize("kind", KINDS)
def test_vocab_too_small_raises_before_training(kind):
    minimum = min_vocab_size(cfg(kind))
    with pytest.raises(ValueError) as err:
        train_tokenizer(_must_not_be_read(), cfg(kind, vocab_size=minimum - 1))
    msg = str(err.value)
    assert "tokenizer.vocab_size" in msg and str(minimum - 1) in msg and str(minimum) in msg
    with pytest.raises(ValueError, match="tokenizer.vocab_size=64"):
        train_tokenizer(TRAIN, cfg(kind, vocab_size=64))
    # the minimum itself trains, and still round-trips everything
    tok = train_tokenizer(TRAIN, cfg(kind, vocab_size=minimum))
    assert len(tok) == minimum
    for text in PROBES:
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


@pytest.mark.parametrize("texts", [[], ["", ""], iter([])])
def test_empty_text_raises(texts):
    with pytest.raises(ValueError, match="no training text"):
        train_tokenizer(texts, cfg())


def test_bad_texts_raise():
    with pytest.raises(TypeError):
        train_tokenizer("a single string", cfg())
    with pytest.raises(TypeError):
        train_tokenizer(["ok", 3], cfg())


def test_sp_unigram_alphabet_larger_than_vocab():
    """More distinct characters than slots: the rarest fall back to bytes."""
    text = TRAIN + ["".join(chr(0x4E00 + i) for i in range(80))]  # 80 CJK characters, once each
    tok = train_tokenizer(text, cfg("sp_unigram", vocab_size=300))  # 39 slots for ~120 characters
    assert len(tok) == 300
    assert "å" in tok.get_vocab() and "▁" in tok.get_vocab()  # frequent characters stay
    ids = tok.encode(text[-1], add_special_tokens=False)
    assert len(ids) == 80 * 3 and all(5 <= i < 261 for i in ids)  # the rare ones are spelled in bytes
    for probe in PROBES + text[-1:]:
        assert tok.decode(tok.encode(probe, add_special_tokens=False)) == probe


# ---------------------------------------------------------------- digits


@pytest.mark.parametrize("kind", KINDS)
def test_split_digits(kind):
    text = ["Året 2024 og 2024 og 2024 igjen, 1999 og 1999."] * 10
    probe = "2024 og 1999"
    tok = train_tokenizer(text, cfg(kind, split_digits=True))
    pieces = list(tok.tokenize(probe))
    digits = [p.lstrip("Ġ▁") for p in pieces if any(c.isdigit() for c in p)]
    assert digits == list("20241999")
    assert all(
        not any(c.isdigit() for c in p) for p in tok.get_vocab() if len(p.lstrip("Ġ▁")) > 1 and not p.startswith("<0x")
    )

    tok = train_tokenizer(text, cfg(kind, split_digits=False))
    assert any(sum(c.isdigit() for c in p) > 1 for p in tok.tokenize(probe))  # merged digits exist


# ---------------------------------------------------------------- saving


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_reload(tmp_path, kind):
    out = tmp_path / "tok"
    tok = train_tokenizer(TRAIN, cfg(kind), out_dir=out)
    assert (out / "tokenizer.json").is_file()
    again = AutoTokenizer.from_pretrained(out)
    for text in PROBES:
        assert again.encode(text) == tok.encode(text)
        assert again.decode(again.encode(text)) == text
    assert again.convert_tokens_to_ids(SPECIALS) == [0, 1, 2, 3, 4]
    assert (again.bos_token, again.eos_token, again.pad_token, again.unk_token, again.mask_token) == (
        "<s>",
        "</s>",
        "<pad>",
        "<unk>",
        "<mask>",
    )
    assert again.model_max_length >= 10**9
    assert len(again) == len(tok)


def test_save_replaces_existing_dir_atomically(tmp_path):
    out = tmp_path / "data" / "tokenizer"
    out.mkdir(parents=True)
    (out / "stale.txt").write_text("from an older run")
    train_tokenizer(TRAIN, cfg(), out_dir=out)
    assert (out / "tokenizer.json").is_file()
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["tokenizer"]  # no temp dirs left


def test_failed_save_keeps_previous(tmp_path, monkeypatch):
    out = tmp_path / "tok"
    train_tokenizer(TRAIN, cfg(), out_dir=out)
    before = (out / "tokenizer.json").read_bytes()

    def boom(self, *a, **k):
        Path(a[0], "tokenizer.json").write_text("{half")
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(PreTrainedTokenizerFast, "save_pretrained", boom)
        with pytest.raises(OSError, match="disk full"):
            train_tokenizer(TRAIN, cfg("sp_bpe"), out_dir=out)
    assert (out / "tokenizer.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]

    # the swap itself fails after the old directory was moved aside
    real_replace = os.replace

    def flaky_replace(src, dst):
        if ".tmp-" in str(src):
            raise OSError("rename failed")
        return real_replace(src, dst)

    with monkeypatch.context() as m:
        m.setattr(os, "replace", flaky_replace)  # the rename happens in warmstart.io.atomic_dir
        with pytest.raises(OSError, match="rename failed"):
            train_tokenizer(TRAIN, cfg("sp_bpe"), out_dir=out)
    assert (out / "tokenizer.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic(tmp_path, kind):
    # tokenizers' trainers iterate hash maps with per-instance random seeds
    # (the raw Unigram output differs run to run even within one process)
    texts = TRAIN + _random_words(300)
    a = train_tokenizer(texts, cfg(kind, vocab_size=350), out_dir=tmp_path / "a")
    b = train_tokenizer(texts, cfg(kind, vocab_size=350), out_dir=tmp_path / "b")
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()
    assert a.get_vocab() == b.get_vocab()


# ---------------------------------------------------------------- fertility


def test_fertility_exact_byte_bpe():
    # one merge only ("a" + "b"): the segmentation is fully predictable
    tok = train_tokenizer(["ab"] * 4, cfg("byte_bpe", vocab_size=262))
    assert len(tok) == 262
    enc = tok("ab abc a", add_special_tokens=False, return_offsets_mapping=True)
    assert tok.convert_ids_to_tokens(enc["input_ids"]) == ["ab", "Ġ", "ab", "c", "Ġ", "a"]
    # words: "ab" (1 token), "abc" (ab, c: split), "a" (1 token; the "Ġ" tokens
    # are whitespace only and count for no word)
    f = fertility(tok, ["ab abc a"])
    assert f == {
        "words": 3,
        "tokens": 6,
        "bytes": 8,
        "tokens_per_word": 2.0,
        "bytes_per_token": 8 / 6,
        "split_word_share": 1 / 3,
    }


def test_fertility_exact_byte_fallback():
    # 5 specials + 256 bytes + "a", "b" + one merge; "▁" never seen: bytes
    tok = train_tokenizer(["ab"] * 4, cfg("sp_bpe", vocab_size=264))
    assert len(tok) == 264
    text = "ab abc a xå"
    assert tok.tokenize(text) == (
        ["ab"]
        + ["<0xE2>", "<0x96>", "<0x81>"]
        + ["ab", "<0x63>"]
        + ["<0xE2>", "<0x96>", "<0x81>"]
        + ["a"]
        + ["<0xE2>", "<0x96>", "<0x81>"]
        + ["<0x78>", "<0xC3>", "<0xA5>"]
    )
    # the three bytes of "▁" share the space's span: whitespace only, no word;
    # "xå" is three tokens (x + the two bytes of å); "abc" two; "ab", "a" one
    f = fertility(tok, [text])
    assert (f["words"], f["tokens"], f["bytes"]) == (4, 16, 12)
    assert f["split_word_share"] == 2 / 4
    assert f["tokens_per_word"] == 16 / 4 and f["bytes_per_token"] == 12 / 16


def test_split_words_helper():
    sw = wtok._split_words
    text = "ab\tcd  ef"
    # one token spanning two words covers both, once each
    assert sw(text, [(0, 5), (5, 7), (7, 9)]) == (3, 0)
    # whitespace-only and empty tokens cover nothing
    assert sw(text, [(0, 2), (2, 3), (3, 5), (4, 4), (5, 7), (7, 8), (8, 9)]) == (3, 1)
    # tokens straddling a boundary count for both words
    assert sw(text, [(0, 1), (1, 4), (4, 5), (6, 9)]) == (3, 2)
    assert sw("   ", [(0, 3)]) == (0, 0)
    assert sw("x", []) == (1, 0)


@pytest.mark.parametrize("kind", KINDS)
def test_fertility_totals_match_encode(trained, kind, monkeypatch):
    tok = trained[kind]
    texts = PROBES + TRAIN
    f = fertility(tok, texts)
    assert f["tokens"] == sum(len(tok.encode(t, add_special_tokens=False)) for t in texts)
    assert f["words"] == sum(len(t.split()) for t in texts)
    assert f["bytes"] == sum(len(t.encode("utf-8")) for t in texts)
    assert f["tokens_per_word"] == f["tokens"] / f["words"]
    assert f["bytes_per_token"] == f["bytes"] / f["tokens"]
    assert 0.0 < f["split_word_share"] < 1.0
    # batching does not change anything; a generator and the backend work too
    monkeypatch.setattr(wtok, "_BATCH", 3)
    assert fertility(tok.backend_tokenizer, iter(texts)) == f


def test_fertility_empty():
    tok = train_tokenizer(TRAIN, cfg())
    f = fertility(tok, ["", "   "])
    assert (f["words"], f["bytes"]) == (0, 3)
    assert pd.isna(f["tokens_per_word"]) and pd.isna(f["split_word_share"])


def test_fertility_exact_without_merges():
    """A byte-level BPE of 256 bytes + specials has no merges: one token per byte, counted by hand."""
    tok = train_tokenizer(TRAIN, cfg(vocab_size=min_vocab_size(cfg())))
    assert len(tok) == 256 + len(SPECIALS)
    # "ab cd" -> a b | Ġ c d (5 tokens, 5 bytes), "e" -> e: 3 words, 6 tokens; "ab" and "cd" split, "e" not
    assert fertility(tok, ["ab cd", "e"]) == {
        "words": 3,
        "tokens": 6,
        "bytes": 6,
        "tokens_per_word": 2.0,
        "bytes_per_token": 1.0,
        "split_word_share": 2 / 3,
    }


def test_fertility_table(trained):
    texts = {"nb-NO": TRAIN[:6], "en-US": ["The cat sat on the mat.", "Hello there, how are you?"]}
    toks = {"byte": trained["byte_bpe"], "uni": trained["sp_unigram"]}
    df = fertility_table(toks, texts)
    assert list(df.columns) == FERTILITY_COLUMNS and df.shape == (4, len(FERTILITY_COLUMNS))
    assert list(zip(df.tokenizer, df.lang, strict=True)) == [
        ("byte", "nb-NO"),
        ("byte", "en-US"),
        ("uni", "nb-NO"),
        ("uni", "en-US"),
    ]
    row = df[(df.tokenizer == "uni") & (df.lang == "en-US")].iloc[0].to_dict()
    assert row == {"tokenizer": "uni", "lang": "en-US", **fertility(toks["uni"], texts["en-US"])}
    # trained on Norwegian: Norwegian splits into fewer tokens per word than English
    nb, en = df[df.tokenizer == "byte"].set_index("lang").loc[["nb-NO", "en-US"], "tokens_per_word"]
    assert nb < en


# ---------------------------------------------------------------- mixing


def _langs(n_a: int = 10, n_b: int = 10) -> dict[str, list[str]]:
    return {
        "aa": [f"a-text-{i:03d}" for i in range(n_a)],  # 10 bytes each
        "bb": [f"b-text-{i:03d}" for i in range(n_b)],
        "cc": ["never used"],
    }


def _bytes_by_lang(texts: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in texts:
        out[t[0]] = out.get(t[0], 0) + len(t.encode("utf-8"))
    return out


def test_mixed_texts_follows_weights():
    langs = _langs()
    out = mixed_texts(langs, {"aa": 3.0, "bb": 1.0}, max_repeats=16, seed=0)
    # total = 200 bytes, split 3:1
    assert _bytes_by_lang(out) == {"a": 150, "b": 50}
    assert set(out) <= set(langs["aa"]) | set(langs["bb"])
    plan = plan_mixture({"aa": 100, "bb": 100}, {"aa": 3.0, "bb": 1.0}, 16)
    assert (plan["aa"].target, plan["bb"].target) == (150, 50)


def test_mixed_texts_caps_repeats():
    langs = _langs(n_a=10, n_b=2)  # 100 and 20 bytes
    out = mixed_texts(langs, {"aa": 1.0, "bb": 9.0}, max_repeats=2.0, seed=1)
    # bb would get 108 of 120 bytes but is capped at 2 x 20; aa takes the rest
    assert _bytes_by_lang(out) == {"b": 40, "a": 80}
    assert out.count(langs["bb"][0]) == 2


def test_mixed_texts_seeded():
    langs = _langs()
    w = {"aa": 1.0, "bb": 1.0}
    assert mixed_texts(langs, w, 16, seed=7) == mixed_texts(langs, w, 16, seed=7)
    assert mixed_texts(langs, w, 16, seed=7) != mixed_texts(langs, w, 16, seed=8)
    assert sorted(mixed_texts(langs, w, 16, seed=7)) == sorted(langs["aa"] + langs["bb"])


def test_mixed_texts_unknown_language():
    with pytest.raises(ValueError, match="zz"):
        mixed_texts(_langs(), {"zz": 1.0}, 16, seed=0)


def test_mixed_texts_trains_a_tokenizer():
    langs = {"nb-NO": TRAIN, "en-US": ["The cat sat on the mat."] * 10}
    texts = mixed_texts(langs, {"nb-NO": 1.0}, 16, seed=0)
    assert sorted(texts) == sorted(TRAIN)
    tok = train_tokenizer(texts, cfg("byte_bpe"))
    assert len(tok.tokenize(" på")) == 1


def test_target_mix_in_words():
    """The report says the target tokenizer's training mix in shares, not as a Python dict."""
    from warmstart.stages.tokenizer import _mix

    assert _mix({"nb-NO": 1.0}) == "nb-NO 100%"
    assert _mix({"nb-NO": 3.0, "da-DK": 1.0}) == "nb-NO 75%, da-DK 25%"
