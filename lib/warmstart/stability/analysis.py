"""Pure logic of the stability study: LR sensitivity and divergence.

Nothing here trains or imports torch; every function works on plain numbers, so it is tested on hand-made
ones. Which instability signal moved first before a loss spike is :mod:`warmstart.spikes.onset` (the spikes
stage reads it too); its names are imported here for the stability study's code.

**LR sensitivity** (Wortsman et al. 2023, arXiv 2309.14322, section 3): over
the learning rates ``eta`` of a sweep,
``E_eta[min(L(eta), L_init) - L*]`` with ``L*`` the best final loss of the
sweep; a non-finite final loss counts as ``L_init`` (the clip). Zero means
every learning rate of the sweep reached the best loss; a sweep where most
rates end no better than the start approaches ``L_init - L*``.
"""

from __future__ import annotations

from collections.abc import Mapping

from warmstart.spikes.onset import (  # noqa: F401  (the stability study reads them as analysis.*)
    SIGNALS,
    WORTSMAN_SIGNALS,
    finite,
    first_crossing,
    first_move,
    loss_onset,
    move_rate,
    moved_first,
    rounded,
    shared_events,
    summarise_signals,
    trajectory,
)


def lr_sensitivity(final_losses: Mapping[float, float | None], init_loss: float, best: float | None = None) -> float:
    """Wortsman's LR sensitivity: mean over the sweep of ``min(final, init_loss) - best``.

    ``final_losses``: learning rate -> final loss (None / NaN / inf count as ``init_loss``);
    ``best`` defaults to the sweep's minimum (clipped) final loss.
    """
    if not final_losses:
        raise ValueError("lr_sensitivity needs at least one learning rate")
    if not finite(init_loss):
        raise ValueError(f"init_loss must be finite, got {init_loss}")
    clipped = [min(float(v), init_loss) if finite(v) else float(init_loss) for v in final_losses.values()]
    if best is None:
        best = min(clipped)
    return float(sum(v - best for v in clipped) / len(clipped))


def sensitivity_reduction_pct(mitigated: float, baseline: float) -> float | None:
    """How much lower ``mitigated`` is than ``baseline``, in % of ``baseline`` (None if baseline is 0)."""
    return None if not baseline else 100.0 * (1.0 - mitigated / baseline)


def diverged(final_loss: float | None, init_loss: float, uniform_loss: float, nonfinite_steps: int = 0) -> bool:
    """A run diverged when a step's loss was non-finite, or its final loss is non-finite or no better than
    ``min(init_loss, uniform_loss)`` (the start, or a uniform guess over the vocabulary: a warm start whose
    vocabulary rows were never trained starts above the uniform loss)."""
    return bool(nonfinite_steps) or not finite(final_loss) or final_loss >= min(init_loss, uniform_loss)
