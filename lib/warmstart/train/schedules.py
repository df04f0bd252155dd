"""Learning-rate schedules and batch-size ramps of the trainer (:mod:`warmstart.train.loop`)."""

from __future__ import annotations

import math


def lr_multiplier(
    step: int,
    steps: int,
    schedule: str = "cosine",
    warmup_steps: int = 0,
    decay_steps: int = 0,
    min_lr_ratio: float = 0.1,
) -> float:
    """LR factor for the 1-based update ``step`` of ``steps``.

    Warmup: ``step / warmup_steps`` (peak reached at the last warmup step).
    ``constant``: 1 after warmup. ``cosine``: from 1 down to ``min_lr_ratio``
    with ``progress = (step - warmup) / (steps - warmup)``, so the last step
    runs exactly at the floor (CSMPT alpha). ``wsd``: 1 until the last
    ``decay_steps`` steps, then linear to ``min_lr_ratio`` at the last step.
    """
    if step <= warmup_steps:
        return step / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "wsd":
        start = steps - decay_steps
        if step <= start:
            return 1.0
        return min_lr_ratio + (1.0 - min_lr_ratio) * (1.0 - min(1.0, (step - start) / decay_steps))
    raise ValueError(f"unknown lr_schedule {schedule!r}")


def ramp_batch_rows(consumed_samples: int, start: int, increment: int, ramp_samples: int, final: int) -> int:
    """Rows in the next global batch under a Megatron-style ramp-up (integer-exact).

    ``(final - start) / increment`` increments are spread evenly over
    ``ramp_samples``: ``start + floor(consumed * n_incr / ramp_samples) * increment``, capped at ``final``.
    """
    if start >= final:
        return final
    n_incr = (final - start) // increment
    return min(final, start + consumed_samples * n_incr // ramp_samples * increment)
