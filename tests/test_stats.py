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
                "fingerprints": {"fvt": "0123456789abcdef"},
            }
        )
    )
    s = stats.seed_spread(tmp_path)
    assert set(s["runs"]) == {"fvt", "focus"} and s["seeds"] == [1, 2, 3]
    assert s["fingerprints"] == {"fvt": "0123456789abcdef"}  # as recorded: spread_for decides what they cover
    assert s["runs"]["focus"]["std"] == pytest.approx(0.004) and s["runs"]["focus"]["n"] == 3
    w = stats.within_seed_noise("focus", "fvt", 1.847, 1.844, s)
    assert w["within"] is True and w["threshold"] == pytest.approx(2 * math.sqrt(2) * 0.004)
    far = stats.within_seed_noise("scratch", "fvt", 1.979, 1.844, s)  # scratch: the median std of the others
    assert far["within"] is False and far["measured"] == ["fvt"]
    path.write_text("{}")
    with pytest.raises(ValueError, match="no run with a std"):
        stats.seed_spread(tmp_path)


# ---------------------------------------------------------------- scipy agreement, exact values, bad input

LEVELS = (0.5, 0.8, 0.9, 0.95, 0.99, 0.999)


def _scipy_wilson(k, n, level):
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def test_wilson_agrees_with_scipy():
    """The closed form is kept (scipy differs in the last bits, see ``wilson``): it must agree to float rounding,
    with exact 0 at k = 0 and exact 1 at k = n, like scipy."""
    rng = np.random.default_rng(0)
    cases = [(k, n, lv) for n in range(1, 31) for k in range(n + 1) for lv in LEVELS]
    cases += [(0, n, 0.95) for n in (100, 400, 10_000)] + [(n, n, 0.95) for n in (100, 400, 10_000)]
    cases += [(int(rng.integers(0, n + 1)), int(n), 0.95) for n in rng.integers(31, 100_000, 100)]
    worst = 0.0
    for k, n, lv in cases:
        lo, hi = stats.wilson(k, n, lv)
        slo, shi = _scipy_wilson(k, n, lv)
        assert 0.0 <= lo < hi <= 1.0
        if k == 0:
            assert lo == slo == 0.0
        if k == n:
            assert hi == shi == 1.0
        for a, b in ((lo, slo), (hi, shi)):
            worst = max(worst, abs(a - b) / abs(b) if b else abs(a))
    assert worst < 1e-13, worst  # measured: 3.0e-14 over 64,598 cases


def test_z_value_agrees_with_scipy():
    from scipy.stats import norm

    for lv in (*LEVELS, *np.linspace(0.01, 0.999, 200)):
        assert stats.z_value(lv) == pytest.approx(float(norm.ppf(0.5 + lv / 2)), rel=1e-15, abs=0)
    assert stats.z_value() == 1.9599639845400536  # the z of every committed Wilson bound (scipy: ...054)


def test_wilson_exact_values_on_tiny_inputs():
    # pinned to the last bit: these floats are what the committed metrics carry
    assert stats.wilson(0, 1) == (0.0, 0.7934506856227626)
    assert stats.wilson(1, 1) == (0.20654931437723745, 1.0)
    assert stats.wilson(1, 2) == (0.09453120573423074, 0.9054687942657693)
    assert stats.wilson(1, 3) == (0.06149194472039632, 0.7923403991979523)
    assert stats.wilson(3, 4) == (0.300641842582402, 0.9544127391902995)
    assert stats.wilson(10, 40) == (0.14187118639096308, 0.4019396142076802)
    z2 = stats.z_value() ** 2
    assert stats.wilson(0, 1)[1] == pytest.approx(z2 / (1 + z2), rel=1e-15)  # k = 0: upper bound z^2 / (n + z^2)
    lo, hi = stats.wilson(1, 2)
    assert lo + hi == pytest.approx(1.0, rel=1e-15)  # symmetric about 1/2
    assert stats.wilson(0, 0) is None


def test_wilson_or_unit_interval_and_accuracy_cell():
    assert stats.wilson_or_unit_interval(0, 0) == (0.0, 1.0)
    assert stats.wilson_or_unit_interval(3, 4) == stats.wilson(3, 4)
    cell = stats.accuracy_cell(3, 4)
    assert cell == {"acc": 0.75, "lo": 0.300641842582402, "hi": 0.9544127391902995, "n": 4, "correct": 3}
    empty = stats.accuracy_cell(0, 0)
    assert math.isnan(empty["acc"]) and (empty["lo"], empty["hi"], empty["n"]) == (0.0, 1.0, 0)


def test_binomial_tail_is_scipy_and_exact_on_tiny_inputs():
    from fractions import Fraction

    assert stats.binomial_tail(1, 1, 0.5) == 0.5
    assert stats.binomial_tail(1, 5, 0.5) == 0.96875 and stats.binomial_tail(5, 5, 0.5) == 0.03125
    assert stats.binomial_tail(2, 3, 0.5) == 0.5 and stats.binomial_tail(10, 10, 0.5) == 0.5**10
    assert stats.binomial_tail(0, 7, 0.3) == 1.0 and stats.binomial_tail(-2, 7, 0.3) == 1.0
    assert stats.binomial_tail(8, 7, 0.3) == 0.0 and stats.binomial_tail(0, 0, 0.3) == 1.0
    assert stats.binomial_tail(1, 4, 0.0) == 0.0 and stats.binomial_tail(4, 4, 1.0) == 1.0
    for n in range(1, 41):  # against the exact rational sum
        for k in range(n + 1):
            for p in (Fraction(1, 4), Fraction(1, 2), Fraction(3, 4)):
                exact = float(sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1)))
                assert stats.binomial_tail(k, n, float(p)) == pytest.approx(exact, rel=1e-13)
    # large n, where a sum of comb(n, i) p^i (1-p)^(n-i) overflows: P(X >= 1001) = (1 - P(X = 1000)) / 2
    from scipy.stats import binom

    assert stats.binomial_tail(1001, 2000, 0.5) == pytest.approx((1 - binom.pmf(1000, 2000, 0.5)) / 2, rel=1e-12)


def test_bad_input_is_refused_with_a_message():
    with pytest.raises(ValueError, match=r"wilson: need 0 <= k <= n, got k=5, n=3"):
        stats.wilson(5, 3)
    with pytest.raises(ValueError, match=r"wilson: need 0 <= k <= n, got k=-1, n=3"):
        stats.wilson(-1, 3)
    with pytest.raises(ValueError, match=r"wilson: need n >= 0, got n=-2"):
        stats.wilson(0, -2)
    with pytest.raises(ValueError, match=r"successes must be in \[0, n\], got 5 of 4"):
        stats.wilson_or_unit_interval(5, 4)
    with pytest.raises(ValueError, match=r"successes must be in \[0, n\], got 0 of -1"):
        stats.wilson_or_unit_interval(0, -1)
    with pytest.raises(ValueError, match=r"successes must be in \[0, n\], got 1 of 0"):
        stats.accuracy_cell(1, 0)
    with pytest.raises(ValueError, match=r"binomial_tail: need n >= 0, got n=-1"):
        stats.binomial_tail(0, -1, 0.5)
    with pytest.raises(ValueError, match=r"binomial_tail: need 0 <= p <= 1, got p=1.5"):
        stats.binomial_tail(1, 3, 1.5)
    with pytest.raises(ValueError, match=r"z_value: need 0 < level < 1, got 1.0"):
        stats.wilson(1, 3, level=1.0)
    with pytest.raises(ValueError, match="bootstrap needs at least one document"):
        stats.bootstrap_weights(0)
    with pytest.raises(ValueError, match="3 document losses but 2 byte counts"):
        stats.bpb_samples([1.0, 2.0, 3.0], [10, 20], stats.bootstrap_weights(3, 5))


def test_percentile_interval_exact_values():
    assert stats.percentile_interval([0.0, 1.0, 2.0, 3.0, 4.0], level=0.5) == (1.0, 3.0)
    assert stats.percentile_interval([math.nan, math.inf, 2.0], level=0.9) == (2.0, 2.0)
    assert stats.percentile_interval([math.nan, -math.inf]) is None


def _bpb_example():
    rng = np.random.default_rng(0)
    nbytes = rng.integers(100, 600, 80)
    return nbytes * math.log(2) * rng.normal(1.8, 0.3, 80), nbytes


def test_bpb_bootstrap_is_kept_because_scipy_resamples_differently():
    """``scipy.stats.bootstrap`` agrees in method but not in numbers (see ``bootstrap_weights``): it draws
    other resamples for the same seed; on the same resamples the ratio agrees to float rounding."""
    from scipy.stats import bootstrap

    nll, nbytes = _bpb_example()
    lo, hi = stats.bpb_interval(nll, nbytes, seed=1)
    assert (lo, hi) == pytest.approx((1.7484435138527858, 1.89471737194346), rel=1e-12)  # the study's numbers

    def ratio(a, b, axis=-1):
        return a.sum(axis=axis) / b.sum(axis=axis) / stats.LN2

    kw = dict(paired=True, vectorized=True, n_resamples=stats.N_BOOT, method="percentile")
    r = bootstrap((nll, nbytes.astype(float)), ratio, rng=np.random.default_rng(1), **kw)
    assert (r.confidence_interval.low, r.confidence_interval.high) == pytest.approx((lo, hi), abs=2e-3)
    assert (r.confidence_interval.low, r.confidence_interval.high) != (lo, hi)  # other draws, other digits
    # the same resamples as counts (what bootstrap_weights hands to bpb_samples) give the same replicates
    idx = np.random.default_rng(1).integers(0, len(nll), (stats.N_BOOT, len(nll)))
    counts = np.stack([np.bincount(i, minlength=len(nll)) for i in idx]).astype(float)
    np.testing.assert_allclose(
        stats.bpb_samples(nll, nbytes, counts), ratio(nll[idx], nbytes[idx].astype(float)), rtol=1e-15
    )
    # paired: the weights are shared, so the difference's replicates are the replicates' difference
    w = stats.bootstrap_weights(len(nll), 200, seed=3)
    other = nll * 1.01
    np.testing.assert_allclose(
        stats.bpb_samples(other - nll, nbytes, w),
        stats.bpb_samples(other, nbytes, w) - stats.bpb_samples(nll, nbytes, w),
        rtol=1e-12,
        atol=1e-15,
    )
