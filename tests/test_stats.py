"""Intervals: Wilson, bootstraps over documents (plain and paired), the seed-spread file and its rule."""

import json
import math

import numpy as np
import pytest

from warmstart.evaluate import intervals as stats


def test_wilson_known_values():
    lo, hi = stats.wilson(10, 40)  # 0.25 on 40 items
    assert (round(lo, 3), round(hi, 3)) == (0.142, 0.402)
    assert stats.wilson(0, 10)[0] == 0.0 and stats.wilson(10, 10)[1] == 1.0
    assert stats.wilson(3, 0) is None
    with pytest.raises(ValueError):
        stats.wilson(5, 3)


def test_accuracy_interval_and_chance():
    a = stats.accuracy_interval(0.25, 40, chance=0.25)
    assert a["above_chance"] is False and a["ci"] == a["chance_ci"]
    assert stats.accuracy_interval(0.9, 40, chance=0.25)["above_chance"] is True
    assert stats.binomial_tail(0, 10, 0.25) == pytest.approx(1.0)
    assert stats.binomial_tail(10, 10, 0.5) == pytest.approx(0.5**10)


def test_bpb_bootstrap_contains_the_estimate_and_is_reproducible():
    rng = np.random.default_rng(0)
    nbytes = rng.integers(100, 600, 80)
    nll = nbytes * math.log(2) * rng.normal(1.8, 0.3, 80)
    point = nll.sum() / math.log(2) / nbytes.sum()
    lo, hi = stats.bpb_interval(nll, nbytes, seed=1)
    assert lo < point < hi and hi - lo < 0.3
    assert stats.bpb_interval(nll, nbytes, seed=1) == (lo, hi)  # fixed seed: the same interval
    assert stats.bpb_interval(nll[:1], nbytes[:1]) is None


def test_paired_difference_separates_a_shift_that_separate_intervals_would_not():
    rng = np.random.default_rng(0)
    nbytes = rng.integers(100, 600, 80).astype(float)
    per_byte = rng.normal(1.8, 0.4, 80)  # texts differ a lot in difficulty ...
    a = nbytes * math.log(2) * per_byte
    b = nbytes * math.log(2) * (per_byte + 0.01)  # ... b is uniformly 0.01 bits/byte worse
    d = stats.paired_difference(b, a, nbytes)
    assert d["diff"] == pytest.approx(0.01) and d["distinguishable"] is True
    lo_a, hi_a = stats.bpb_interval(a, nbytes)
    assert hi_a - lo_a > 0.02  # the marginal intervals overlap
    same = stats.paired_difference(a, a, nbytes)
    assert same["diff"] == 0 and same["distinguishable"] is False


def test_seed_spread_file(tmp_path):
    assert stats.seed_spread(tmp_path) is None
    path = tmp_path / "metrics" / "seed_spread.json"
    path.parent.mkdir(parents=True)
    path.write_text(
        json.dumps(
            {
                "seeds": [1, 2, 3],
                "runs": {
                    "fvt": {"mean": 1.845, "std": 0.004, "min": 1.84, "max": 1.85, "n": 3},
                    "focus": {"values": [1.846, 1.850, 1.842]},
                    "bad": {"mean": 1.0},
                },
            }
        )
    )
    s = stats.seed_spread(tmp_path)
    assert set(s["runs"]) == {"fvt", "focus"} and s["seeds"] == [1, 2, 3]
    assert s["runs"]["focus"]["std"] == pytest.approx(0.004) and s["runs"]["focus"]["n"] == 3
    w = stats.within_seed_noise("focus", "fvt", 1.847, 1.844, s)
    assert w["within"] is True and w["threshold"] == pytest.approx(2 * math.sqrt(2) * 0.004)
    far = stats.within_seed_noise("scratch", "fvt", 1.979, 1.844, s)  # scratch: the median std of the others
    assert far["within"] is False and far["measured"] == ["fvt"]
    path.write_text("{}")
    with pytest.raises(ValueError, match="no run with a std"):
        stats.seed_spread(tmp_path)
