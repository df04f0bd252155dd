"""Binomial intervals for exact-match accuracies (Wilson 1927, the score interval)."""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # the 97.5% standard normal quantile


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default); ``(0, 1)`` when ``n == 0``.

    Unlike the normal approximation it stays inside [0, 1] and is not
    degenerate at 0 or n successes (0/400 gives [0, 0.0095]).
    """
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"successes must be in [0, n], got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def accuracy_cell(successes: int, n: int) -> dict[str, float | int]:
    """``{"acc", "lo", "hi", "n", "correct"}``: an accuracy with its 95% Wilson interval."""
    lo, hi = wilson(successes, n)
    return {"acc": successes / n if n else float("nan"), "lo": lo, "hi": hi, "n": n, "correct": successes}
