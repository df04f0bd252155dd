"""Instability signals (warmstart.train.signals), z-loss and the qk-norm architectures, on hand-built models and tiny runs."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from test_train import SPEC, assets, make_cfg, read_log  # noqa: F401  (assets: a fixture)
from warmstart.model import build_model
from warmstart.train.config import OPTIONAL_LOG_FIELDS, SIGNAL_FIELDS, TrainConfig
from warmstart.train.loop import train
from warmstart.train.objectives import Objective
from warmstart.train.signals import Signals, label_positions, log_partition, max_attention_logit, probe_mask

# ---------------------------------------------------------------- a hand-built attention
#
# hidden 4, heads 2 sharing one KV head, head_dim 2 (so RoPE has the one frequency 1: position p rotates
# q and k by p radians). Every token is token 0 with embedding [1, 1, 1, 1], so every position has the
# same pre-RoPE q and k: q_h = x0 * r_h (cos t_h, sin t_h), k = x0 * kappa (1, 0), with x0 the RMS-norm
# of the all-ones vector, (1 + eps)^-1/2 (1 for OLMo 2, which has no pre-norm). After RoPE, the logit of
# query i and key j = i - D is |q_h| |k| cos(0 - t_h - D) / sqrt(2). Head 0 has t = -2: its logits peak
# at D = 2 (not at D = 0, so RoPE's direction matters); head 1 has t = +1 (peak at D = 0; rows of 4
# tokens keep D <= 3, where cos(-1 - D) does not come back up).
R, THETA, KAPPA, T = (3.0, 4.0), (-2.0, 1.0), 2.0, 4
QN, KN = 1.5, 0.5  # q_norm / k_norm weights (qwen3, olmo2)


def _hand_model(arch: str, layers: int = 1):
    m = build_model(arch, vocab_size=16, hidden=4, layers=layers, heads=2, kv_heads=1, intermediate=8, max_pos=16)
    a = m.model.layers[0].self_attn
    with torch.no_grad():
        m.model.embed_tokens.weight[0] = 1.0
        a.q_proj.weight.zero_()
        a.k_proj.weight.zero_()
        a.q_proj.weight[:, 0] = torch.tensor(
            [R[0] * math.cos(THETA[0]), R[0] * math.sin(THETA[0]), R[1] * math.cos(THETA[1]), R[1] * math.sin(THETA[1])]
        )
        a.k_proj.weight[:, 0] = torch.tensor([KAPPA, 0.0])
        if hasattr(a, "q_norm"):
            a.q_norm.weight.fill_(QN)
            a.k_norm.weight.fill_(KN)
    return m.eval()


def _expected_max(arch: str, eps: float) -> float:
    """max over heads h and offsets D = 0..T-1 of |q_h| |k| cos(-t_h - D) / sqrt(2), the norms by hand."""
    x0 = 1.0 if arch == "olmo2" else (1 + eps) ** -0.5
    q = [x0 * r for r in R]
    k = x0 * KAPPA
    if arch == "qwen3":  # RMSNorm of each 2-d head
        q = [QN * v / math.sqrt(v * v / 2 + eps) for v in q]
        k = KN * k / math.sqrt(k * k / 2 + eps)
    elif arch == "olmo2":  # RMSNorm over the whole projection: 4 q values (both heads), 2 k values
        ms = (q[0] ** 2 + q[1] ** 2) / 4
        q = [QN * v / math.sqrt(ms + eps) for v in q]
        k = KN * k / math.sqrt(k * k / 2 + eps)
    return max(q[h] * k * math.cos(-THETA[h] - d) / math.sqrt(2) for h in range(2) for d in range(T))


@pytest.mark.parametrize("arch", ["llama", "qwen3", "olmo2"])
def test_attention_logit_max_on_hand_built_attention(arch):
    m = _hand_model(arch)
    sig = Signals(m, every=1)
    with torch.no_grad(), sig.capture():
        m(input_ids=torch.zeros(2, T, dtype=torch.long), use_cache=False)
    got = sig.attention_maxima(None)
    want = _expected_max(arch, m.config.rms_norm_eps)
    assert len(got) == 1 and got[0] == pytest.approx(want, abs=1e-5), (got, want)
    if (
        arch == "llama"
    ):  # head 0 at offset 2: 3 * 2 / sqrt(2) (times x0^2); RoPE the other way round would give 4 * 2 / sqrt(2)
        assert want == pytest.approx(6 / math.sqrt(2) / (1 + m.config.rms_norm_eps), abs=1e-12)
    # a mask that only allows offset 0 (the diagonal): head 1 wins there, at |q1| |k| cos(-1) / sqrt(2)
    diag = sig.attention_maxima(torch.eye(T, dtype=torch.bool))
    assert diag[0] < got[0]


def test_max_attention_logit_gqa_and_masks():
    q = torch.zeros(2, 3, 2)
    k = torch.zeros(1, 3, 2)
    q[1, 0] = torch.tensor([5.0, 0.0])  # query 0 of head 1 ...
    k[0, 2] = torch.tensor([1.0, 0.0])  # ... with key 2: a future key, masked by causality
    k[0, 0] = torch.tensor([0.5, 0.0])
    assert max_attention_logit(q, k, 0.5) == pytest.approx(5 * 0.5 * 0.5)
    assert max_attention_logit(q, k, 0.5, torch.ones(3, 3, dtype=torch.bool)) == pytest.approx(5 * 1 * 0.5)
    assert max_attention_logit(q, k, 0.5, block=9) == max_attention_logit(q, k, 0.5)  # one head per chunk
    # the probe mask follows the model's: documents, and bidirectional masked rows
    doc = torch.tensor([0, 0, 1, 1])
    assert torch.equal(probe_mask(doc, torch.tensor(False), False), torch.ones(4, 4, dtype=torch.bool).tril())
    same = doc[:, None] == doc[None, :]
    assert torch.equal(probe_mask(doc, torch.tensor(False), True), same & torch.ones(4, 4, dtype=torch.bool).tril())
    assert torch.equal(probe_mask(doc, torch.tensor(True), True), same)


def test_log_z_on_known_logits():
    logits = torch.tensor([[[0.0, math.log(3.0)], [1.0, 1.0], [2.0, -50.0]]])  # log Z: log 4, 1 + log 2, ~2
    labels = torch.tensor([[7, 8, -100]])  # position 1 predicts a -100: not counted; the last never is
    assert label_positions(labels).tolist() == [[True, False, False]]
    assert log_partition(logits, labels).tolist() == pytest.approx([math.log(4.0)])
    labels = torch.tensor([[7, 8, 9]])
    lz = [math.log(4.0), 1 + math.log(2.0)]
    assert log_partition(logits, labels).tolist() == pytest.approx(lz, abs=1e-6)
    sig = Signals(_hand_model("llama"), every=1)
    sig.add_logits(logits, labels)
    sig.add_logits(logits[:, :2] + 1.0, torch.tensor([[1, 2]]))  # one more position, log Z + 1
    assert sig.z_count == 3
    assert sig.z_sum / sig.z_count == pytest.approx((sum(lz) + lz[0] + 1) / 3, abs=1e-6)
    assert sig.z_max == pytest.approx(lz[0] + 1, abs=1e-6)


def test_update_ratio_on_a_known_update():
    m = _hand_model("llama", layers=2)
    sig = Signals(m, every=1)
    with torch.no_grad(), sig.capture():
        m(input_ids=torch.zeros(1, T, dtype=torch.long), use_cache=False)
    sig.snapshot()
    norm0 = math.sqrt(sum(float(v.double().square().sum()) for k, v in m.state_dict().items() if ".layers.0." in k))
    with torch.no_grad():
        m.model.layers[0].mlp.up_proj.weight[0, 0] += 0.5
        m.model.layers[0].post_attention_layernorm.weight[1] -= (
            1.2  # |dW| = sqrt(0.5^2 + 1.2^2) = 1.3 (up to fp32 rounding)
        )
    rec = sig.finish(None, updated=True)
    assert rec["update_ratio"][0] == pytest.approx(1.3 / norm0, rel=1e-6) and rec["update_ratio"][1] == 0.0
    assert rec["attn_logit_max"][0] == pytest.approx(_expected_max("llama", m.config.rms_norm_eps), abs=1e-5)
    assert rec["log_z_mean"] is None and rec["log_z_max"] is None  # no logits were added
    assert sig.before is None and sig.qk == {}  # reset for the next signal step


# ---------------------------------------------------------------- z-loss


def test_z_loss_value_and_gradient_by_hand():
    logits = torch.tensor([[[0.0, math.log(3.0)], [2.0, 0.0], [5.0, 5.0]]], requires_grad=True)
    labels = torch.tensor([[1, 0, 1]])  # positions 0 and 1 count
    ce = torch.tensor(0.75, requires_grad=True)
    loss, parts = Objective(z_loss=0.1)(SimpleNamespace(loss=ce, logits=logits), {"labels": labels})
    lz = [math.log(4.0), math.log(math.exp(2) + 1)]
    assert float(loss.detach()) == pytest.approx(0.75 + 0.1 * (lz[0] ** 2 + lz[1] ** 2) / 2, abs=1e-6)
    assert float(parts["ce_loss"]) == 0.75 and parts["lse"].tolist() == pytest.approx(lz, abs=1e-6)
    loss.backward()
    # d/dlogit_v of 0.1 * mean(lse^2) = 0.1 * 2 lse / N * softmax_v, N = 2; nothing at the last position
    p0, p1 = [0.25, 0.75], [math.exp(2) / (math.exp(2) + 1), 1 / (math.exp(2) + 1)]
    want = [[0.1 * lz[0] * p for p in p0], [0.1 * lz[1] * p for p in p1], [0.0, 0.0]]
    torch.testing.assert_close(logits.grad[0], torch.tensor(want), rtol=0, atol=1e-6)
    assert float(ce.grad) == 1.0
    # z_loss 0 is the model's loss itself, untouched
    assert Objective()(SimpleNamespace(loss=ce, logits=None), {})[0] is ce


# ---------------------------------------------------------------- through the trainer


def test_signals_and_z_loss_in_a_run(assets, tmp_path):  # noqa: F811
    """signals_every 2 with log_every 3: steps 2, 3, 4, 6 logged, the even ones with the signals; observing
    changes nothing (same weights as the same run without signals); z-loss adds z * mean(log Z^2) to the loss."""
    base = train(make_cfg(assets, tmp_path / "base", steps=6, log_every=3))
    sig = train(make_cfg(assets, tmp_path / "sig", steps=6, log_every=3, signals_every=2, tensorboard=True))
    from test_train import assert_same_weights

    assert_same_weights(base.export_dir, sig.export_dir)
    log = read_log(sig.out_dir)
    assert [r["step"] for r in log] == [2, 3, 4, 6]
    for r in log:
        assert (r["step"] % 2 == 0) == all(f in r for f in SIGNAL_FIELDS)
        if r["step"] % 2 == 0:
            assert len(r["attn_logit_max"]) == len(r["update_ratio"]) == SPEC["layers"]
            assert all(0 < x < 10 for x in r["attn_logit_max"]) and all(0 < x < 0.1 for x in r["update_ratio"])
            assert r["log_z_max"] >= r["log_z_mean"] > math.log(300) - 0.5  # near-uniform at init: log V
    plain = read_log(base.out_dir)
    assert not any(f in r for r in plain for f in OPTIONAL_LOG_FIELDS)
    assert not {"z_loss", "signals_every", "teacher_path"} & set(
        json.loads((base.out_dir / "train_config.json").read_text())
    )
    assert list((sig.out_dir / "tb").iterdir())

    z = train(make_cfg(assets, tmp_path / "z", steps=2, z_loss=1e-3, signals_every=1))
    for r in read_log(z.out_dir):
        assert r["loss"] - r["ce_loss"] == pytest.approx(1e-3 * r["log_z_mean"] ** 2, rel=1e-2)
    assert json.loads((z.out_dir / "train_config.json").read_text())["z_loss"] == 1e-3


def test_signals_on_a_skipped_step(assets, tmp_path):  # noqa: F811
    train(make_cfg(assets, tmp_path / "nan", steps=3, signals_every=1, inject_nan_steps=[2]))
    bad = read_log(tmp_path / "nan")[1]
    assert bad["skipped"] and bad["update_ratio"] is None and bad["log_z_mean"] is not None
    assert all(x is not None for x in bad["attn_logit_max"])  # the forward before the NaN loss was fine


@pytest.mark.parametrize("arch", ["qwen3", "olmo2"])
def test_qk_norm_architectures_train_save_reload(assets, tmp_path, arch):  # noqa: F811
    from transformers import AutoModelForCausalLM

    from warmstart.model import load_model

    res = train(make_cfg(assets, tmp_path / arch, model=dict(SPEC, arch=arch), steps=2, signals_every=1, z_loss=1e-4))
    m = AutoModelForCausalLM.from_pretrained(res.export_dir)
    assert type(m).__name__ == {"qwen3": "Qwen3ForCausalLM", "olmo2": "Olmo2ForCausalLM"}[arch]
    a = m.model.layers[0].self_attn
    assert hasattr(a, "q_norm") and hasattr(a, "k_norm") and a.q_proj.bias is None and a.head_dim == 8
    assert getattr(m.config, "sliding_window", None) is None
    assert all(len(r["attn_logit_max"]) == 2 for r in read_log(res.out_dir))
    ref = load_model(res.last_checkpoint)
    for k, v in m.state_dict().items():
        assert torch.equal(ref.state_dict()[k], v), k
    again = build_model(arch, vocab_size=300, **{k: v for k, v in SPEC.items()})
    assert torch.equal(again.model.layers[0].self_attn.q_norm.weight, torch.ones_like(a.q_norm.weight))  # seeded build


def test_stability_config_errors(assets, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match="z_loss cannot be combined with fused_kernels"):
        TrainConfig(**make_cfg(assets, tmp_path, z_loss=1e-4, fused_kernels=True))
    with pytest.raises(ValueError, match="z_loss"):
        TrainConfig(**make_cfg(assets, tmp_path, z_loss=-1.0))
    with pytest.raises(ValueError, match="signals_every"):
        TrainConfig(**make_cfg(assets, tmp_path, signals_every=-1))


def test_benchmark_signals_report(assets, tmp_path):  # noqa: F811
    """The report's contract only (timings on a shared CPU say nothing): the ratio is the documented formula."""
    from warmstart.train.bench import benchmark_signals

    out = benchmark_signals(TrainConfig(**make_cfg(assets, tmp_path / "b")), every=2, blocks=2)
    m, b = out["median_step_s"], out["block_s"]
    assert out["ratio_of_medians"] == (m["signal"] + m["other"]) / (2 * m["plain"]) and out["ratio_cpu"] > 0
    assert out["ratio"] == sum(x / y for x, y in zip(b["signals"], b["plain"])) / 2  # the median of two blocks
    assert out["ratio_within_run"] == 1 + (m["signal"] - m["other"]) / (2 * m["other"])
    assert [len(out["step_s"][k]) for k in ("signal", "other", "plain")] == [2, 2, 4]
    assert sum(b["signals"]) == pytest.approx(sum(out["step_s"]["signal"]) + sum(out["step_s"]["other"]))
    assert not (tmp_path / "b").exists()
