"""Logit distillation (warmstart.train.distil): the KL loss by hand, top-k and padding, and distillation runs of the trainer."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from test_train import SPEC, assert_same_weights, assets, make_cfg, read_log  # noqa: F401  (assets: a fixture)
from warmstart.flops import flops_per_token
from warmstart.model import build_model, load_model, save_model
from warmstart.train.config import TrainConfig
from warmstart.train.distil import benchmark_kd, kd_kl, kd_kl_reference, teacher_flops_per_token
from warmstart.train.loop import Trainer, train


def _softmax(xs: list[float]) -> list[float]:
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def test_kl_of_identical_logits_is_zero_and_gradient_by_hand():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 7, generator=g, requires_grad=True)
    labels = torch.tensor([[1, 2, -100, 3, 4], [5, 6, 7, 8, 9]])
    kl = kd_kl(x, x.detach().clone(), labels, temperature=1.7)
    (2.0 * kl).backward()
    assert float(kl.detach()) == 0.0 and float(x.grad.abs().max()) < 1e-7

    # two positions count (position 1 predicts a -100, the last predicts nothing); T = 2
    s = torch.tensor([[[1.0, 3.0, 3.0], [0.0, 0.0, 0.0], [9.0, 9.0, 9.0], [0.5, -1.0, 2.0]]], requires_grad=True)
    t = torch.tensor([[[2.0, 0.0, 1.0], [4.0, 4.0, 4.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]], requires_grad=True)
    labels = torch.tensor([[0, 1, -100, 2]])
    T = 2.0
    rows = [0, 2]  # positions 0 and 2 (label at 1 and 3)
    p = [_softmax([v / T for v in t[0, r].tolist()]) for r in rows]
    q = [_softmax([v / T for v in s[0, r].tolist()]) for r in rows]
    kl = kd_kl(s, t, labels, temperature=T)
    assert float(kl.detach()) == pytest.approx((_kl(p[0], q[0]) + _kl(p[1], q[1])) / 2, abs=1e-7)
    (T**2 * kl).backward()  # the trainer's term: d/ds of T^2 KL = T (q - p) / N
    want = torch.zeros(1, 4, 3)
    for i, r in enumerate(rows):
        want[0, r] = torch.tensor([T * (b - a) / 2 for a, b in zip(p[i], q[i])])
    torch.testing.assert_close(s.grad, want, rtol=0, atol=1e-7)
    assert t.grad is None  # the teacher gets no gradient


def test_top_k_and_padding_as_documented():
    labels = torch.tensor([[0, 1]])  # one position
    t = torch.tensor([[[3.0, 1.0, 2.0, 0.0], [0.0] * 4]])
    s = torch.tensor([[[0.5, 0.2, -0.3, 1.0], [0.0] * 4]])
    T = 1.5
    # top-2 of the teacher: tokens 0 and 2, renormalised; the student's full-vocabulary log-softmax at 0 and 2
    p = _softmax([3.0 / T, 2.0 / T])
    q_full = _softmax([v / T for v in (0.5, 0.2, -0.3, 1.0)])
    want = p[0] * math.log(p[0] / q_full[0]) + p[1] * math.log(p[1] / q_full[2])
    assert float(kd_kl(s, t, labels, T, top_k=2)) == pytest.approx(want, abs=1e-6)
    assert float(kd_kl(s, t, labels, T, top_k=4)) == float(kd_kl(s, t, labels, T))  # k >= V: the full KL
    # zero only when the student puts the renormalised top-k there and nothing elsewhere
    s_match = torch.tensor([[[3.0, -1e4, 2.0, -1e4], [0.0] * 4]])
    assert float(kd_kl(s_match, t, labels, T, top_k=2)) == pytest.approx(0.0, abs=1e-6)
    assert float(kd_kl(t, t, labels, T, top_k=2)) > 0.01  # the teacher itself leaks mass outside its top-2

    # padding: real vocabulary 4; the teacher's padding row (a huge logit) is dropped, the student's counts
    t_pad = torch.cat([t, torch.full((1, 2, 1), 100.0)], -1)  # teacher vocab 5
    s_pad = torch.cat([t, torch.full((1, 2, 2), -1e4)], -1)  # student vocab 6, no mass on its padding
    assert float(kd_kl(s_pad, t_pad, labels, T, vocab=4)) == pytest.approx(0.0, abs=1e-6)
    s_leak = torch.cat([t, torch.zeros(1, 2, 2)], -1)  # padding logits 0: KL = log(Z_all / Z_real)
    z_real = sum(math.exp(v / T) for v in (3.0, 1.0, 2.0, 0.0))
    assert float(kd_kl(s_leak, t_pad, labels, T, vocab=4)) == pytest.approx(math.log((z_real + 2) / z_real), abs=1e-6)


def _teacher(assets, path, seed=1, sharpen=30.0, tokenizer=None):  # noqa: F811
    """A tiny random Llama whose LM head is scaled up (peaked distributions, so the KL is far from 0)."""
    from transformers import AutoTokenizer

    m = build_model("llama", vocab_size=300, **dict(SPEC, seed=seed))
    with torch.no_grad():
        m.lm_head.weight.mul_(sharpen)
    save_model(m, tokenizer or AutoTokenizer.from_pretrained(assets / "tok"), path)
    return path


KD = dict(kd_temperature=2.0, kd_ce_share=0.25, lr_schedule="constant", lr=3e-3)


def test_distillation_resume_is_bit_identical(assets, tmp_path):  # noqa: F811
    teacher = str(_teacher(assets, tmp_path / "teacher"))
    kw = dict(KD, teacher_path=teacher, checkpoint_every=3, keep_last=5)
    tr = Trainer(TrainConfig(**make_cfg(assets, tmp_path / "ref", steps=6, **kw)))
    tr.fit()
    train(make_cfg(assets, tmp_path / "res", steps=3, **kw))
    train(make_cfg(assets, tmp_path / "res", steps=6, **kw), resume=True)
    assert_same_weights(tmp_path / "ref/final", tmp_path / "res/final")
    keys = ("step", "loss", "ce_loss", "kd_loss", "grad_norm", "data_state")
    ref, res = read_log(tmp_path / "ref"), read_log(tmp_path / "res")
    assert [[r[k] for k in keys] for r in res] == [[r[k] for k in keys] for r in ref]
    # the objective: loss = 0.75 * T^2 * KL + 0.25 * CE
    for r in ref:
        assert r["loss"] == pytest.approx(0.75 * 4 * r["kd_loss"] + 0.25 * r["ce_loss"], rel=1e-5)
    # the teacher: frozen, in eval mode, untouched, and in no checkpoint
    assert not tr.teacher.training and not any(p.requires_grad for p in tr.teacher.parameters())
    on_disk = load_model(teacher).state_dict()
    assert all(torch.equal(v, on_disk[k]) for k, v in tr.teacher.state_dict().items())
    ckpt = tmp_path / "ref/checkpoints/step0000006"
    assert set(load_file(ckpt / "model.safetensors")) == set(build_model(vocab_size=300, **SPEC).state_dict())
    plain = train(make_cfg(assets, tmp_path / "plain", steps=1, warmup_steps=0))
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(p.name for p in plain.last_checkpoint.iterdir())
    # FLOPs: the teacher's forward counted apart, in the trainer state and in mfu_with_teacher
    state = json.loads((ckpt / "trainer_state.json").read_text())
    fs = flops_per_token(tr.unwrapped.config, 32)
    assert state["teacher_flops_per_token"] == teacher_flops_per_token(tr.teacher.config, 32) == fs // 3
    assert all(r["mfu_with_teacher"] == pytest.approx(r["mfu"] * (fs + fs // 3) / fs, rel=1e-12) for r in ref)
    assert "teacher_flops_per_token" not in json.loads((plain.last_checkpoint / "trainer_state.json").read_text())


def test_distillation_moves_the_student_towards_the_teacher(assets, tmp_path):  # noqa: F811
    teacher = str(_teacher(assets, tmp_path / "teacher"))
    for top_k in (None, 20):
        out = tmp_path / f"kd{top_k}"
        train(
            make_cfg(
                assets,
                out,
                steps=12,
                teacher_path=teacher,
                kd_top_k=top_k,
                lr=1e-2,
                lr_schedule="constant",
                warmup_steps=0,
                tensorboard=True,
            )
        )
        log = read_log(out)
        assert log[-1]["kd_loss"] < 0.7 * log[0]["kd_loss"], [r["kd_loss"] for r in log]
        assert log[0]["loss"] == log[0]["kd_loss"]  # kd_ce_share 0, T 1
        assert list((out / "tb").iterdir())


def test_teacher_errors(assets, tmp_path):  # noqa: F811
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(assets / "tok")
    tok.add_tokens(["zzz_extra"])
    other = _teacher(assets, tmp_path / "other_tok", tokenizer=tok)
    with pytest.raises(ValueError, match="teacher's tokenizer") as e:
        Trainer(TrainConfig(**make_cfg(assets, tmp_path / "x", teacher_path=str(other))))
    assert str(other) in str(e.value) and str(assets / "tok") in str(e.value)
    bare = tmp_path / "no_tok"
    build_model(vocab_size=300, **SPEC).save_pretrained(bare)
    with pytest.raises(ValueError, match="no tokenizer"):
        Trainer(TrainConfig(**make_cfg(assets, tmp_path / "y", teacher_path=str(bare))))
    with pytest.raises(ValueError, match="masked_share and teacher_path cannot be combined"):
        TrainConfig(**make_cfg(assets, tmp_path, teacher_path="t", masked_share=0.2))
    with pytest.raises(ValueError, match="kd_top_k need teacher_path"):
        TrainConfig(**make_cfg(assets, tmp_path, kd_top_k=5))
    for kw in ({}, {"teacher_path": "t", "kd_top_k": 5, "kd_temperature": 2.0}):  # a dumped config validates again
        cfg = TrainConfig(**make_cfg(assets, tmp_path, **kw))
        assert TrainConfig.model_validate(cfg.model_dump()) == cfg == TrainConfig.model_validate_json(cfg.to_json())
    with pytest.raises(ValueError, match="teacher_path cannot be combined with fused_kernels"):
        TrainConfig(**make_cfg(assets, tmp_path, teacher_path="t", fused_kernels=True))
    with pytest.raises(ValueError, match="kd_temperature"):
        TrainConfig(**make_cfg(assets, tmp_path, teacher_path="t", kd_temperature=0))


@pytest.mark.parametrize("top_k,vocab", [(None, None), (3, None), (None, 6), (2, 6)])
def test_gradient_by_hand_equals_autograd_through_the_formula(top_k, vocab):
    """kd_kl's hand-written backward (its autograd.Function) against autograd through the module doc's formula."""
    g = torch.Generator().manual_seed(3)
    s = (3 * torch.randn(2, 6, 8, generator=g, dtype=torch.float64)).requires_grad_()
    t = 3 * torch.randn(2, 6, 7, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 6, (2, 6), generator=g)
    labels[0, 2] = -100
    T = 1.3
    kl = kd_kl(s, t, labels, T, top_k=top_k, vocab=vocab)
    (grad,) = torch.autograd.grad(2.5 * kl, s)
    x = s.detach().clone().requires_grad_()
    want = kd_kl_reference(x, t, labels, T, top_k=top_k, vocab=vocab)
    (want_grad,) = torch.autograd.grad(2.5 * want, x)
    assert float(kl) == pytest.approx(float(want), abs=1e-6)  # kd_kl works in fp32
    assert grad.dtype == torch.float64
    torch.testing.assert_close(grad, want_grad, rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="vocab 9 exceeds"):
        kd_kl(s, t, labels, T, vocab=9)


def test_kd_benchmark_record_on_a_small_shape():
    rec = benchmark_kd(rows=64, vocab=256, pad=8, rounds=2, top_k=16)
    assert (
        rec["rounds"] == 2 and rec["top_k"] == 16 and rec["speedup_min"] <= rec["speedup_median"] <= rec["speedup_max"]
    )
    assert rec["max_abs_grad_diff"] < 1e-7  # the two backward passes agree
