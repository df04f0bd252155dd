"""The streaming detector the trainer's spike mitigation runs (``OnlineDetector``)."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from warmstart.spikes.core import _ZCLIP_KEYS, _RobustCore, _ZClipStat
from warmstart.spikes.params import RobustParams, SpikeLogError

__all__ = ["OnlineDetector"]


class OnlineDetector:
    """Streaming spike detector for the trainer's mitigation (roll back and
    skip batches when it fires).

    ``update(step, loss, grad_norm=None)`` returns True when the record is a
    spike by the same rule as ``detect`` with the same method and parameters,
    using only the records already seen: True from a spike's onset for every
    record that stays flagged.  (A spike confirmed by two consecutive records
    -- ``z_pair`` -- fires on the second; ``detect`` reports the first as its
    start.)  Pass ``corpus=`` to ``update`` (or call ``hotswap()``) so that a
    corpus hot-swap restarts the reference windows, and ``warmup`` as the
    number of warm-up steps (the online form cannot look ahead for the end of
    the lr ramp).

    The robust method runs the very code ``detect`` runs.  Its one visible
    difference: a persistent level shift is recognised only ``shift_check``
    records after it starts, so the online form returns True for those
    records; ``detect`` does not report them as a spike.  A non-finite loss
    returns True and does not enter the statistics.

    ``state_dict()`` / ``load_state_dict()`` round-trip a JSON-serialisable
    state to save with a checkpoint.  Methods: robust, olmo2, zclip (``mad``
    is a global, offline-only rule).
    """

    def __init__(self, method: str = "robust", *, warmup: int = 0, **kw: Any):
        if method not in ("robust", "olmo2", "zclip"):
            raise ValueError(
                f"OnlineDetector supports robust, olmo2 and zclip, not {method!r}"
                + (" (mad is a global rule over the whole run)" if method == "mad" else "")
            )
        if int(warmup) < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        self.method = method
        self.warmup = int(warmup)
        self.kw = dict(kw)
        kw = dict(kw)
        if method == "robust":
            self.p = RobustParams.from_kwargs(kw)
        else:
            self.p = RobustParams.from_kwargs({k: kw.pop(k) for k in ("patience",) if k in kw})
            if method == "olmo2":
                self.o_window = int(kw.pop("window", 1000))
                self.o_sigma = float(kw.pop("n_sigma", 7.0))
                self.o_min = int(kw.pop("min_periods", 100))
            else:
                self.z_signal = kw.pop("signal", "loss")
                self.z_kw = {k: kw.pop(k) for k in _ZCLIP_KEYS if k in kw}
            if kw:
                raise TypeError(f"unknown {method} parameter(s): {', '.join(sorted(kw))}")
        self._init_state()

    def _init_state(self) -> None:
        self.first_step: int | None = None
        self.n = 0
        self.corpus: str | None = None
        self._events: list[dict] = []  # ended spikes
        self.level_shifts: list[int] = []
        self.core = _RobustCore(self.p, self.p.log is not False) if self.method == "robust" else None
        if self.method == "olmo2":
            self.hist: deque = deque(maxlen=self.o_window)
        elif self.method == "zclip":
            self.zl, self.zg = _ZClipStat(**self.z_kw), _ZClipStat(**self.z_kw)
        self.run: dict | None = None  # olmo2 / zclip grouping of flagged records

    @property
    def events(self) -> list[dict]:
        """Ended spikes: ``start_step``, ``peak_step``, ``end_step``, ``magnitude``."""
        return [{k: v for k, v in e.items() if not k.startswith("_")} for e in self._events]

    @property
    def in_spike(self) -> bool:
        """True while a spike is active."""
        return (self.core.tracker.active is not None) if self.core else self.run is not None

    @property
    def active_start(self) -> int | None:
        """First step of the active spike (None when there is none)."""
        if self.core is not None:
            a = self.core.tracker.active
            return None if a is None else int(a["start_step"])
        return None if self.run is None else int(self.run["start"])

    def hotswap(self) -> None:
        """The corpus changed: restart the reference windows (robust)."""
        if self.core is not None:
            ev = self.core.reset()
            if ev is not None:
                self._record(ev)

    def update(self, step: int, loss: float, grad_norm: float | None = None, *, corpus: str | None = None) -> bool:
        step, loss = int(step), float(loss)
        if self.first_step is None:
            self.first_step = step
        if corpus is not None:
            if self.corpus is not None and corpus != self.corpus:
                self.hotswap()
            self.corpus = str(corpus)
        if not math.isfinite(loss):
            return True
        self.n += 1  # records seen (the robust core counts windows and gaps in records)
        armed = step >= self.first_step + self.warmup
        g = None if grad_norm is None else float(grad_norm)
        if self.core is not None:
            if self.core.log and loss <= 0:
                raise SpikeLogError(f"step {step}: loss {loss} <= 0; create the detector with log=False")
            flagged, ended, shift = self.core.update(self.n, step, loss, g, armed)
            if ended is not None:
                self._record(ended)
            if shift is not None:
                self.level_shifts.append(int(shift["start_step"]))
            return bool(flagged)
        if self.method == "olmo2":
            flagged = False
            if len(self.hist) >= max(self.o_min, 2):
                h = np.fromiter(self.hist, float)
                flagged = loss - h.mean() >= self.o_sigma * h.std(ddof=1)
            self.hist.append(loss)
        else:
            fl = self.zl.update(loss) if self.z_signal in ("loss", "either") else False
            fg = False
            if self.z_signal in ("grad_norm", "either") and g is not None and math.isfinite(g):
                fg = self.zg.update(g)
            flagged = fl or fg
        return self._group(step, loss, bool(flagged and armed))

    def state_dict(self) -> dict:
        st: dict[str, Any] = {
            "method": self.method,
            "warmup": self.warmup,
            "kw": dict(self.kw),
            "first_step": self.first_step,
            "n": self.n,
            "corpus": self.corpus,
            "events": [dict(e) for e in self._events],
            "level_shifts": list(self.level_shifts),
            "run": dict(self.run) if self.run else None,
        }
        if self.core is not None:
            st["core"] = self.core.state()
        elif self.method == "olmo2":
            st["hist"] = list(self.hist)
        else:
            st["zl"], st["zg"] = self.zl.state_dict(), self.zg.state_dict()
        return st

    def load_state_dict(self, st: dict) -> None:
        if st.get("method") != self.method:
            raise ValueError(f"state is for method {st.get('method')!r}, this detector runs {self.method!r}")
        if st.get("kw", {}) != self.kw:
            raise ValueError(f"state was saved with parameters {st.get('kw')}, this detector has {self.kw}")
        self._init_state()
        self.warmup = int(st["warmup"])
        self.first_step, self.n, self.corpus = st["first_step"], int(st["n"]), st["corpus"]
        self._events = [dict(e) for e in st["events"]]
        self.level_shifts = list(st["level_shifts"])
        self.run = dict(st["run"]) if st["run"] else None
        if self.core is not None:
            self.core.load(st["core"])
        elif self.method == "olmo2":
            self.hist.extend(float(v) for v in st["hist"])
        else:
            self.zl.load_state_dict(st["zl"])
            self.zg.load_state_dict(st["zg"])

    def _record(self, ev: dict) -> None:
        """Keep an ended spike; a re-trigger on the tail extends the previous one (as in ``detect``)."""
        last = self._events[-1] if self._events else None
        if last is not None and last.get("_last") is not None and ev["start"] - last["_last"] <= self.p.merge_gap:
            last["end_step"], last["_last"] = int(ev["last_step"]), int(ev["last"])
            z = float(ev["peakz"])  # against its own reference: approximate
            if z > last["magnitude"]:
                last["peak_step"], last["magnitude"] = int(ev["peak_step"]), z
            return
        self._events.append(
            {
                "start_step": int(ev["start_step"]),
                "peak_step": int(ev["peak_step"]),
                "end_step": int(ev["last_step"]),
                "magnitude": float(ev["peakz"]),
                "_last": int(ev["last"]),
            }
        )

    def _group(self, step: int, loss: float, flagged: bool) -> bool:
        r = self.run
        if flagged:
            if r is None:
                self.run = {"start": step, "peak": step, "peak_loss": loss, "last": step, "below": 0}
            else:
                r["last"], r["below"] = step, 0
                if loss > r["peak_loss"]:
                    r["peak"], r["peak_loss"] = step, loss
        elif r is not None:
            r["below"] += 1
            if r["below"] >= self.p.patience:
                self._events.append(
                    {"start_step": r["start"], "peak_step": r["peak"], "end_step": r["last"], "magnitude": None}
                )
                self.run = None
        return flagged
