"""Intervals for the study's numbers: what a number would be on other evaluation text, or another seed.

Two kinds of noise, kept apart because they answer different questions:

* **evaluation-text noise** (this module's bootstraps and binomial intervals):
  how much a number would move on other held-out text of the same kind. Bits
  per byte is a ratio of sums over documents (``sum NLL / ln 2 / sum bytes``),
  so its interval resamples *documents* (the texts :func:`warmstart.bpb.bits_per_byte`
  scores one by one) with replacement and recomputes the ratio
  (:func:`bpb_interval`); two runs scored on the same texts are compared with
  a *paired* bootstrap of their difference (:func:`paired_difference`), which
  is much tighter than two separate intervals. Probe accuracies are binomial:
  the Wilson score interval (:func:`wilson`; :func:`accuracy_cell` and
  :func:`wilson_or_unit_interval` for the context suites), and their chance
  level (:func:`binomial_tail`).
* **run-to-run noise** (the seed spread, :func:`seed_spread`): how much a
  number moves when the same configuration is trained with another seed.
  Only repeated training measures it; :func:`within_seed_noise` says whether a
  difference between two single runs is inside it.

Every interval is a two-sided 95% interval unless ``level`` says otherwise;
bootstraps are percentile intervals with a fixed seed (reproducible to the
last digit).

What goes through a library and what does not: the binomial tail is
``scipy.stats.binom``; the normal quantile is the standard library's
``statistics.NormalDist``, percentiles are ``numpy.quantile``. The Wilson
closed form and the bootstrap (seeded resampling counts shared between
statistics) stay written out here because ``scipy.stats.binomtest(...).proportion_ci``
and ``scipy.stats.bootstrap`` do not reproduce the committed numbers to the
last bit; :func:`wilson` and :func:`bootstrap_weights` say by how much, and
``tests/test_stats.py`` checks that scipy agrees with them to float rounding.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

LEVEL = 0.95
N_BOOT = 2000
LN2 = math.log(2.0)
# Two single runs differ beyond run-to-run noise when |a - b| > SEED_K * sqrt(sd_a^2 + sd_b^2)
# (about a 95% two-sided band for the difference of two independent draws).
SEED_K = 2.0


def z_value(level: float = LEVEL) -> float:
    """The standard normal quantile of a two-sided ``level`` interval (1.95996 for 0.95).

    ``statistics.NormalDist``, not ``scipy.stats.norm.ppf``: the two differ in the last bit for most levels
    (0.95: 1.9599639845400536 here, 1.959963984540054 from scipy; at most 5.6e-16 relative over 10,000 levels),
    and every Wilson bound the study has committed was computed with this one.
    """
    from statistics import NormalDist

    if not 0 < level < 1:
        raise ValueError(f"z_value: need 0 < level < 1, got {level}")
    return NormalDist().inv_cdf(0.5 + level / 2)


def wilson(k: int, n: int, level: float = LEVEL) -> tuple[float, float] | None:
    """Wilson score interval of a binomial proportion ``k / n`` (None when ``n`` is 0).

    The closed form (Wilson 1927) is kept rather than
    ``scipy.stats.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")``, which gives the
    same interval up to float rounding but not to the last bit: scipy writes it as
    ``(2np + z^2) / (2(n + z^2)) -+ z / (2(n + z^2)) * sqrt(4npq + z^2)`` with ``z`` from ``scipy.special.ndtri``,
    this is ``(p + z^2/2n) / (1 + z^2/n) -+ z sqrt(pq/n + z^2/4n^2) / (1 + z^2/n)`` with ``z`` from
    :func:`z_value`. Over 64,598 cases (every k of n = 1..129 at seven levels, 5,000 random n up to 100,000)
    40,321 intervals differ, by at most 3.0e-14 relative (at n = 400 and 0.95: 185 of the 401 values of k).
    The intervals are stored as full floats in the committed outputs (the context cells' ``lo``/``hi``, the
    probes' ``acc_ci``, ``best_zero_shot_ci`` in ``reports/metrics/testbed_seeds.json``), about half of which
    scipy would change in the last digits; ``tests/test_stats.py`` checks the agreement. ``k == 0`` gives a
    lower bound of exactly 0 and ``k == n`` an upper bound of exactly 1 (as scipy does).
    """
    if n < 0:
        raise ValueError(f"wilson: need n >= 0, got n={n}")
    if n == 0:
        return None
    if not 0 <= k <= n:
        raise ValueError(f"wilson: need 0 <= k <= n, got k={k}, n={n}")
    z = z_value(level)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (0.0 if k == 0 else max(0.0, mid - half)), (1.0 if k == n else min(1.0, mid + half))


def wilson_or_unit_interval(successes: int, n: int) -> tuple[float, float]:
    """:func:`wilson` at 95%, but ``(0.0, 1.0)`` (the unit interval: nothing known) when ``n == 0`` instead of None.

    For the context suites' cells (:func:`accuracy_cell`), where an empty cell still needs bounds. Unlike the
    normal approximation it stays inside [0, 1] and is not degenerate at 0 or n successes (0/400 gives
    [0, 0.0095]).
    """
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"successes must be in [0, n], got {successes} of {n}")
    return wilson(successes, n) or (0.0, 1.0)


def accuracy_cell(successes: int, n: int) -> dict[str, float | int]:
    """``{"acc", "lo", "hi", "n", "correct"}``: an accuracy with its 95% Wilson interval
    (:func:`wilson_or_unit_interval`; ``acc`` is NaN and the interval (0, 1) when ``n == 0``)."""
    lo, hi = wilson_or_unit_interval(successes, n)
    return {"acc": successes / n if n else float("nan"), "lo": lo, "hi": hi, "n": n, "correct": successes}


def successes(acc: float, n: int) -> int:
    """The count behind an accuracy measured on ``n`` items (accuracies are k / n)."""
    return int(round(acc * n))


def binomial_tail(k: int, n: int, p: float) -> float:
    """``P(X >= k)`` for ``X ~ Binomial(n, p)``: the one-sided p-value of doing better than chance.

    ``scipy.stats.binom.sf(k - 1, n, p)``: 1 for ``k <= 0``, 0 for ``k > n``. It replaced a summation of
    ``comb(n, i) p^i (1-p)^(n-i)``, which agreed with it to 1.2e-13 relative wherever the tail exceeds 1e-75
    (5.6e-14 absolute at most, n < 1,000), lost the far tail to underflow (0 where the exact tail is 1.1e-296)
    and raised OverflowError past n of about 1,030. No committed number goes through it.
    """
    from scipy.stats import binom

    if n < 0:
        raise ValueError(f"binomial_tail: need n >= 0, got n={n}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"binomial_tail: need 0 <= p <= 1, got p={p}")
    return float(binom.sf(k - 1, n, p))


def accuracy_interval(acc: float, n: int, chance: float | None = None, level: float = LEVEL) -> dict[str, Any]:
    """``{"acc", "n", "ci", "chance", "chance_ci", "above_chance"}`` of an accuracy on ``n`` items.

    ``chance_ci`` is the central ``level`` range of accuracies a guesser at ``chance`` would score on
    ``n`` items (Wilson interval around the chance count); ``above_chance`` is True when the accuracy's own
    interval lies wholly above ``chance``, False otherwise (None without a chance level).
    """
    k = successes(acc, n)
    ci = wilson(k, n, level)
    out: dict[str, Any] = {"acc": acc, "n": n, "ci": list(ci) if ci else None, "chance": chance}
    if chance is not None:
        cc = wilson(successes(chance, n), n, level)
        out["chance_ci"] = list(cc) if cc else None
        out["above_chance"] = None if ci is None else bool(ci[0] > chance)
    return out


# ---------------------------------------------------------------- bootstrap


def bootstrap_weights(n: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """``(n_boot, n)`` resampling counts: row b says how often each of the ``n`` documents is drawn.

    Every bootstrap here is a statistic of these rows, and is kept rather than ``scipy.stats.bootstrap``
    because scipy cannot reproduce the committed intervals bit for bit:

    * **other draws.** Each row here is ``Generator.multinomial(n, [1/n] * n)``; scipy draws indices,
      ``Generator.integers(0, n, (n_resamples, n))``. The counts have the same distribution but, for the same
      seed, not the same values, so every interval moves (the 80-text example of ``tests/test_stats.py`` at
      seed 1: (1.748444, 1.894717) here, (1.748420, 1.895595) from ``scipy.stats.bootstrap(..., paired=True,
      method="percentile")``).
    * **shared rows across calls and statistics.** One matrix per text role is applied to every checkpoint of
      every run (:func:`warmstart.evaluate.runs.intervals`, the speed-up curves of
      :func:`warmstart.evaluate.runs.speedup_samples`), to both runs of a paired difference and to statistics of
      counts rather than of samples (:func:`bootstrap_stat`, chrF from summed sentence statistics in
      :func:`warmstart.evaluate.probes.chrf_interval`); scipy resamples within one call (``paired=True`` shares
      indices only among that call's samples) and passes resampled values, not counts, to the statistic.
    * **other rounding.** Bits per byte is a ratio of sums, computed here as ``weights @ values``; even on the
      same resamples, scipy's sums over indexed values differ in the last bit (682 of 2,000 replicates, at most
      6.2e-16 relative), and its percentiles (``scipy.stats.quantile``) differ from ``numpy.quantile`` in the
      last bit in about half of the cases.
    """
    if n < 1:
        raise ValueError("bootstrap needs at least one document")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)


def percentile_interval(samples: Sequence[float] | np.ndarray, level: float = LEVEL) -> tuple[float, float] | None:
    """The central ``level`` range of bootstrap samples (finite ones; None when there are none).

    ``numpy.quantile`` (linear interpolation), not ``scipy.stats.quantile``, which differs in the last bit
    (see :func:`bootstrap_weights`)."""
    a = np.asarray(samples, dtype=float)
    a = a[np.isfinite(a)]
    if not len(a):
        return None
    lo, hi = np.quantile(a, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def bpb_samples(
    nll: Sequence[Sequence[float]] | np.ndarray, n_bytes: Sequence[int] | np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Bootstrap replicates of bits per byte: ``nll`` is ``(checkpoints, documents)`` (nats) or one row;
    returns ``(n_boot, checkpoints)`` (or ``(n_boot,)`` for one row)."""
    m = np.asarray(nll, dtype=float)
    one = m.ndim == 1
    m = np.atleast_2d(m)
    b = np.asarray(n_bytes, dtype=float)
    if m.shape[1] != len(b):
        raise ValueError(f"{m.shape[1]} document losses but {len(b)} byte counts")
    out = (weights @ m.T) / (weights @ b)[:, None] / LN2
    return out[:, 0] if one else out


def bpb_interval(
    nll: Sequence[float], n_bytes: Sequence[int], n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL
) -> tuple[float, float] | None:
    """Bootstrap interval of bits per byte over documents (``nll``: per-document NLL in nats).

    Hand-written rather than ``scipy.stats.bootstrap``: see :func:`bootstrap_weights`."""
    if len(nll) < 2:
        return None
    return percentile_interval(bpb_samples(nll, n_bytes, bootstrap_weights(len(nll), n_boot, seed)), level)


def paired_difference(
    nll_a: Sequence[float],
    nll_b: Sequence[float],
    n_bytes: Sequence[int],
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, Any]:
    """Bits per byte of run ``a`` minus run ``b`` on the same documents, with a paired bootstrap interval.

    ``{"diff", "ci", "distinguishable"}``: ``distinguishable`` is True when the interval excludes 0 (the
    difference would keep its sign on other text of this kind), False when it includes 0. The two runs share
    each resample's weights (a ratio of summed NLL differences over summed bytes); hand-written rather than
    ``scipy.stats.bootstrap(..., paired=True)`` for the reasons in :func:`bootstrap_weights`.
    """
    b = np.asarray(n_bytes, dtype=float)
    a_, b_ = np.asarray(nll_a, dtype=float), np.asarray(nll_b, dtype=float)
    diff = float((a_.sum() - b_.sum()) / b.sum() / LN2)
    if len(b) < 2:
        return {"diff": diff, "ci": None, "distinguishable": None}
    w = bootstrap_weights(len(b), n_boot, seed)
    ci = percentile_interval(bpb_samples(a_ - b_, b, w), level)
    return {
        "diff": diff,
        "ci": list(ci) if ci else None,
        "distinguishable": None if ci is None else bool(ci[0] > 0 or ci[1] < 0),
    }


def bootstrap_stat(
    stat: Callable[[np.ndarray], float | None], n: int, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL
) -> tuple[float, float] | None:
    """Percentile interval of any statistic of resampling counts (``stat(weights_row) -> value or None``)."""
    w = bootstrap_weights(n, n_boot, seed)
    vals = [stat(row) for row in w]
    return percentile_interval([math.nan if v is None else v for v in vals], level)


# ---------------------------------------------------------------- run-to-run (seed) spread

SEED_SPREAD_FILE = ("metrics", "seed_spread.json")


def _spread_entry(v: Any) -> dict[str, Any] | None:
    if not isinstance(v, Mapping):
        return None
    vals = [float(x) for x in v.get("values") or [] if x is not None]
    d = {k: (None if v.get(k) is None else float(v[k])) for k in ("mean", "std", "min", "max")}
    if vals:
        d["mean"] = d["mean"] if d["mean"] is not None else float(np.mean(vals))
        d["std"] = d["std"] if d["std"] is not None else (float(np.std(vals, ddof=1)) if len(vals) > 1 else None)
        d["min"] = d["min"] if d["min"] is not None else min(vals)
        d["max"] = d["max"] if d["max"] is not None else max(vals)
    if d["std"] is None:
        return None
    d["n"] = int(v.get("n") or len(vals) or 0) or None
    d["values"] = vals
    return d


def seed_spread(reports_dir: str | Path) -> dict[str, Any] | None:
    """``reports/metrics/seed_spread.json`` read and checked, or None when absent.

    The file (written by a multi-seed run of the same configuration)::

        {"metric": "final target bits per byte",      # optional, what was measured
         "seeds": [1337, 1338, 1339],                 # optional
         "runs": {"fvt": {"mean": 1.845, "std": 0.004, "min": 1.840, "max": 1.850, "n": 3,
                          "values": [1.840, 1.845, 1.850]},     # optional; mean/std/min/max from it if missing
                  ...}}

    ``std`` is the sample standard deviation (ddof 1). Returns ``{"runs": {run: {mean, std, min, max, n,
    values}}, "seeds": [...], "metric": str, "path": str, "fingerprints": {run: fingerprint}, "seconds",
    "hardware", "checkpoints"}`` (the last four as recorded, or {} / None / []; which runs a fingerprint
    still covers is :func:`warmstart.evaluate.seed_spread.spread_for`'s to say); runs without a usable std are
    left out.
    """
    path = Path(reports_dir, *SEED_SPREAD_FILE)
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg})") from None
    runs = {str(k): e for k, v in (raw.get("runs") or {}).items() if (e := _spread_entry(v))}
    if not runs:
        raise ValueError(f"{path}: no run with a std (expected {{'runs': {{name: {{'mean', 'std', ...}}}}}})")
    return {
        "runs": runs,
        "seeds": list(raw.get("seeds") or []),
        "path": str(path),
        "metric": str(raw.get("metric") or "final target bits per byte"),
        "fingerprints": {str(k): v for k, v in (raw.get("fingerprints") or {}).items()},
        "seconds": raw.get("seconds"),
        "hardware": raw.get("hardware"),
        "checkpoints": list(raw.get("checkpoints") or []),
        "train_seconds": raw.get("train_seconds"),
    }


def pooled_std(spread: Mapping[str, Any]) -> float:
    """The median seed std over the runs measured (for a run whose own spread was not measured)."""
    return float(np.median([r["std"] for r in spread["runs"].values()]))


def within_seed_noise(
    a: str, b: str, value_a: float, value_b: float, spread: Mapping[str, Any], k: float = SEED_K
) -> dict[str, Any]:
    """Whether two single runs' values differ by no more than run-to-run noise.

    ``{"diff", "threshold", "within", "measured"}``: ``threshold = k * sqrt(sd_a^2 + sd_b^2)``; a run without
    its own spread uses :func:`pooled_std` (``measured`` lists the runs that had their own).
    """
    runs = spread["runs"]
    pooled = pooled_std(spread)
    sa, sb = (runs[a]["std"] if a in runs else pooled), (runs[b]["std"] if b in runs else pooled)
    thr = k * math.sqrt(sa * sa + sb * sb)
    diff = value_a - value_b
    return {
        "diff": diff,
        "threshold": thr,
        "within": bool(abs(diff) <= thr),
        "measured": [r for r in (a, b) if r in runs],
    }
