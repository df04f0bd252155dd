"""The ``spikes`` section, and the ``robust`` spike detector's parameters and the detector names.

:class:`Spikes` validates ``spikes.params`` with :class:`RobustParams`. Both are part of the params schema, so
they live here and import nothing of :mod:`warmstart.spikes`: neither the schema nor the stages that read params
depend on the detectors (:mod:`warmstart.spikes.params` re-exports ``RobustParams`` and ``METHODS`` for the spike
modules).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from pydantic import Field, model_validator

from warmstart.config.sections import _Section

METHODS = ("robust", "olmo2", "mad", "zclip")


@dataclass
class RobustParams:
    """Parameters of the ``robust`` method (defaults tuned on synthetic seed 0,
    see ``warmstart.spikes.bench``).  Windows count log records."""

    level_window: int = 25  # trailing median that defines the local level
    window: int = 200  # trailing window of residuals for center and scale
    min_level: int = 10  # records needed before the level is defined
    min_scale: int = 30  # residuals needed before center / scale are defined
    z_enter: float = 5.0  # a single record this far above the reference starts a spike
    z_pair: float | None = 3.5  # ... or two consecutive records this far (None: off)
    z_grad: float = 4.0  # ... or one record this far with a grad-norm co-spike
    grad_enter: float | None = 6.0  # grad-norm robust z of a co-spike (this or previous record; None: off)
    z_exit: float = 2.0  # an active spike lasts while records stay this far above its reference
    patience: int = 3  # ... and ends after this many consecutive records below
    merge_gap: int = 10  # a spike starting <= this many records after the previous one ends extends it
    shift_check: int = 100  # every this many records of a spike, test for a level shift
    shift_ratio: float = 0.7  # not decaying: median z of the latest half >= ratio x the half before
    min_rel_scale: float = 1e-3  # floor of the scale (log-loss units: 0.1 % of the loss)
    recovery_band: float = 1.0  # recovered: within this many scale units of the reference
    mask_events: bool = True  # keep flagged records out of the reference windows
    log: bool | None = None  # None: log-loss when every loss is > 0

    @classmethod
    def from_kwargs(cls, kw: dict) -> RobustParams:
        names = {f.name for f in fields(cls)}
        unknown = set(kw) - names
        if unknown:
            raise TypeError(
                f"unknown robust parameter(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(names))}"
            )
        p = cls(**kw)
        p.validate()
        return p

    def validate(self) -> None:
        for name in ("level_window", "window", "min_level", "min_scale", "patience"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"robust parameter {name} must be >= 1, got {getattr(self, name)}")
        if self.min_level > self.level_window:
            raise ValueError(f"min_level ({self.min_level}) must be <= level_window ({self.level_window})")
        if self.min_scale > self.window:
            raise ValueError(f"min_scale ({self.min_scale}) must be <= window ({self.window})")
        if not self.z_exit < self.z_enter:
            raise ValueError(f"z_exit ({self.z_exit}) must be < z_enter ({self.z_enter})")
        if self.shift_check is not None and self.shift_check < 2:
            raise ValueError(f"shift_check must be >= 2 (or None), got {self.shift_check}")
        if not self.min_rel_scale > 0:
            raise ValueError(f"min_rel_scale must be > 0, got {self.min_rel_scale}")


class Spikes(_Section):
    method: Literal["robust", "olmo2", "mad", "zclip"] = "robust"
    warmup: int | Literal["auto"] = "auto"
    # detect(**params): method parameters (robust: RobustParams fields); windows count log records
    params: dict[str, float | int | bool | None] = {"level_window": 10, "min_level": 5, "window": 100, "min_scale": 20}
    score_window: int = Field(
        default=100, ge=10
    )  # OLMo 2 spike score: previous records in the window (1000 in the paper)
    score_min_periods: int = Field(default=20, ge=2)  # records needed before a value counts

    @model_validator(mode="after")
    def _check_params(self) -> Spikes:
        if self.score_min_periods > self.score_window:
            raise ValueError(
                f"score_min_periods ({self.score_min_periods}) must be <= score_window ({self.score_window})"
            )
        if self.method == "robust":
            try:
                RobustParams.from_kwargs(dict(self.params))
            except (TypeError, ValueError) as e:
                raise ValueError(f"params: {e}") from None
        return self
