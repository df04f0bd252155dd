"""``tokdistil``: Token Distillation on a hand-built tiny Llama, exact expectations.

The old tokenizer is a byte-level BPE on "English", the new one on "Norwegian"; the Norwegian words are new
tokens whose old pieces :meth:`TokenizerView.segment` tells us. With every attention output projection zeroed a
position's hidden state depends on its own input row only, so the distilled row of a token has a known answer:
the hidden states of its old LAST piece.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from conftest import TINY_LLAMA, WORDS_EN, WORDS_NB, byte_bpe, model_for
from warmstart import vocab_swap as vs
from warmstart.vocab_swap.snippets import _merge, collect_snippets
from warmstart.vocab_swap.tokdistil import Frozen

EN = [" ".join(WORDS_EN[i:] + WORDS_EN[:i]) for i in range(len(WORDS_EN))]
NB = [" ".join(WORDS_NB[i:] + WORDS_NB[:i]) for i in range(len(WORDS_NB))]
FAST = dict(start="fvt", snippets=4, snippet_len=8, steps=4, lr=0.01)  # lr: this random model's row scale


@pytest.fixture(scope="module")
def toks():
    return byte_bpe(EN, 300), byte_bpe(NB, 300)


def _model(tok, seed: int = 0, **kw):
    return model_for(tok, arch="llama", max_pos=64, seed=seed, **TINY_LLAMA, **kw).eval()


def _swap(model, toks, texts=NB, seed: int = 0, **opts):
    """(swapped copy of ``model``, report) by tokdistil with ``opts`` over FAST."""
    m = copy.deepcopy(model)
    rep = vs.swap_model(
        m, *toks, "tokdistil", texts=texts, tokdistil=vs.TokDistilOptions(**{**FAST, **opts}), seed=seed
    )
    return m, rep


def _rows(m):
    return m.get_input_embeddings().weight.detach(), m.get_output_embeddings().weight.detach()


def _start(model, toks):
    """The fvt swap tokdistil starts from (SwapResult on the model's tensors)."""
    e, h = _rows(model)
    return vs.swap_embeddings(e, h, *toks, "fvt")


def _split(toks, start, texts):
    """The new tokens tokdistil works on, split into those whose old pieces occur in ``texts`` and the rest."""
    old_tok, new_tok = toks
    old, new = vs.tokenizer_view(old_tok), vs.tokenizer_view(new_tok)
    seqs = [old_tok(t, add_special_tokens=False)["input_ids"] for t in texts]

    def occurs(p):
        return any(s[i : i + len(p)] == p for s in seqs for i in range(len(s)))

    rest = sorted(start.plan.combo.rows.tolist() + start.plan.random_rows.tolist())
    have = [t for t in rest if occurs(old.segment(new.keys[t]))]
    return have, [t for t in rest if t not in have]


# ---------------------------------------------------------------- pieces


def test_merge_aligns_student_and_teacher_positions():
    student, t_pos, label, merged = _merge(np.array([5, 1, 2, 7, 1, 2]), [1, 2])
    assert student == [5, -1, 7, -1] and merged == [1, 3]
    assert t_pos == [0, 2, 3, 5]  # the merged token against the teacher's last piece
    assert label == [1, -1, 0, 1, -1, -1]  # predicts the pattern / inside it / not / nothing after the window


def test_snippets_are_windows_around_occurrences_kept_by_reservoir():
    ids = {"a": [9, 1, 2, 3, 1, 2, 9, 9], "b": [1, 2]}

    def tok(batch, add_special_tokens):
        assert add_special_tokens is False
        return {"input_ids": [ids[t] for t in batch]}

    pieces = {100: [1, 2], 101: [3], 102: [4, 5]}
    s = collect_snippets(iter(["a", "b"]), tok, pieces, snippets=3, snippet_len=4, seed=0)
    assert s.texts == 2 and s.old_tokens == 10
    assert s.occurrences == {100: 3, 101: 1} and 102 not in s.windows
    assert [w.tolist() for w in s.windows[100]] == [[9, 1, 2, 3], [3, 1, 2, 9], [1, 2]]
    assert [w.tolist() for w in s.windows[101]] == [[2, 3, 1, 2]]
    one = collect_snippets(["a", "b"], tok, pieces, snippets=1, snippet_len=4, seed=0)
    assert one.occurrences[100] == 3 and len(one.windows[100]) == 1  # memory: at most `snippets` per token
    assert one.windows[100][0].tolist() in ([9, 1, 2, 3], [3, 1, 2, 9], [1, 2])


def test_early_layers_stop_early_and_match_output_hidden_states(toks):
    model = _model(toks[0])
    x = torch.randn(3, 7, TINY_LLAMA["hidden"], generator=torch.Generator().manual_seed(0))
    full = model.base_model(inputs_embeds=x, output_hidden_states=True).hidden_states
    frozen = Frozen(model)
    assert frozen.blocks is model.model.layers and frozen.n_layers == 2
    calls = []
    hook = model.model.layers[1].register_forward_hook(lambda *a: calls.append(1))
    (h1,) = frozen(x, [1])
    hook.remove()
    assert torch.equal(h1, full[1]) and calls == []  # layer 2 never ran
    h1, h2 = frozen(x, [1, 2])
    assert torch.equal(h1, full[1]) and torch.equal(h2, full[2])  # 2: the last, after the final norm


# ---------------------------------------------------------------- the method


def test_distilled_row_recovers_the_hidden_states_of_the_old_pieces(toks):
    old_tok, new_tok = toks
    model = _model(old_tok, 1)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()  # no mixing: a position sees only its own row
    m, rep = _swap(model, toks, layers=[-1], steps=100, lr=0.03)
    td = rep.extra["tokdistil"]
    assert td["distilled"] > 10 and td["monotone"] and td["objective"][-1] < 1e-3 * td["objective"][0]
    old, new = vs.tokenizer_view(old_tok), vs.tokenizer_view(new_tok)
    start = _start(model, toks)
    distilled, _ = _split(toks, start, NB)
    assert len(distilled) == td["distilled"]
    old_e, new_e = _rows(model)[0], _rows(m)[0]
    last = torch.stack([old_e[old.segment(new.keys[t])[-1]] for t in distilled])

    def hidden(rows):
        return model.base_model(inputs_embeds=rows[:, None], output_hidden_states=True).hidden_states[-1][:, 0]

    with torch.no_grad():
        want, got, fvt = hidden(last), hidden(new_e[distilled]), hidden(start.embed[distilled])
    err, err0 = (got - want).norm(dim=-1), (fvt - want).norm(dim=-1)
    assert float(err.max()) < 0.02 * float(want.norm(dim=-1).min())  # the hidden states match
    off = err0 > 0  # ... where fvt's mean of the pieces did not (``aa`` = a + a: the mean is the answer)
    assert int(off.sum()) >= len(distilled) - 1 and bool((err[off] < 0.05 * err0[off]).all())


def test_exact_rows_untouched_and_only_distilled_rows_move(toks):
    model = _model(toks[0], 2)
    m, rep = _swap(model, toks)
    start = _start(model, toks)
    e, h = _rows(m)
    old_e, old_h = _rows(model)
    p = start.plan
    assert torch.equal(e[p.copy_new], old_e[p.copy_old]) and torch.equal(h[p.copy_new], old_h[p.copy_old])
    assert torch.equal(h, start.head)  # output: start keeps the heuristic's head rows, bit for bit
    moved = (e != start.embed).any(1).nonzero()[:, 0].tolist()
    td = rep.extra["tokdistil"]
    assert 0 < len(moved) <= td["distilled"] and set(moved) <= set(p.combo.rows.tolist())
    assert td["tokens"] == rep.decomposed + rep.fallback_random == td["distilled"] + td["without_snippet"]
    assert rep.method == "tokdistil" and rep.extra["start"] == "fvt" and td["output_rows"] == "start"
    assert td["monotone"] and td["objective_kept"] <= td["objective"][-1] < td["objective"][0]
    assert td["flops_per_token"] > 0 and td["snippets_used"] <= 4 * td["distilled"]


def test_same_rows_twice_and_whatever_the_batch(toks):
    model = _model(toks[0], 3)
    a, ra = _swap(model, toks)
    b, rb = _swap(model, toks)
    assert (
        torch.equal(_rows(a)[0], _rows(b)[0])
        and ra.extra["tokdistil"]["objective"] == rb.extra["tokdistil"]["objective"]
    )
    c, rc = _swap(model, toks, batch_tokens=1)  # each token alone: its loss depends on its own row only
    assert np.allclose(rc.extra["tokdistil"]["objective"], ra.extra["tokdistil"]["objective"], rtol=1e-4, atol=0)
    assert torch.allclose(_rows(c)[0], _rows(a)[0], rtol=0, atol=1e-4)


def test_tokens_without_snippet_keep_their_start_row_and_are_counted(toks):
    model = _model(toks[0], 4)
    texts = NB[:1]
    m, rep = _swap(model, toks, texts=(t for t in texts))  # a one-shot stream
    start = _start(model, toks)
    have, without = _split(toks, start, texts)
    td = rep.extra["tokdistil"]
    assert td["without_snippet"] == len(without) > 5 and td["distilled"] == len(have) > 5
    assert torch.equal(_rows(m)[0][without], start.embed[without])
    assert rep.extra["tokdistil"]["texts"] == 1


def test_ce_output_learns_head_rows_of_distilled_tokens_only(toks):
    model = _model(toks[0], 5)
    m, rep = _swap(model, toks, output="ce")
    start = _start(model, toks)
    td = rep.extra["tokdistil"]
    h = _rows(m)[1]
    moved = (h != start.head).any(1).nonzero()[:, 0].tolist()
    assert td["output_rows"] == "ce" and 0 < len(moved) <= td["distilled"]
    assert set(moved) <= set(start.plan.combo.rows.tolist())
    assert td["head_objective_kept"] <= td["head_objective"][-1] < td["head_objective"][0]
    tied = _model(toks[0], 5, tie_embeddings=True)
    t, rt = _swap(tied, toks, output="ce")
    assert rt.tied and rt.extra["tokdistil"]["output_rows"] == "tied"
    assert t.get_input_embeddings().weight is t.get_output_embeddings().weight


# ---------------------------------------------------------------- errors, before any work


def _unread():
    raise AssertionError("the texts were read before the options were checked")
    yield ""  # pragma: no cover


@pytest.mark.parametrize("layers", [[3], [-3], [1, 5]])
def test_a_layer_outside_the_model_fails_before_any_work(toks, tmp_path, layers):
    model = _model(toks[0])
    before = _rows(model)[0].clone()
    opts = vs.TokDistilOptions(**{**FAST, "layers": layers})
    with pytest.raises(vs.VocabSwapError, match=r"outside the model: it has 2 layers, so a layer is one of 1\.\.2"):
        vs.swap_model(model, *toks, "tokdistil", texts=_unread(), tokdistil=opts)
    assert torch.equal(_rows(model)[0], before)
    model.save_pretrained(tmp_path / "m")
    toks[0].save_pretrained(tmp_path / "m")
    toks[1].save_pretrained(tmp_path / "t")
    with pytest.raises(vs.VocabSwapError, match="outside the model"):
        vs.swap_model_dir(tmp_path / "m", tmp_path / "t", tmp_path / "o", "tokdistil", texts=_unread(), tokdistil=opts)
    assert not (tmp_path / "o").exists()
    with pytest.raises(vs.VocabSwapError, match="layer 0 is the input|0 is the input"):
        vs.TokDistilOptions(layers=[0])


def test_other_bad_inputs_are_named(toks, tmp_path, capsys):
    model = _model(toks[0])
    for start in ("omp", "magic"):
        with pytest.raises(vs.VocabSwapError, match=f"start method '{start}' is not available: .*fvt, focus"):
            vs.TokDistilOptions(start=start)
        with pytest.raises(vs.VocabSwapError, match="not available"):
            vs.swap_model(model, *toks, "tokdistil", texts=_unread(), tokdistil={"start": start})
        with pytest.raises(vs.VocabSwapError, match="not available"):
            vs.build_plan(*toks, "tokdistil", old_rows=len(toks[0]), tokdistil_start=start)
    with pytest.raises(vs.VocabSwapError, match="needs target texts"):
        vs.swap_model(model, *toks, "tokdistil", tokdistil=vs.TokDistilOptions(**FAST))
    e, h = _rows(model)
    with pytest.raises(vs.VocabSwapError, match="swap_model"):
        vs.swap_embeddings(e, h, *toks, "tokdistil")
    # the command line: a clean run, then the same errors as exit code 2 with the message
    model.save_pretrained(tmp_path / "m")
    toks[0].save_pretrained(tmp_path / "m")
    toks[1].save_pretrained(tmp_path / "t")
    (tmp_path / "nb.txt").write_text("\n".join(NB) + "\n", encoding="utf-8")
    argv = ["--model", str(tmp_path / "m"), "--tokenizer", str(tmp_path / "t"), "--method", "tokdistil"]
    argv += ["--texts", str(tmp_path / "nb.txt"), "--tokdistil-start", "fvt", "--tokdistil-steps", "2", "-q"]
    assert vs.main([*argv, "--out", str(tmp_path / "o")]) == 0
    rep = json.loads((tmp_path / "o" / vs.REPORT_NAME).read_text())
    assert rep["method"] == "tokdistil" and rep["extra"]["tokdistil"]["steps"] == 2
    assert json.loads(capsys.readouterr().out)["method"] == "tokdistil"
    assert vs.main([*argv, "--out", str(tmp_path / "o2"), "--tokdistil-layers", "7"]) == 2
    assert "layer 7 is outside the model" in capsys.readouterr().err and not (tmp_path / "o2").exists()


def test_bench_projects_the_flops_it_counted(toks, tmp_path):
    """At the depth it ran, the full-model projection is the FLOPs it counted; GPU time is FLOPs over the stated
    peak (and over the assumed MFU)."""
    from argparse import Namespace

    from warmstart.vocab_swap.tokdistil_bench import tokdistil_worker

    (tmp_path / "focus_texts.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in NB), encoding="utf-8")
    old_tok, new_tok = toks
    g = torch.Generator().manual_seed(0)
    emb, head = torch.randn(len(old_tok), 32, generator=g), torch.randn(len(old_tok), 32, generator=g)
    args = Namespace(
        **dict(hidden=32, intermediate=64, heads=4, kv_heads=2, seed=0, prepared=str(tmp_path)),
        **dict(tokdistil_tokens=5, tokdistil_model_layers=2, tokdistil_full_layers=2, tokdistil_target_layer=2),
        tokdistil_mfu=0.5,
        tokdistil_lr=0.01,
    )
    r = tokdistil_worker(args, old_tok, new_tok, emb, head)
    pr, gpu = r["projection"], r["projection"]["gpu_seconds_per_token"]
    assert r["tokens_asked"] == r["distilled"] + r["without_snippet"] == 5 and r["distilled"] > 0
    assert pr["flops_per_token"] == pytest.approx(r["flops_per_token"], rel=1e-6)
    assert pr["gpu_peak_flops"] == 989e12 and gpu["at_peak"] == pr["flops_per_token"] / 989e12
    assert gpu["at_mfu_0.5"] == pytest.approx(2 * gpu["at_peak"])
    assert pr["gpu_hours_131072_tokens"]["at_peak"] == pytest.approx(gpu["at_peak"] * 131072 / 3600)
    assert r["cpu_seconds_per_token"] > 0 and len(r["objective"]) == r["options"]["steps"] + 1
