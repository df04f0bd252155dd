"""``hf-default``: the rows transformers' ``resize_token_embeddings`` adds, exact matches copied.

A tiny Llama on an "English" byte-level BPE is swapped to a "Norwegian" one; the reference is the same model
resized by transformers itself under the same seed: the rows it adds must be the rest rows of the swap, bit
for bit, in new-id order, for the input matrix and the untied head, with and without mean resizing.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import TINY_LLAMA, WORDS_EN, WORDS_NB, byte_bpe, model_for
from warmstart import vocab_swap as vs
from warmstart.vocab_swap.hf_default import resize_rows

EN = [" ".join(WORDS_EN[i:] + WORDS_EN[:i]) for i in range(len(WORDS_EN))]
NB = [" ".join(WORDS_NB[i:] + WORDS_NB[:i]) for i in range(len(WORDS_NB))]


@pytest.fixture(scope="module")
def toks():
    return byte_bpe(EN, 300), byte_bpe(NB, 300)


def _model(tok, seed: int, **kw):
    return model_for(tok, arch="llama", max_pos=64, seed=seed, **TINY_LLAMA, **kw).eval()


def _rest(res: vs.SwapResult) -> list[int]:
    return res.plan.random_rows.tolist()


def _resized(model, n_new: int, seed: int, mean_resizing: bool = True):
    """The rows transformers adds to ``model`` (a copy) when it grows by ``n_new`` rows after manual_seed(seed)."""
    ref = copy.deepcopy(model)
    rows = ref.get_input_embeddings().weight.shape[0]
    torch.manual_seed(seed)
    ref.resize_token_embeddings(rows + n_new, mean_resizing=mean_resizing)
    emb = ref.get_input_embeddings().weight.detach()[rows:]
    head = ref.get_output_embeddings().weight.detach()[rows:]
    return emb, head


@pytest.mark.parametrize("mean_resizing", [True, False])
def test_rows_are_what_resize_token_embeddings_adds(toks, mean_resizing):
    old_tok, new_tok = toks
    model = _model(old_tok, 0)
    old_e = model.get_input_embeddings().weight.detach().clone()
    old_h = model.get_output_embeddings().weight.detach().clone()
    swapped = copy.deepcopy(model)
    state = torch.random.get_rng_state()
    rep = vs.swap_model(swapped, old_tok, new_tok, "hf-default", seed=11, hf_mean_resizing=mean_resizing)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's generator is left alone
    res = vs.swap_embeddings(old_e, old_h, old_tok, new_tok, "hf-default", seed=11, hf_mean_resizing=mean_resizing)
    rest = _rest(res)
    assert len(rest) == rep.fallback_random > 20 and rep.decomposed == 0
    ref_e, ref_h = _resized(model, len(rest), 11, mean_resizing)
    new_e = swapped.get_input_embeddings().weight.detach()
    new_h = swapped.get_output_embeddings().weight.detach()
    assert torch.equal(new_e[rest], ref_e) and torch.equal(new_h[rest], ref_h)
    assert torch.equal(res.embed, new_e) and torch.equal(res.head, new_h)  # tensors or model: the same rows
    # exact matches copied bit for bit, as `exact` does
    exact = vs.swap_embeddings(old_e, old_h, old_tok, new_tok, "exact", seed=11)
    copied = exact.plan.copy_new
    assert rep.aligned == exact.report.aligned > 20
    assert torch.equal(new_e[copied], old_e[exact.plan.copy_old]) and torch.equal(
        new_h[copied], old_h[exact.plan.copy_old]
    )
    assert torch.equal(new_e[exact.plan.zero_rows], torch.zeros(len(exact.plan.zero_rows), new_e.shape[1]))
    if mean_resizing:  # the old mean plus noise of 1e-9 of the covariance: ~3e-5 standard deviations
        dev = (ref_e - old_e.mean(0)).abs().max() / old_e.std(0).max()
        assert 0 < float(dev) < 1e-3
        assert rep.extra["hf"] == {
            "transformers": rep.extra["hf"]["transformers"],
            "mean_resizing": True,
            "covariance_scale": 1e-9,
            "initializer_range": None,
            "rows": len(rest),
        }
    else:  # N(0, initializer_range): the model's own initialisation
        assert abs(float(ref_e.std()) - model.config.initializer_range) < 0.003
        assert rep.extra["hf"]["initializer_range"] == model.config.initializer_range
    # the same seed gives the same rows, another seed others
    again = vs.swap_embeddings(old_e, old_h, old_tok, new_tok, "hf-default", seed=11, hf_mean_resizing=mean_resizing)
    other = vs.swap_embeddings(old_e, old_h, old_tok, new_tok, "hf-default", seed=12, hf_mean_resizing=mean_resizing)
    assert torch.equal(again.embed, res.embed) and not torch.equal(other.embed[rest], res.embed[rest])


def test_tied_model_rows_and_the_rank_deficient_mean(toks):
    old_tok, new_tok = toks
    model = _model(old_tok, 1, tie_embeddings=True)
    swapped = copy.deepcopy(model)
    rep = vs.swap_model(swapped, old_tok, new_tok, "hf-default", seed=3)
    rest = _rest(vs.swap_embeddings(model.get_input_embeddings().weight, None, old_tok, new_tok, "hf-default"))
    ref_e, _ = _resized(model, len(rest), 3)
    emb = swapped.get_input_embeddings().weight
    assert rep.tied and emb is swapped.get_output_embeddings().weight
    assert torch.equal(emb.detach()[rest], ref_e)
    # fewer old rows than dimensions: 1e-9 x covariance is not positive definite, every added row is the mean
    old = torch.randn(20, 64, generator=torch.Generator().manual_seed(0))
    e, h, b = resize_rows(old, old.clone(), torch.randn(20), 5, seed=0)
    assert torch.equal(e, old.mean(0).expand(5, 64)) and torch.equal(h, e)
    assert b.shape == (5,) and e.dtype == old.dtype


def test_cli_records_the_transformers_call(toks, tmp_path, capsys):
    old_tok, new_tok = toks
    _model(old_tok, 2).save_pretrained(tmp_path / "m")
    old_tok.save_pretrained(tmp_path / "m")
    new_tok.save_pretrained(tmp_path / "t")
    argv = ["--model", str(tmp_path / "m"), "--tokenizer", str(tmp_path / "t"), "--method", "hf-default"]
    assert vs.main([*argv, "--out", str(tmp_path / "o"), "--no-hf-mean-resizing", "-q"]) == 0
    rep = json.loads((tmp_path / "o" / vs.REPORT_NAME).read_text())
    assert rep["method"] == "hf-default" and rep["extra"]["hf"]["mean_resizing"] is False
    assert json.loads(capsys.readouterr().out)["fallback_random"] == rep["extra"]["hf"]["rows"]
    AutoModelForCausalLM.from_pretrained(tmp_path / "o")
