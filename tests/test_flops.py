"""FLOPs per token (6 N + 12 L H Q T) on configs small enough to count by hand."""

import math

import pytest
from transformers import MistralConfig

from conftest import TINY_LLAMA
from warmstart import flops
from warmstart.model import build_model

# The tests' tiny Llama: vocab 300, hidden 32, 2 layers, 4 heads (head dim 8), 2 kv heads, MLP 64, T = 32.
TINY = dict(vocab_size=300, **TINY_LLAMA, max_pos=64)
# N by hand, per layer: q 32*32 = 1024, k 32*(2*8) = 512, v 512, o 1024, gate+up+down 3*32*64 = 6144 -> 9216;
# two layers 18432, plus the LM head 300*32 = 9600 -> N = 28032 (the input embedding is not counted).
N_TINY = 28032
# 6 N = 168192; attention 12 * L * H * Q * T = 12 * 2 * 4 * 8 * 32 = 24576; total 192768 per token.
FPT_TINY = 192768
# A Hugging Face config as a dict, head_dim not hidden / heads (test_bench uses it too).
HEAD_DIM_3 = dict(
    vocab_size=10,
    hidden_size=8,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=3,
    intermediate_size=5,
)
# The benchmark's model: Llama-3.2-1B's shape (test_bench uses it too).
LLAMA_3_2_1B = dict(
    vocab_size=128256,
    hidden_size=2048,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    intermediate_size=8192,
)


@pytest.mark.parametrize("tie", [False, True])
def test_tiny_flops_by_hand(tie):
    model = build_model(**TINY, tie_embeddings=tie)
    assert flops.matmul_params(model.config) == N_TINY
    assert flops.matmul_params_of_model(model) == N_TINY  # every nn.Linear, LM head included even when tied
    assert flops.flops_per_token(model.config, 32) == FPT_TINY
    assert flops.run_flops(model.config, 32, 1000) == 192_768_000
    # the embedding is excluded: N is the non-embedding parameters plus the head (no norms here: 5 * 32 of them)
    non_embedding = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n and "norm" not in n)
    assert N_TINY == non_embedding + (300 * 32 if tie else 0)


def test_dict_config_and_explicit_head_dim():
    # head_dim need not be hidden / heads (Mistral-Nemo: 5120 / 32 = 160, head_dim 128)
    # q 8*2*3 = 48, k 8*1*3 = 24, v 24, o 2*3*8 = 48, mlp 3*8*5 = 120 -> 264, head 10*8 = 80 -> N = 344
    assert flops.matmul_params(HEAD_DIM_3) == 344
    assert flops.flops_per_token(HEAD_DIM_3, 7) == 6 * 344 + 12 * 1 * 2 * 3 * 7


def test_normistral_order_of_magnitude():
    """NorMistral-11b-warm: Mistral-Nemo shape, 51200 vocab, 60k steps x 1024 x 4096 tokens; card says 2.0e22 FLOP."""
    cfg = MistralConfig(
        vocab_size=51200,
        hidden_size=5120,
        num_hidden_layers=40,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        intermediate_size=14336,
    )
    n = flops.matmul_params(cfg)
    assert n == 40 * (5120 * 4096 * 2 + 2 * 5120 * 1024 + 3 * 5120 * 14336) + 51200 * 5120 == 11_167_334_400
    total = flops.run_flops(cfg, 4096, 60_000 * 1024 * 4096)
    assert 1.8e22 < total < 2.1e22  # 1.89e22 by this formula (the card's "more precise" count gives 2.0e22)


def test_mfu_and_peak():
    assert flops.mfu(1000.0, 1e9, 1e13) == pytest.approx(0.1)
    assert flops.mfu(1000.0, 1e9, 1e13, n_devices=4) == pytest.approx(0.025)
    peak = flops.measured_matmul_peak("cpu", n=256, repeats=2)
    assert math.isfinite(peak) and peak > 1e8
    assert flops.GPU_PEAK_BF16["H100"] == 989e12 and flops.GPU_PEAK_BF16["A100"] == 312e12
    assert flops.GPU_PEAK_BF16["H200"] == 989e12


def test_llama_3_2_1b_by_hand():
    """The benchmark's model: Llama-3.2-1B shape (tied head still counted), T = 4096."""
    # per layer: q 2048*2048 = 4194304, k = v = 2048*512 = 1048576, o 4194304, mlp 3*2048*8192 = 50331648
    # -> 60817408; x16 = 973078528; head 128256*2048 = 262668288 -> N = 1235746816
    assert flops.matmul_params(LLAMA_3_2_1B) == 1_235_746_816
    # 6 N = 7414480896; attention 12*16*32*64*4096 = 1610612736
    assert flops.flops_per_token(LLAMA_3_2_1B, 4096) == 9_025_093_632


# ---------------------------------------------------------------- credible throughput: MFU only against a stated peak


def _log(tps: list[float], fpt: float = 1e7, peaks: list[float] | None = None) -> list[dict]:
    """Step-log records as the trainer writes them (mfu against ``peaks``, one per record, when given)."""
    return [
        {"step": 5 * (i + 1), "tokens_per_s": t, **({"mfu": t * fpt / peaks[i]} if peaks else {})}
        for i, t in enumerate(tps)
    ]


def test_measure_peak_is_a_median_with_its_spread():
    r = flops.measure_peak("cpu", n=128, rounds=5, repeats=2)
    assert r["source"] == "measured" and r["rounds"] == 5 and len(r["samples"]) == 5
    assert r["flops"] == r["median"] and r["min"] <= r["median"] <= r["max"]
    assert r["spread"] == pytest.approx((r["max"] - r["min"]) / r["median"])
    assert r["reliable"] == (r["spread"] <= flops.TOLERANCE) and r["dtype"] == "fp32" and "cores" in r["device"]
    assert isinstance(flops.device_peak("cpu"), float)  # the trainer's call keeps its signature


def test_datasheet_peaks_by_dtype():
    assert flops.datasheet_peak("NVIDIA H100 80GB HBM3", "bf16") == 989e12
    assert flops.datasheet_peak("NVIDIA A100-SXM4-80GB", "fp32") == 19.5e12
    assert flops.datasheet_peak("Tesla T4", "bf16") is None


def test_mfu_is_stated_against_a_stable_peak():
    fpt, peak = 1e7, {"flops": 1e12, "source": "measured", "spread": 0.02, "rounds": 9}
    t = flops.throughput(_log([500.0, 1000, 1010, 990, 1005, 995]), fpt, peak)
    assert t["tokens_per_s"] == 1000 and t["achieved_flops"] == pytest.approx(1e10)
    assert t["mfu"] == pytest.approx(0.01) and t["mfu_stated"] == pytest.approx(0.01) and t["reasons"] == []
    assert t["records"] == 5  # the first record (start-up) is left out


def test_mfu_is_not_stated_on_a_shared_machine():
    fpt = 1e7
    noisy_peak = {"flops": 1e12, "source": "measured", "spread": 0.4, "rounds": 9}
    t = flops.throughput(_log([1000.0] * 6), fpt, noisy_peak)
    assert t["mfu_stated"] is None and "peak_spread" in t["flags"] and t["achieved_flops"] == pytest.approx(1e10)
    stable = {"flops": 1e12, "source": "measured", "spread": 0.01}
    t = flops.throughput(_log([1000.0, 600, 1400, 700, 1300, 1000]), fpt, stable)  # step throughput varies
    assert t["mfu_stated"] is None and "step_spread" in t["flags"]
    t = flops.throughput(_log([1000.0] * 6), fpt, stable, study_peaks=[7e10, 2.2e11])
    assert t["mfu_stated"] is None and "study_peaks_spread" in t["flags"] and "shared machine" in t["reasons"][0]


def test_mfu_above_the_peak_is_never_stated():
    t = flops.throughput(_log([1000.0] * 4), 1e7, {"flops": 5e9, "source": "datasheet"})
    assert t["mfu"] == pytest.approx(2.0) and t["mfu_stated"] is None and "impossible" in t["flags"]
    t = flops.throughput(_log([1000.0] * 4), 1e7, None)
    assert t["mfu"] is None and t["reasons"] == ["no stated peak"] and t["achieved_flops"] == pytest.approx(1e10)


def test_the_peaks_a_run_divided_by_are_recovered_from_its_log():
    log = _log([1000.0, 1000, 2000, 2000], 1e7, [2e11, 2e11, 7e10, 7e10])
    assert flops.recorded_peaks(log, 1e7) == pytest.approx([2e11, 7e10])
    t = flops.throughput(log, 1e7, {"flops": 2e11, "source": "measured", "spread": 0.0})
    assert "own_peaks_spread" in t["flags"] and t["logged_mfu"] is not None
