"""Vocabulary swap: handmade tokenizers, tiny models, exact expectations.

Two worlds, both directions of the byte-level <-> SentencePiece swap:

- ``gpt2``: a tied GPT-2 model with a handmade byte-level BPE tokenizer
  ("english"), swapped to a handmade SentencePiece-style BPE with byte
  fallback ("norwegian").
- ``llama``: an untied Llama with the SentencePiece-style tokenizer, swapped
  to the byte-level one.

Merges are written by hand, so we know exactly how the old tokenizer
segments every new token (``▁hus`` -> ``Ġh u s``).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import runpy
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from conftest import SPECIALS, fast_tokenizer
from warmstart import vocab_swap as vs

B2U = vs.BYTE_TO_UNICODE
SP = "\u2581"
PAD_MULTIPLE = 64
# gensim trains FOCUS's fastText vectors; it is an optional dependency until pyproject lists it
needs_gensim = pytest.mark.skipif(importlib.util.find_spec("gensim") is None, reason="gensim is not installed")
METHOD_PARAMS = [pytest.param(m, marks=needs_gensim) if m == "focus" else m for m in vs.METHODS]

# ---------------------------------------------------------------- handmade tokenizers


def _merges(words: list[str]) -> list[tuple[str, str]]:
    """Left-to-right merges that build each word from its characters."""
    out: list[tuple[str, str]] = []
    for w in words:
        cur = w[0]
        for ch in w[1:]:
            pair = (cur, ch)
            if pair not in out:
                out.append(pair)
            cur += ch
    return out


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """GPT-2 style: ByteLevel pre-tokenizer/decoder, 256 byte symbols, handmade merges."""
    g = B2U[ord(" ")]  # 'Ġ'
    words = [g + "house", g + "the", g + "dog", "at", g + "cat", g + "is", "se", g + "h"]
    merges = _merges(words)
    vocab = {"<|endoftext|>": 0}
    for b in range(256):
        vocab[B2U[b]] = len(vocab)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )


def sp_tokenizer() -> PreTrainedTokenizerFast:
    """SentencePiece style: Metaspace, BPE with byte fallback (<0x00>..<0xFF>), 5 specials."""
    chars = [SP] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["å", "ø", "æ"]
    words = [SP + "house", SP + "hus", SP + "the", SP + "dog", SP + "kat", SP + "er", "at", SP + "bøk", SP + "aaa"]
    merges = _merges(words)
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for c in chars:
        vocab[c] = len(vocab)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SP, prepend_scheme="first", split=True)
    tok.decoder = decoders.Sequence(
        [decoders.ByteFallback(), decoders.Metaspace(replacement=SP, prepend_scheme="first")]
    )
    tok.add_special_tokens(SPECIALS)
    return fast_tokenizer(tok)


NB_TEXTS = [
    "the house er en hus og kat er på bøk",
    "en kat og en dog i huset, the hus er stor",
    "bøk og hus og kat, the dog er her",
    "hus hus kat bøk the house dog er",
] * 6


def _gpt2(vocab: int, seed: int, hidden: int = 32) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=vocab, n_embd=hidden, n_layer=2, n_head=2, n_positions=64, bos_token_id=0, eos_token_id=0
    )
    return GPT2LMHeadModel(cfg).eval()


def _llama(vocab: int, seed: int, hidden: int = 32, tied: bool = False) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tied,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def toks():
    return {"bl": byte_level_tokenizer(), "sp": sp_tokenizer()}


@pytest.fixture(scope="module")
def world(tmp_path_factory, toks):
    """Saved model dirs: gpt2 (tied, byte-level), llama (untied, sp), and donors."""
    root = tmp_path_factory.mktemp("vocab_swap")
    bl, sp = toks["bl"], toks["sp"]
    dirs = {}
    for name, model, tok in [
        ("gpt2", _gpt2(len(bl), 0), bl),
        ("llama", _llama(len(sp), 1), sp),
        ("donor_sp", _llama(len(sp), 2, hidden=48), sp),  # uses the gpt2 world's new tokenizer; untied
        ("donor_bl", _gpt2(len(bl), 3, hidden=48), bl),  # uses the llama world's new tokenizer; tied
    ]:
        d = root / name
        model.save_pretrained(str(d))
        tok.save_pretrained(str(d))
        dirs[name] = d
    dirs["tok_sp"], dirs["tok_bl"] = root / "tok_sp", root / "tok_bl"
    sp.save_pretrained(str(dirs["tok_sp"]))
    bl.save_pretrained(str(dirs["tok_bl"]))
    texts = root / "nb.jsonl"
    texts.write_text("".join(json.dumps({"text": t}) + "\n" for t in NB_TEXTS), encoding="utf-8")
    dirs["texts"] = texts
    dirs["root"] = root
    return dirs


SCENARIOS = {  # name: (model dir, new tokenizer dir, donor dir)
    "gpt2": ("gpt2", "tok_sp", "donor_sp"),
    "llama": ("llama", "tok_bl", "donor_bl"),
}
FT = vs.FastTextOptions(dim=16, epochs=5, min_count=1, bucket=2000, workers=1)
TD = vs.TokDistilOptions(start="fvt", layers=[-1], snippets=2, snippet_len=8, steps=2)  # tokdistil, small and fast


def _swap_dir(world, scenario: str, method: str, out_name: str | None = None, **kw) -> tuple[vs.SwapReport, object]:
    model, tok, donor = SCENARIOS[scenario]
    out = world["root"] / (out_name or f"out-{scenario}-{method}")
    rep = vs.swap_model_dir(
        world[model],
        world[tok],
        out,
        method,
        donor_dir=world[donor] if method == "omp" else None,
        texts=NB_TEXTS if method in ("focus", "tokdistil") else None,
        fasttext=FT,
        tokdistil=TD,
        pad_multiple=kw.pop("pad_multiple", PAD_MULTIPLE),
        seed=kw.pop("seed", 0),
        **kw,
    )
    return rep, out


def _emb(model) -> torch.Tensor:
    return model.get_input_embeddings().weight.detach()


def _head(model) -> torch.Tensor:
    return model.get_output_embeddings().weight.detach()


def _id(tok, s: str) -> int:
    return tok.get_vocab()[s]


# ---------------------------------------------------------------- unit pieces


def test_sparsemax_hand_case():
    z = torch.tensor([1.0, 0.5, -1.0])
    # sorted 1, .5, -1: k=2 is the largest k with k*z_k > cumsum_k - 1 (1 > 0.5), tau = (1.5 - 1)/2
    assert torch.allclose(vs.sparsemax(z), torch.tensor([0.75, 0.25, 0.0]), atol=0, rtol=0)
    assert torch.equal(vs.sparsemax(torch.tensor([3.0, 0.0])), torch.tensor([1.0, 0.0]))
    assert torch.equal(vs.sparsemax(torch.tensor([0.0, 0.0])), torch.tensor([0.5, 0.5]))
    batch = torch.tensor([[1.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
    out = vs.sparsemax(batch.T, dim=0).T  # along another dim
    assert torch.allclose(out, torch.tensor([[0.75, 0.25, 0.0], [1 / 3, 1 / 3, 1 / 3]]))
    assert torch.allclose(vs.sparsemax(torch.randn(5, 40)).sum(-1), torch.ones(5))


def test_method_registry_names_every_method_once():
    assert vs.METHODS == ("random", "exact", "fvt", "focus", "omp", "hf-default", "tokdistil") == tuple(vs.PLANNERS)
    with pytest.raises(TypeError):  # read-only: the valid names stay these seven
        vs.PLANNERS["magic"] = vs.PLANNERS["exact"]  # type: ignore[index]


@pytest.mark.parametrize("method", vs.METHODS)
def test_every_planner_makes_each_row_once(toks, method):
    bl, sp = toks["bl"], toks["sp"]
    kw = {
        "focus": {"fasttext_vectors": {"▁house": [1.0, 0.0], "▁the": [0.0, 1.0], "▁hus": [1.0, 0.5]}},
        "omp": {"donor_embed": torch.randn(len(sp), 16, generator=torch.Generator().manual_seed(0)), "omp_k": 2},
        "tokdistil": {"tokdistil_start": "fvt"},
    }.get(method, {})
    plan, head_plan, _ = vs.build_plan(bl, sp, method, old_rows=len(bl), pad_multiple=PAD_MULTIPLE, **kw)
    made = torch.cat([plan.copy_new, plan.combo.rows, plan.mean_rows, plan.random_rows, plan.zero_rows])
    assert sorted(made.tolist()) == list(range(plan.n_rows)) and plan.n_rows == vs.padded_size(len(sp), PAD_MULTIPLE)
    assert head_plan is plan  # no donor head: one plan for both matrices
    assert (len(plan.combo) > 0) == (method in ("fvt", "focus", "omp", "tokdistil"))  # tokdistil: its start's
    assert plan.sampler == ("hf" if method == "hf-default" else "mvn")


def test_package_modules_import_only_lower_ones():
    """No import cycle inside the package: each module imports only modules listed before it."""
    order = [
        "tokens",
        "fasttext",
        "plan",
        "sampling",
        "lexical",
        "focus",
        "omp",
        "hf_default",
        "snippets",
        "tokdistil",
        "methods",
        "apply",
        "surgery",
        "neighbours",
        "details",
        "cli",
        "tokdistil_bench",
        "bench",  # the benchmark runs the whole package (warmstart.vocab_swap), like the command line
        "__main__",
    ]
    pkg = Path(vs.__file__).parent
    assert sorted(p.stem for p in pkg.glob("*.py")) == sorted([*order, "__init__"])
    for i, name in enumerate(order):
        tree = ast.parse((pkg / f"{name}.py").read_text(encoding="utf-8"))
        deps = {
            n.module.rpartition(".")[2]
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("warmstart.vocab_swap.")
        }
        assert deps <= set(order[:i]), (name, deps - set(order[:i]))


def test_normalised_strings_match_across_marker_styles(toks):
    bl, sp = vs.tokenizer_view(toks["bl"]), vs.tokenizer_view(toks["sp"])
    assert bl.kind == "byte_level" and sp.kind == "metaspace"
    assert bl.keys[_id(toks["bl"], "Ġhouse")] == sp.keys[_id(toks["sp"], "▁house")] == b" house"
    assert sp.keys[_id(toks["sp"], "<0x41>")] == b"A"
    assert bl.keys[_id(toks["bl"], "Ã")] == b"\xc3"
    assert sp.byte_ids[0xC3] == _id(toks["sp"], "<0xC3>") and bl.byte_ids[0xC3] == _id(toks["bl"], "Ã")
    assert 0 in bl.special_ids and bl.keys[0] is None
    # FVT segmentation runs the old model without a prefix space or pre-tokenizer
    assert bl.segment(b" hus") == [_id(toks["bl"], t) for t in ["Ġh", "u", "s"]]
    assert sp.segment(b" cat") == [_id(toks["sp"], t) for t in ["▁", "c", "at"]]
    assert sp.segment(b"\xc3") == [_id(toks["sp"], "<0xC3>")]  # not UTF-8: byte tokens


def test_batch_omp_recovers_sparse_combination():
    atoms = torch.eye(8)[:6] * torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0, 1.0])[:, None]
    x = 2 * atoms[1] + 3 * atoms[4]
    for gram in (2 << 30, 0):  # Gram-matrix path and residual path
        idx, coef, err = vs.batch_omp(x[None], atoms, 2, gram_limit_bytes=gram)
        got = dict(zip(idx[0].tolist(), coef[0].tolist()))
        assert set(got) == {1, 4}
        assert got[1] == pytest.approx(2.0, abs=1e-6) and got[4] == pytest.approx(3.0, abs=1e-6)
        assert float(err[0]) < 1e-6


def unigram_tokenizer() -> PreTrainedTokenizerFast:
    """SentencePiece Unigram with byte fallback (what ``sp_unigram`` trains)."""
    pieces = [(s, 0.0) for s in SPECIALS] + [(f"<0x{b:02X}>", -100.0) for b in range(256)]
    pieces += [(c, -5.0) for c in [SP] + [chr(c) for c in range(ord("a"), ord("z") + 1)]]
    pieces += [(SP + "hus", -2.0), ("hus", -3.0), (SP + "h", -3.0), ("et", -3.0), (SP + "house", -2.0)]
    tok = Tokenizer(models.Unigram(pieces, unk_id=3, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SP, prepend_scheme="first", split=True)
    tok.decoder = decoders.Sequence(
        [decoders.ByteFallback(), decoders.Metaspace(replacement=SP, prepend_scheme="first")]
    )
    tok.add_special_tokens(SPECIALS)
    return fast_tokenizer(tok)


def test_unigram_tokenizer_both_ways(toks):
    bl, uni = toks["bl"], unigram_tokenizer()
    view = vs.tokenizer_view(uni)
    assert view.kind == "metaspace" and view.unk_id == 3 and view.byte_ids[0x41] == _id(uni, "<0x41>")
    assert view.segment(b" huset") == [_id(uni, "▁hus"), _id(uni, "et")]  # Viterbi, no prefix added
    assert view.segment("ü".encode()) == [_id(uni, f"<0x{b:02X}>") for b in "ü".encode()]  # byte fallback
    emb = torch.randn(len(uni), 8)
    res = vs.swap_embeddings(emb, None, uni, bl, "fvt", pad_multiple=PAD_MULTIPLE)
    assert torch.equal(res.embed[_id(bl, "Ġhouse")], emb[_id(uni, "▁house")])
    assert torch.equal(res.embed[_id(bl, "Ã")], emb[_id(uni, "<0xC3>")])
    emb = torch.randn(len(bl), 8)
    res = vs.swap_embeddings(emb, None, bl, uni, "fvt", pad_multiple=PAD_MULTIPLE)
    assert torch.equal(res.embed[_id(uni, "▁house")], emb[_id(bl, "Ġhouse")])
    assert torch.allclose(res.embed[_id(uni, "hus")], emb[[_id(bl, t) for t in "hus"]].mean(0), rtol=0, atol=1e-6)


# ---------------------------------------------------------------- exact rows


@pytest.mark.parametrize("method", [m for m in METHOD_PARAMS if m != "random"])
def test_copied_rows_are_bit_equal(world, toks, method):
    """▁house (new) copies Ġhouse (old); <0xC3> copies the byte symbol Ã; head rows too (untied llama)."""
    rep, out = _swap_dir(world, "gpt2", method)
    new = AutoModelForCausalLM.from_pretrained(str(out))
    old = AutoModelForCausalLM.from_pretrained(str(world["gpt2"]))
    bl, sp = toks["bl"], toks["sp"]
    for n, o in [("▁house", "Ġhouse"), ("<0xC3>", "Ã"), ("<0x41>", "A"), ("a", "a")]:
        assert torch.equal(_emb(new)[_id(sp, n)], _emb(old)[_id(bl, o)]), n
    assert rep.aligned >= 256  # every byte token, plus shared pieces
    rep, out = _swap_dir(world, "llama", method)
    new = AutoModelForCausalLM.from_pretrained(str(out))
    old = AutoModelForCausalLM.from_pretrained(str(world["llama"]))
    for n, o in [("Ġhouse", "▁house"), ("Ã", "<0xC3>"), ("A", "<0x41>"), ("at", "at")]:
        assert torch.equal(_emb(new)[_id(bl, n)], _emb(old)[_id(sp, o)]), n
        assert torch.equal(_head(new)[_id(bl, n)], _head(old)[_id(sp, o)]), n


def test_fvt_row_is_mean_of_old_pieces(toks):
    bl, sp = toks["bl"], toks["sp"]
    torch.manual_seed(0)
    emb = torch.randn(len(bl), 8)
    head = torch.randn(len(bl), 8)
    pieces = [_id(bl, t) for t in ["Ġh", "u", "s"]]
    emb[pieces] = torch.tensor([[1.0] * 8, [2.0] * 8, [6.0] * 8]) * torch.arange(1, 9)
    res = vs.swap_embeddings(emb, head, bl, sp, "fvt", pad_multiple=PAD_MULTIPLE)
    hus = _id(sp, "▁hus")
    assert torch.equal(res.embed[hus], emb[pieces].mean(0))
    assert torch.equal(res.embed[hus], 3.0 * torch.arange(1, 9))
    assert torch.allclose(res.head[hus], head[pieces].mean(0), rtol=0, atol=1e-6)
    # ø is two bytes in the byte-level tokenizer: Ã ¸
    o = [_id(bl, B2U[b]) for b in "ø".encode()]
    assert torch.allclose(res.embed[_id(sp, "ø")], emb[o].mean(0), rtol=0, atol=1e-6)
    # a piece used twice counts twice: ▁aaa -> Ġ a a a
    rep = [_id(bl, t) for t in ["Ġ", "a", "a", "a"]]
    assert torch.allclose(res.embed[_id(sp, "▁aaa")], emb[rep].mean(0), rtol=0, atol=1e-6)
    # an exact match copies itself
    assert torch.equal(res.embed[_id(sp, "▁house")], emb[_id(bl, "Ġhouse")])
    assert res.report.decomposed > 0 and res.report.fallback_random == 0


def test_focus_row_is_sparsemax_combination(toks):
    bl, sp = toks["bl"], toks["sp"]
    emb = torch.randn(len(bl), 8, generator=torch.Generator().manual_seed(1))
    vecs = {"▁house": [1.0, 0.0, 0.0], "▁the": [0.0, 1.0, 0.0], "▁hus": [1.0, 0.5, 0.0]}
    res = vs.swap_embeddings(emb, None, bl, sp, "focus", fasttext_vectors=vecs, pad_multiple=PAD_MULTIPLE)
    z = torch.tensor([2 / math.sqrt(5), 1 / math.sqrt(5)])  # cosines of ▁hus with ▁house, ▁the
    tau = (z.sum() - 1) / 2
    w = z - tau
    expected = w[0] * emb[_id(bl, "Ġhouse")] + w[1] * emb[_id(bl, "Ġthe")]
    assert torch.allclose(res.embed[_id(sp, "▁hus")], expected, rtol=0, atol=1e-6)
    assert res.report.decomposed == 1  # only ▁hus has a vector; the others fall back to random
    assert res.report.extra["anchors"] == 2


@needs_gensim
def test_focus_with_gensim_is_reproducible(toks):
    bl, sp = toks["bl"], toks["sp"]
    emb = torch.randn(len(bl), 8, generator=torch.Generator().manual_seed(4))
    a, b = (vs.swap_embeddings(emb, None, bl, sp, "focus", texts=NB_TEXTS, fasttext=FT, seed=5) for _ in range(2))
    assert a.report.decomposed > 0 and torch.equal(a.embed, b.embed)
    # every combined row is a convex combination of overlapping tokens' rows
    c = a.plan.combo
    sums = torch.zeros(len(c)).index_add_(
        0, torch.repeat_interleave(torch.arange(len(c)), c.ptr[1:] - c.ptr[:-1]), c.weights
    )
    assert torch.allclose(sums, torch.ones(len(c)), atol=1e-5) and bool((c.weights > 0).all())
    assert set(c.src.tolist()) <= set(a.plan.copy_old.tolist())


def test_omp_applies_donor_coefficients_to_old_anchors(toks):
    bl, sp = toks["bl"], toks["sp"]
    g = torch.Generator().manual_seed(2)
    emb = torch.randn(len(bl), 8, generator=g)
    donor = torch.randn(len(sp), 256, generator=g)
    a1, a2, t = _id(sp, "▁house"), _id(sp, "▁the"), _id(sp, "▁hus")
    donor[t] = 2 * donor[a1] + 3 * donor[a2]
    res = vs.swap_embeddings(emb, None, bl, sp, "omp", donor_embed=donor, omp_k=2, pad_multiple=PAD_MULTIPLE)
    expected = 2 * emb[_id(bl, "Ġhouse")] + 3 * emb[_id(bl, "Ġthe")]
    assert torch.allclose(res.embed[t], expected, rtol=0, atol=1e-4)
    with pytest.raises(vs.VocabSwapError, match="donor"):
        vs.swap_embeddings(emb, None, bl, sp, "omp")


def test_bf16_rows_copy_exactly_and_keep_dtype(toks):
    bl, sp = toks["bl"], toks["sp"]
    emb = torch.randn(len(bl), 16).to(torch.bfloat16)
    for method in ("exact", "fvt", "random"):
        res = vs.swap_embeddings(emb, emb.clone(), bl, sp, method, pad_multiple=PAD_MULTIPLE)
        assert res.embed.dtype == torch.bfloat16 and res.head.dtype == torch.bfloat16
        if method != "random":
            assert torch.equal(res.embed[_id(sp, "▁house")], emb[_id(bl, "Ġhouse")])


# ---------------------------------------------------------------- random rows


# more rows than dims (Cholesky), covariance from a row subsample, fewer rows than dims (low rank)
@pytest.mark.parametrize("hidden,cov_rows", [(8, None), (8, 60), (512, None)])
def test_random_rows_have_old_mean_and_spread(toks, hidden, cov_rows):
    bl, sp = toks["bl"], toks["sp"]
    g = torch.Generator().manual_seed(3)
    mu = torch.linspace(2.0, 4.0, hidden)
    emb = mu + 0.5 * torch.randn(len(bl), hidden, generator=g)
    res = vs.swap_embeddings(emb, None, bl, sp, "random", pad_multiple=PAD_MULTIPLE, seed=7, cov_rows=cov_rows)
    rows = res.embed[res.plan.random_rows]
    m = rows.shape[0]
    assert m == res.report.fallback_random > 250
    # sample mean of m draws: sd 0.5/sqrt(m) ~ 0.03; 0.25 is ~8 sd, far below the mean's size (>= 2)
    assert (rows.mean(0) - emb.mean(0)).abs().max() < 0.25
    ratio = rows.var(0) / emb.var(0)
    assert 0.6 < float(ratio.mean()) < 1.6
    again = vs.swap_embeddings(emb, None, bl, sp, "random", pad_multiple=PAD_MULTIPLE, seed=7, cov_rows=cov_rows)
    other = vs.swap_embeddings(emb, None, bl, sp, "random", pad_multiple=PAD_MULTIPLE, seed=8, cov_rows=cov_rows)
    assert torch.equal(again.embed, res.embed) and not torch.equal(other.embed, res.embed)


def test_report_counts_add_up(toks):
    bl, sp = toks["bl"], toks["sp"]
    emb = torch.randn(len(bl), 8)
    for method in ("random", "exact", "fvt"):
        r = vs.swap_embeddings(emb, None, bl, sp, method, pad_multiple=PAD_MULTIPLE).report
        total = r.specials_mapped + r.mean_init + r.aligned + r.decomposed + r.fallback_random + r.padded_rows
        assert total == r.padded_vocab == vs.padded_size(len(sp), PAD_MULTIPLE)
        assert r.specials_mapped == 3 and r.mean_init == 2  # <s> </s> <unk> <- <|endoftext|>; <pad> <mask> mean
        assert r.new_vocab == len(sp) and r.old_vocab == len(bl)
    assert vs.swap_embeddings(emb, None, bl, sp, "exact", pad_multiple=1).report.padded_rows == 0


# ---------------------------------------------------------------- models


@pytest.mark.parametrize("scenario", ["gpt2", "llama"])
@pytest.mark.parametrize("method", METHOD_PARAMS)
def test_every_method_reloads_and_generates(world, toks, scenario, method):
    rep, out = _swap_dir(world, scenario, method)
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    saved = json.loads((out / vs.REPORT_NAME).read_text())
    assert saved["method"] == method and saved["padded_vocab"] % PAD_MULTIPLE == 0
    new_tok = toks["sp"] if scenario == "gpt2" else toks["bl"]
    model = AutoModelForCausalLM.from_pretrained(str(out), use_safetensors=True)
    assert model.config.vocab_size == rep.padded_vocab == _emb(model).shape[0] == _head(model).shape[0]
    if scenario == "gpt2":
        assert model.config.tie_word_embeddings
        assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
        assert (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id) == (1, 2, 0)
    else:
        assert not model.config.tie_word_embeddings
        assert model.get_input_embeddings().weight is not model.get_output_embeddings().weight
        assert not torch.equal(_emb(model)[: len(new_tok)], _head(model)[: len(new_tok)])
        assert (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id) == (0, 0, None)
    gc = model.generation_config
    assert gc.eos_token_id == new_tok.eos_token_id
    assert gc.suppress_tokens == list(range(len(new_tok), rep.padded_vocab))
    pad = torch.zeros(rep.padded_vocab - len(new_tok), _emb(model).shape[1])
    assert torch.equal(_emb(model)[len(new_tok) :], pad) and torch.equal(_head(model)[len(new_tok) :], pad)
    ids = new_tok("the house er", return_tensors="pt").input_ids
    gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False)
    assert gen.shape[1] > ids.shape[1] and int(gen.max()) < len(new_tok)
    tot = rep.specials_mapped + rep.mean_init + rep.aligned + rep.decomposed + rep.fallback_random + rep.padded_rows
    assert tot == rep.padded_vocab
    if method in ("fvt", "omp", "focus"):
        assert rep.decomposed > 0


def test_special_tokens_land_where_mapped(world, toks):
    sp = toks["sp"]
    rep, out = _swap_dir(world, "gpt2", "fvt")
    new = AutoModelForCausalLM.from_pretrained(str(out))
    old = AutoModelForCausalLM.from_pretrained(str(world["gpt2"]))
    eot = _emb(old)[0]
    for s in ("<s>", "</s>", "<unk>"):
        assert torch.equal(_emb(new)[_id(sp, s)], eot), s
    mean = _emb(old).to(torch.float64).mean(0).to(torch.float32)
    for s in ("<pad>", "<mask>"):
        assert torch.allclose(_emb(new)[_id(sp, s)], mean, rtol=0, atol=1e-6), s
    assert rep.specials["eos"] == {
        "new_id": 2,
        "new_token": "</s>",
        "old_id": 0,
        "old_token": "<|endoftext|>",
        "init": "copy",
    }
    assert rep.specials["mask"]["init"] == "mean"
    # the other direction: <|endoftext|> (eos=bos=unk) takes the old eos row, head included
    rep, out = _swap_dir(world, "llama", "exact")
    new = AutoModelForCausalLM.from_pretrained(str(out))
    old = AutoModelForCausalLM.from_pretrained(str(world["llama"]))
    assert torch.equal(_emb(new)[0], _emb(old)[_id(sp, "</s>")])
    assert torch.equal(_head(new)[0], _head(old)[_id(sp, "</s>")])
    assert rep.specials_mapped == 1 and rep.mean_init == 0


def test_tied_llama_stays_tied(world, toks, tmp_path):
    sp, bl = toks["sp"], toks["bl"]
    d = tmp_path / "tied"
    _llama(len(sp), 5, tied=True).save_pretrained(str(d))
    sp.save_pretrained(str(d))
    out = tmp_path / "tied-out"
    rep = vs.swap_model_dir(d, world["tok_bl"], out, "fvt")
    assert rep.tied
    m = AutoModelForCausalLM.from_pretrained(str(out))
    assert m.config.tie_word_embeddings
    assert m.get_input_embeddings().weight is m.get_output_embeddings().weight
    assert m.get_input_embeddings().weight.shape[0] == vs.padded_size(len(bl), 64)


def _force_padded_logits(model, n_real: int) -> None:
    """Make every real token's logit -5 and the (zero) padded rows' logit 0: h = e_0 always."""
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = 1.0
        w = model.get_output_embeddings().weight
        w[:n_real, 0] = -5.0
        w[n_real:] = 0.0


def test_padded_rows_are_never_generated(world, toks):
    sp = toks["sp"]
    rep, out = _swap_dir(world, "gpt2", "exact", out_name="out-pad", pad_multiple=128)
    n_real = len(sp)
    padded = set(range(n_real, rep.padded_vocab))
    assert len(padded) > 50
    model = AutoModelForCausalLM.from_pretrained(str(out))
    _force_padded_logits(model, n_real)
    ids = sp("the house", return_tensors="pt").input_ids
    mask = torch.ones_like(ids)

    def run(sample: bool, seed: int, **kw) -> set[int]:
        torch.manual_seed(seed)
        g = model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=sample, eos_token_id=None, **kw)
        return set(g[0, ids.shape[1] :].tolist())

    # control: without the suppression the padded rows (logit 0 > -5) would win
    assert run(False, 0, suppress_tokens=None) <= padded
    assert run(True, 0, suppress_tokens=None, top_k=0) & padded
    assert model.generation_config.suppress_tokens == sorted(padded)
    assert not run(False, 0) & padded
    for seed in range(25):
        assert not run(True, seed, top_k=0, temperature=2.0) & padded, seed


def test_nearest_neighbours_table(world, toks):
    _, out = _swap_dir(world, "gpt2", "exact")
    new = AutoModelForCausalLM.from_pretrained(str(out))
    old = AutoModelForCausalLM.from_pretrained(str(world["gpt2"]))
    df = vs.nearest_neighbours(new, toks["sp"], old, toks["bl"], ["▁house", "hus", _id(toks["sp"], "<0x41>")], k=3)
    assert list(df.columns) == ["token", "new_id", "text", "rank", "old_token", "old_id", "old_text", "cosine"]
    assert len(df) == 9
    top = df[df["rank"] == 1].set_index("token")
    assert top.loc["▁house", "old_token"] == "Ġhouse" and top.loc["▁house", "cosine"] == pytest.approx(1.0, abs=1e-6)
    assert top.loc["<0x41>", "old_token"] == "A"
    with pytest.raises(vs.VocabSwapError, match="not one token"):
        vs.nearest_neighbours(new, toks["sp"], old, toks["bl"], ["the house"])


# ---------------------------------------------------------------- CLI and errors


def _swap_argv(world, method, out, *more) -> list[str]:
    """The command line swapping the world's GPT-2 to its SentencePiece tokenizer with ``method`` into ``out``."""
    model_and_tokenizer = ["--model", str(world["gpt2"]), "--tokenizer", str(world["tok_sp"])]
    return [*model_and_tokenizer, "--method", method, "--out", str(out), *more]


@pytest.mark.parametrize("method", ["fvt", pytest.param("focus", marks=needs_gensim)])
def test_cli_writes_model_tokenizer_and_report(world, capsys, method):
    out = world["root"] / f"cli-{method}"
    rc = vs.main(
        _swap_argv(
            world,
            method,
            out,
            "--seed",
            "3",
            "--pad-multiple",
            "32",
            "--fasttext-texts",
            str(world["texts"]),
            "--fasttext-dim",
            "8",
            "--fasttext-min-count",
            "1",
            "--fasttext-bucket",
            "1000",
            "-q",
        )
    )
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    rep = json.loads((out / "swap_report.json").read_text())
    assert printed["method"] == rep["method"] == method and rep["seed"] == 3
    assert rep["padded_vocab"] % 32 == 0 and rep["decomposed"] > 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "swap_report.json",
            "tokenizer.json",
            "tokenizer_config.json",
        ]
    )
    AutoModelForCausalLM.from_pretrained(str(out))


def test_python_m_runs_the_cli(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["python -m warmstart.vocab_swap", "--help"])
    with pytest.raises(SystemExit) as e:
        runpy.run_module("warmstart.vocab_swap", run_name="__main__", alter_sys=True)
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m warmstart.vocab_swap") and "--fasttext-min-count" in out


def test_errors_are_clear(world, toks, tmp_path, capsys):
    bl, sp = toks["bl"], toks["sp"]
    emb = torch.randn(len(bl), 8)
    with pytest.raises(vs.VocabSwapError) as e:
        vs.swap_embeddings(emb, None, bl, sp, "magic")
    assert all(m in str(e.value) for m in vs.METHODS)
    rc = vs.main(_swap_argv(world, "magic", tmp_path / "x"))
    assert rc == 2 and "random, exact, fvt, focus, omp" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        vs.swap_model_dir(tmp_path / "no-such-model", world["tok_sp"], tmp_path / "o", "exact")
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        vs.swap_model_dir(world["gpt2"], tmp_path / "no-such-tok", tmp_path / "o", "exact")
    bare = tmp_path / "bare"  # a model directory without its tokenizer
    _gpt2(len(bl), 0).save_pretrained(str(bare))
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        vs.swap_model_dir(bare, world["tok_sp"], tmp_path / "o", "exact")
    with pytest.raises(vs.VocabSwapError, match="donor"):
        vs.swap_model_dir(world["gpt2"], world["tok_sp"], tmp_path / "o", "omp")
    with pytest.raises(vs.VocabSwapError, match="texts"):
        vs.swap_model_dir(world["gpt2"], world["tok_sp"], tmp_path / "o", "focus")
    with pytest.raises(vs.VocabSwapError, match="pad_multiple"):
        vs.swap_embeddings(emb, None, bl, sp, "exact", pad_multiple=0)
    with pytest.raises(vs.VocabSwapError, match="rows"):
        vs.swap_embeddings(emb[:10], None, bl, sp, "exact")
    with pytest.raises(vs.VocabSwapError, match="donor"):  # donor with another tokenizer
        vs.swap_model_dir(world["gpt2"], world["tok_sp"], tmp_path / "o", "omp", donor_dir=world["donor_bl"])
    assert not (tmp_path / "o").exists()
