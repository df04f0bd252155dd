"""The training stability study (warmstart.stability): LR sensitivity, "moved first", and the smoke study."""

from __future__ import annotations

import json
import math

import pytest

from warmstart import stability as ST
from warmstart.stability import analysis as A

# ---------------------------------------------------------------- LR sensitivity


def test_lr_sensitivity_on_a_hand_made_sweep():
    # clipped at init 6.0: [3.0, 2.0, 2.5, 6.0 (7.5 clipped), 6.0 (NaN), 6.0 (None)]; best 2.0
    sweep = {1e-3: 3.0, 1e-2: 2.0, 3e-2: 2.5, 1e-1: 7.5, 3e-1: float("nan"), 1.0: None}
    assert A.lr_sensitivity(sweep, init_loss=6.0) == pytest.approx((1.0 + 0.0 + 0.5 + 4.0 + 4.0 + 4.0) / 6, abs=1e-12)
    assert ST.lr_sensitivity({0.1: 2.0, 1.0: 2.0}, 5.0) == 0.0  # every rate reaches the best
    assert A.lr_sensitivity({0.1: 3.0, 1.0: 4.0}, 5.0, best=1.0) == pytest.approx(2.5)  # best given (another sweep's)
    assert A.lr_sensitivity({0.1: 9.0, 1.0: math.inf}, 5.0) == 0.0  # nothing below the start: best = init
    with pytest.raises(ValueError):
        A.lr_sensitivity({}, 5.0)
    with pytest.raises(ValueError):
        A.lr_sensitivity({0.1: 1.0}, math.nan)
    assert A.sensitivity_reduction_pct(0.7, 1.0) == pytest.approx(30.0)


def test_diverged_and_shared_events():
    assert not A.diverged(2.0, init_loss=10.0, uniform_loss=6.2)
    assert A.diverged(6.5, init_loss=10.0, uniform_loss=6.2)  # warm start: judged against a uniform guess too
    assert A.diverged(None, 6.0, 6.2) and A.diverged(2.0, 6.0, 6.2, nonfinite_steps=1)
    runs = [
        {"name": name, "variant": variant, "arch": arch, "init": init, "lr": lr, "events": [{"start_step": start}]}
        for name, variant, arch, init, lr, start in (
            ("a", "baseline", "llama", "warm", 1.0, 40),
            ("b", "qk_norm", "qwen3", "warm", 1.0, 41),
            ("c", "z_loss", "llama", "warm", 1.0, 40),
            ("d", "qk_norm", "qwen3", "scratch", 1.0, 40),
            ("e", "qk_norm", "qwen3", "warm", 0.1, 90),
        )
    ]
    # another architecture, same (init, lr), within 2 steps; z-loss (same architecture as the baseline) does not count
    assert A.shared_events(runs) == {"a": ["qk_norm"], "b": ["baseline", "z_loss"], "c": ["qk_norm"], "d": [], "e": []}


# ---------------------------------------------------------------- moved first


def _noise(i: int, amp: float) -> float:
    return amp * (((i * 7) % 5) - 2) / 2  # deterministic, in [-amp, amp]


def _trajectory(n: int = 60) -> dict:
    """Flat noisy signals; the attention logit jumps at step 40, log Z mean at 43, the loss at 45."""
    steps = list(range(1, n + 1))
    return {
        "step": steps,
        "loss": [2.0 + _noise(s, 0.02) + (1.5 if s >= 45 else 0.0) for s in steps],
        "attn_logit_max": [10.0 + _noise(s + 1, 0.3) + (40.0 if s >= 40 else 0.0) for s in steps],
        "log_z_mean": [5.0 + _noise(s + 2, 0.05) - (2.0 if s >= 43 else 0.0) for s in steps],  # drifts down: two-sided
        "log_z_max": [6.0 + _noise(s + 3, 0.05) for s in steps],
        "update_ratio": [0.05 * (1 + _noise(s + 4, 0.05)) for s in steps],
        "grad_norm": [1.0 + _noise(s, 0.05) if s != 45 else None for s in steps],  # a missing record is skipped
    }


def test_first_move_and_crossing():
    t = _trajectory()
    m = A.first_move(t["step"], t["attn_logit_max"], "attn_logit_max", window=20, k=5, min_history=20)
    assert m["step"] == 40 and m["z"] > 5 and m["value"] == pytest.approx(t["attn_logit_max"][39])
    # a move is the onset of a stretch: from step 41 on the attention logit is still high, but already moving
    assert A.first_move(t["step"], t["attn_logit_max"], "attn_logit_max", lo=41) is None
    assert A.first_move(t["step"], t["log_z_mean"], "log_z_mean")["step"] == 43  # downwards counts for log Z mean
    assert A.first_move(t["step"], t["log_z_max"], "log_z_max") is None
    assert A.first_crossing(t["step"], t["attn_logit_max"], 30.0) == 40
    assert A.first_crossing(t["step"], t["log_z_mean"], 20.0, absolute=True) is None
    # a steady exponential growth is not a move (the trailing median lags it by ~1.35 robust units)
    grow = [math.exp(0.1 * s) for s in t["step"]]
    assert A.first_move(t["step"], grow, "attn_logit_max") is None
    # the first `min_history` records never count (every signal moves at the start of training)
    early = [100.0 if s == 5 else 1.0 for s in t["step"]]
    assert A.first_move(t["step"], early, "attn_logit_max") is None


def test_moved_first_on_a_hand_made_trajectory():
    t = _trajectory()
    onset, src = A.loss_onset(t, [{"start_step": 45}])
    assert (onset, src) == (45, "detector")
    mv = ST.moved_first(t, onset, window=20, k=5, min_history=20, lookback=10, attn_logit_threshold=30.0)
    assert mv["first"] == "attn_logit_max" and mv["first_step"] == 40 and mv["lead_steps"] == 5
    assert mv["before_loss"] and mv["wortsman_before_loss"] and mv["loss_step"] == 45
    sig = mv["signals"]
    assert sig["log_z_mean"]["jump"]["step"] == 43 and sig["log_z_mean"]["jump"]["lead"] == 2
    assert sig["attn_logit_max"]["threshold_step"] == 40
    assert sig["log_z_max"]["jump"] is None and sig["update_ratio"]["jump"] is None
    # a look-back window too short to see the attention logit: log Z mean is first
    mv = A.moved_first(t, 45, lookback=3, attn_logit_threshold=None)
    assert mv["first"] == "log_z_mean" and mv["lead_steps"] == 2
    # the loss's own rise (step 44) before the detector's start (45) is the reference: a signal at 44 is "with" it
    t2 = _trajectory()
    t2["loss"] = [x + (1.5 if s == 44 else 0.0) for s, x in zip(t2["step"], t2["loss"])]
    t2["attn_logit_max"] = [10.0 + _noise(s + 1, 0.3) + (40.0 if s >= 44 else 0.0) for s in t2["step"]]
    mv = A.moved_first(t2, 45, attn_logit_threshold=None, log_z_threshold=None, signals=("attn_logit_max",))
    assert mv["loss_step"] == 44 and mv["first"] == "attn_logit_max" and mv["lead_steps"] == 0
    assert not mv["before_loss"] and not mv["wortsman_before_loss"]
    # a run that diverged without a detector event: the loss's own first move is the onset
    assert A.loss_onset(t, []) == (45, "loss_jump")


def test_move_rate_and_trajectory():
    flat = _trajectory()
    flat = {k: (v[:39] if isinstance(v, list) else v) for k, v in flat.items()}  # before any jump
    r = A.move_rate([flat], "attn_logit_max")
    assert r["records"] == 39 - 20 and r["moves"] == 0 and r["rate"] == 0.0
    recs = [
        {
            "step": 1,
            "loss": 2.5,
            "ce_loss": 2.4,
            "grad_norm": 1.0,
            "lr": 0.1,
            "attn_logit_max": [3.0, None, 7.0],
            "log_z_mean": 5.0,
            "log_z_max": 6.0,
            "update_ratio": [0.1, 0.2],
        },
        {"step": 2, "loss": None, "grad_norm": None, "lr": 0.1},
    ]
    tr = A.trajectory(recs)
    assert tr["loss"] == [2.4, None]  # the cross-entropy, not loss + z-loss
    assert tr["attn_logit_max"] == [7.0, None] and tr["update_ratio"] == [0.2, None]
    assert tr["attn_logit_max_layers"] == [[3.0, None, 7.0], None]


def test_config_is_strict_and_validated():
    cfg = ST.StabilityConfig()
    assert cfg.variants == ["baseline", "qk_norm", "z_loss"] and cfg.z_loss_coef == 1e-4
    assert min(cfg.lrs) == 1e-3 and max(cfg.lrs) == 1.0
    with pytest.raises(ValueError):
        ST.StabilityConfig(nope=1)
    with pytest.raises(ValueError):
        ST.StabilityConfig(warmup_steps=500)
    with pytest.raises(ValueError):
        ST.StabilityConfig(variants=["baseline", "baseline"])
    with pytest.raises(ValueError):
        ST.StabilityConfig(induced={"bad_batches": [5000]})
    assert ST.VARIANTS["qk_norm"]["arch"] == "qwen3" and ST.VARIANTS["z_loss"]["z_loss"]


# ---------------------------------------------------------------- the smoke study


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("stability")
    return out, ST.run_study(ST.StabilityConfig.smoke(), out / "study")


def test_smoke_study_end_to_end(smoke):
    out, res = smoke
    json.loads(json.dumps(res, allow_nan=False))  # JSON-serialisable, no NaN
    cfg = ST.StabilityConfig.smoke()
    assert {"config", "sweep", "sensitivity", "induced", "seconds", "headline", "move_rates", "bases"} <= set(res)
    assert len(res["sweep"]) == len(cfg.variants) * len(cfg.inits) * len(cfg.lrs)
    assert set(res["bases"]) == {"llama", "qwen3"}
    for r in res["sweep"]:
        assert r["init_loss"] > 0 and r["final_loss"] > 0
        assert isinstance(r["diverged"], bool) and r["n_spikes"] == len(r["events"])
        kept = r["spiked"] or r["diverged"] or r["lr"] == max(cfg.lrs)  # trajectories="unstable"
        assert (r["trajectory"] is not None) == kept and r["attn_logit_max_max"] is not None
        if kept:
            assert len(r["trajectory"]["step"]) == cfg.steps
        assert r["log_z_mean_end"] is not None and r["update_ratio_max"] is not None
        if not (r["spiked"] or r["diverged"]):
            assert r["moved"] is None
        if r["spiked"]:
            assert r["moved"]["onset"] == r["events"][0]["start_step"]
    z = [r for r in res["sweep"] if r["variant"] == "z_loss"]
    assert all(r["z_loss"] == 1e-4 for r in z) and all(
        r["arch"] == "qwen3" for r in res["sweep"] if r["variant"] == "qk_norm"
    )
    assert len(res["sensitivity"]) == 6 and all(s["lr_sensitivity"] >= 0 for s in res["sensitivity"])
    ind = res["induced"]
    assert ind["bad_batches"] == [22, 23] and ind["control"]["final_loss"] > 0
    assert {"final_loss", "events", "rollbacks", "spike_rollbacks", "log_steps"} <= set(ind["mitigated"])
    assert res["loss_kind"] == "held-out"
    assert {"data", "bases", "runs", "total"} <= set(res["seconds"])
    head = res["headline"]
    assert len(head) <= 12 and all(isinstance(v, (int, float, str, bool, type(None))) for v in head.values())
    assert not any("second" in k or "time" in k for k in head)  # wall time is provenance, not a result


def test_smoke_reporting(smoke):
    out, res = smoke
    paras = ST.findings(res)
    assert all(isinstance(p, str) and p for p in paras)
    text = " ".join(paras)
    for tag in ("(a)", "(b)", "(c)", "(d)", "Goal", "Induced spike"):
        assert tag in text
    rows = ST.table_rows(res)
    assert len(rows) == len(res["sweep"]) and "Final held-out loss (nats)" in rows[0] and "Learning rate" in rows[0]
    assert len(ST.sensitivity_rows(res)) == 6
    figs = ST.plots(res, out / "figs")
    assert len(figs) == 4 and all(
        (out / "figs").joinpath(p["path"].split("/")[-1]).is_file() and p["caption"] for p in figs
    )


def test_real_files_with_two_tokenizers_swap_the_warm_base(tmp_path):
    """data=...: jsonl files and two tokenizers; the warm start's base is pretrained with the source tokenizer
    and its vocabulary swapped to the target's (warmstart.vocab_swap)."""
    from warmstart.stability.ablations import make_assets

    src, tgt = make_assets(tmp_path / "a", 0, 512), make_assets(tmp_path / "b", 1, 400)
    data = {
        "source_train": src["files"]["source"],
        "target_train": tgt["files"]["target"],
        "target_val": tgt["files"]["target"],
        "source_tokenizer": src["tokenizer"],
        "target_tokenizer": tgt["tokenizer"],
    }
    cfg = ST.StabilityConfig.smoke(variants=["baseline"], inits=["warm"], lrs=[1e-2], induced={"enabled": False})
    res = ST.run_study(cfg, tmp_path / "study", data=data)
    assert res["bases"]["llama"]["swap"] == "fvt" and res["vocab_size"] == 400 and res["data"]["kind"] == "files"
    (r,) = res["sweep"]
    assert r["init_loss"] > 0 and r["final_loss"] < r["init_loss"] and res["induced"] is None
    assert res["sensitivity"][0]["lr_sensitivity"] == 0.0  # one learning rate: it is the best
    assert ST.findings(res) and ST.table_rows(res)
    assert len(ST.plots(res, tmp_path / "figs")) == 3  # no induced spike: no fourth figure
