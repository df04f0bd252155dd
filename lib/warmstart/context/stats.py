"""Binomial intervals for exact-match accuracies (Wilson 1927, the score interval; :func:`warmstart.evaluate.intervals.wilson`)."""

from __future__ import annotations

from warmstart.evaluate.intervals import wilson as _wilson


def wilson(successes: int, n: int) -> tuple[float, float]:
    """Wilson score interval (95%) of ``successes / n``; ``(0, 1)`` when ``n == 0``.

    Unlike the normal approximation it stays inside [0, 1] and is not
    degenerate at 0 or n successes (0/400 gives [0, 0.0095]).
    """
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"successes must be in [0, n], got {successes} of {n}")
    return _wilson(successes, n) or (0.0, 1.0)


def accuracy_cell(successes: int, n: int) -> dict[str, float | int]:
    """``{"acc", "lo", "hi", "n", "correct"}``: an accuracy with its 95% Wilson interval."""
    lo, hi = wilson(successes, n)
    return {"acc": successes / n if n else float("nan"), "lo": lo, "hi": hi, "n": n, "correct": successes}
