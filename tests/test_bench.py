"""The benchmark: MFU arithmetic on hand-counted configs, and a CPU smoke run of the command."""

import pytest

from test_flops import HEAD_DIM_3, LLAMA_3_2_1B, TINY
from warmstart.kernels import bench
from warmstart.model import build_model


def test_mfu_arithmetic_by_hand():
    # tests/test_flops.py's tiny Llama: N = 28032, FLOPs/token at T = 32: 6 N + 12*2*4*8*32 = 192768
    cfg = build_model(**TINY).config
    assert bench.mfu_of(1000.0, cfg, 32, 1e9) == pytest.approx(1000 * 192768 / 1e9)
    # Llama-3.2-1B shape at T = 4096 (see test_flops): 9_025_093_632 FLOPs/token; 40k tokens/s on an H100
    assert bench.mfu_of(40_000.0, LLAMA_3_2_1B, 4096, 989e12) == pytest.approx(40_000 * 9_025_093_632 / 989e12)  # 36.5%


def test_ratios_to_eager():
    cfg = HEAD_DIM_3  # (FLOPs/token at T=7: 6*344 + 12*1*2*3*7 = 2568)
    res = [
        dict(config="eager", tokens_per_s=100.0, peak_mem_gib=10.0, loss=2.0, model_config=cfg),
        dict(config="full", tokens_per_s=150.0, peak_mem_gib=5.0, loss=2.002, model_config=cfg),
    ]
    bench.add_ratios(res, 7, 1e6)
    assert res[1]["speedup"] == pytest.approx(1.5) and res[1]["mem_ratio"] == pytest.approx(0.5)
    assert res[1]["loss_rel"] == pytest.approx(0.001) and res[0]["mfu"] == pytest.approx(100 * 2568 / 1e6)


def test_tiny_cpu_run_writes_a_record(tmp_path):
    res = bench.main(
        [
            "--tiny",
            "--configs",
            "eager,kernels",
            "--steps",
            "2",
            "--dtype",
            "fp32",
            "--peak",
            "1e11",
            "--out-dir",
            str(tmp_path),
        ]
    )
    assert [r["config"] for r in res] == ["eager", "kernels"]
    assert all(r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1 and r["loss"] > 0 for r in res)
    # same weights, same batches: the fused (chunked) loss equals the eager one
    assert res[1]["loss"] == pytest.approx(res[0]["loss"], rel=1e-5)
    assert res[1]["patched"]["fused_linear_cross_entropy"] in ("torch-chunked", "liger")
    text = (tmp_path / res[0]["path"].split("/")[-1]).read_text()
    assert res[0]["path"].endswith(".md") and "_cpu_" in res[0]["path"]
    for needle in (
        "# Training benchmark: tiny",
        "date:",
        "versions:",
        "torch",
        "| eager |",
        "| kernels |",
        "seq_len 128",
    ):
        assert needle in text
