"""Streaming statistics shared by the offline detectors and ``OnlineDetector``:
the ``robust`` rule one record at a time (``_RobustCore``, described in
``warmstart.spikes.detectors``) and ZClip's EMA statistics (``_ZClipStat``).
Numpy only, so the trainer's online detector and ``detect`` run the same code."""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque

import numpy as np

from warmstart.spikes.params import MAD_TO_SIGMA, RobustParams

_NAN = float("nan")
_MIN_CENTER = 10  # residuals before deviations from their median are collected


class _RollingMedian:
    """Median of the valid (non-NaN) values among the last ``size`` pushed."""

    __slots__ = ("size", "q", "s")

    def __init__(self, size: int):
        self.size = size
        self.q: deque = deque()
        self.s: list[float] = []

    def push(self, v: float) -> None:
        if len(self.q) == self.size:
            old = self.q.popleft()
            if old == old:
                del self.s[bisect_left(self.s, old)]
        self.q.append(v)
        if v == v:
            insort(self.s, v)

    def count(self) -> int:
        return len(self.s)

    def median(self) -> float:
        s = self.s
        n = len(s)
        if not n:
            return _NAN
        h = n // 2
        return s[h] if n % 2 else (s[h - 1] + s[h]) / 2.0

    def clear(self) -> None:
        self.q.clear()
        self.s.clear()

    def state(self) -> list:
        return [None if v != v else v for v in self.q]

    def load(self, values: list) -> None:
        self.clear()
        for v in values:
            self.push(_NAN if v is None else float(v))


class _Stream:
    """Causal robust statistics of one signal.

    ``stats(x)`` gives, for a new value x and from the values before it only:
    y (log x in log mode), med (median of the last ``level_window`` values),
    level (its log), center and scale (median and floored 1.4826 MAD of the
    last ``window`` residuals y - level).  ``push`` then adds x; a masked
    push (inside a spike) adds the reference instead of x to the level window
    and nothing (a NaN placeholder) to the residual windows.
    """

    def __init__(self, p: RobustParams, log: bool):
        self.p, self.log = p, log
        self.lvl = _RollingMedian(p.level_window)
        self.res = _RollingMedian(p.window)
        self.dev = _RollingMedian(p.window)

    def stats(self, x: float) -> tuple[float, float, float, float, float]:
        p = self.p
        y = math.log(x) if self.log else x
        med = level = center = scale = _NAN
        if self.lvl.count() >= p.min_level:
            med = self.lvl.median()
            level = math.log(med) if self.log else med
            if self.res.count() >= p.min_scale:
                center = self.res.median()
            if self.dev.count() >= p.min_scale:
                floor = p.min_rel_scale if self.log else p.min_rel_scale * abs(med)
                scale = max(MAD_TO_SIGMA * self.dev.median(), floor)
        return y, level, center, scale, med

    def push(self, x: float, y: float, level: float, masked: float | None = None) -> None:
        if masked is not None:
            self.lvl.push(masked)
            self.res.push(_NAN)
            self.dev.push(_NAN)
            return
        self.lvl.push(x)
        if level == level:
            r = y - level
            self.res.push(r)
            # deviations from the running center start after a few residuals (not min_scale),
            # so the detector is armed ~min_level + min_scale + 10 records after a restart
            self.dev.push(abs(r - self.res.median()) if self.res.count() >= _MIN_CENTER else _NAN)
        else:
            self.res.push(_NAN)
            self.dev.push(_NAN)

    def reset(self) -> None:
        self.lvl.clear()
        self.res.clear()
        self.dev.clear()

    def state(self) -> dict:
        return {"lvl": self.lvl.state(), "res": self.res.state(), "dev": self.dev.state()}

    def load(self, st: dict) -> None:
        self.lvl.load(st["lvl"])
        self.res.load(st["res"])
        self.dev.load(st["dev"])


class _Tracker:
    """An active spike: its frozen reference, peak and last flagged record."""

    def __init__(self, z_exit: float, patience: int, shift_check: int | None, shift_ratio: float):
        self.z_exit = z_exit
        self.patience = patience
        self.shift_check = shift_check
        self.shift_ratio = shift_ratio
        self.active: dict | None = None

    def start(self, i: int, step: int, z: float, ref: float, sc: float) -> None:
        self.active = {
            "start": i,
            "start_step": step,
            "ref": ref,
            "sc": sc,
            "peak": i,
            "peak_step": step,
            "peakz": z,
            "last": i,
            "last_step": step,
            "below": 0,
            "n": 1,
            "zs": [z],
        }

    def step(self, i: int, step: int, y: float) -> tuple[bool, dict | None, bool]:
        """Feed the next record (index i); returns (flagged, event if it ended, level_shift)."""
        a = self.active
        z = (y - a["ref"]) / a["sc"]
        a["zs"].append(z)
        flagged = z >= self.z_exit
        if flagged:
            a["last"], a["last_step"] = i, step
            a["below"] = 0
            a["n"] += 1
            if z > a["peakz"]:
                a["peak"], a["peak_step"], a["peakz"] = i, step, z
        else:
            a["below"] += 1
            if a["below"] >= self.patience:
                self.active = None
                return False, a, False
        n = len(a["zs"])
        if self.shift_check and n % self.shift_check == 0:
            h = self.shift_check // 2
            recent = float(np.median(a["zs"][-h:]))
            before = float(np.median(a["zs"][-2 * h : -h]))
            if recent >= self.z_exit and recent >= self.shift_ratio * before:
                self.active = None
                return flagged, a, True
        return flagged, None, False

    def close(self) -> dict | None:
        a, self.active = self.active, None
        return a


class _RobustCore:
    """The ``robust`` rule, one record at a time.  ``detect`` and
    ``OnlineDetector`` both run this, so they agree by construction."""

    def __init__(self, p: RobustParams, log: bool):
        self.p, self.log = p, log
        self.loss = _Stream(p, log)
        self.grad = _Stream(p, True)
        self.tracker = _Tracker(p.z_exit, p.patience, p.shift_check, p.shift_ratio)
        self.prev: list | None = None  # previous record [i, step, z, ref, sc, x] when z >= z_pair
        self.gprev = _NAN  # previous record's grad-norm z
        self.buffer: list[float] = []  # raw losses of the active spike (level-shift replay)
        self.last: tuple = (_NAN,) * 6  # y, level, center, scale, med, grad z of the last record

    def reset(self) -> dict | None:
        """A hot-swap: close any active spike and restart every window."""
        ev = self.tracker.close()
        self.loss.reset()
        self.grad.reset()
        self.prev, self.gprev, self.buffer = None, _NAN, []
        return ev

    def _mask(self, ref: float) -> float:
        return math.exp(ref) if self.log else ref

    def update(self, i: int, step: int, x: float, g: float | None = None, armed: bool = True):
        """Feed record number i; returns (flagged, ended event or None, level-shift event or None)."""
        p = self.p
        y, level, center, scale, med = self.loss.stats(x)
        gz = _NAN
        if g is not None and g > 0 and math.isfinite(g):
            gy, gl, gc, gs, _ = self.grad.stats(g)
            gz = (gy - gl - gc) / gs if gs > 0 and gc == gc else _NAN
            gmask = p.mask_events and p.grad_enter is not None and gz >= p.grad_enter
            self.grad.push(g, gy, gl, math.exp(gl + gc) if gmask else None)
        self.last = (y, level, center, scale, med, gz)
        tr = self.tracker
        flagged, ended, shift = False, None, False
        if tr.active is None:
            z, ref = _NAN, _NAN
            if armed and scale > 0 and center == center:
                ref = level + center
                z = (y - ref) / scale
                gmax = max(gz if gz == gz else -math.inf, self.gprev if self.gprev == self.gprev else -math.inf)
                if z >= p.z_enter or (p.grad_enter is not None and z >= p.z_grad and gmax >= p.grad_enter):
                    tr.start(i, step, z, ref, scale)
                    self.buffer = [x]
                    flagged = True
                elif p.z_pair is not None and z >= p.z_pair and self.prev is not None:
                    pi, pstep, pz, pref, psc, px = self.prev
                    tr.start(pi, pstep, pz, pref, psc)  # the spike started at the previous record
                    self.buffer = [px, x]
                    tr.step(i, step, y)
                    flagged = True
            self.prev = [i, step, z, ref, scale, x] if p.z_pair is not None and z >= p.z_pair else None
        else:
            self.buffer.append(x)
            flagged, ended, shift = tr.step(i, step, y)
            self.prev = None
        self.gprev = gz
        if shift:  # a persistent level shift: restart the windows at its start
            self.loss.reset()
            for v in self.buffer:
                yy, lv, *_ = self.loss.stats(v)
                self.loss.push(v, yy, lv)
            self.buffer = []
            return flagged, None, ended
        if ended is not None:
            self.buffer = []
        masked = None
        if flagged and p.mask_events and tr.active is not None:
            masked = self._mask(tr.active["ref"])
        self.loss.push(x, y, level, masked)
        return flagged, ended, None

    def state(self) -> dict:
        a = self.tracker.active
        return {
            "loss": self.loss.state(),
            "grad": self.grad.state(),
            "active": None if a is None else {k: (list(v) if isinstance(v, list) else v) for k, v in a.items()},
            "prev": None
            if self.prev is None
            else [None if (isinstance(v, float) and v != v) else v for v in self.prev],
            "gprev": None if self.gprev != self.gprev else self.gprev,
            "buffer": list(self.buffer),
        }

    def load(self, st: dict) -> None:
        self.loss.load(st["loss"])
        self.grad.load(st["grad"])
        a = st["active"]
        self.tracker.active = None if a is None else {k: (list(v) if isinstance(v, list) else v) for k, v in a.items()}
        self.prev = None if st["prev"] is None else [(_NAN if v is None else v) for v in st["prev"]]
        self.gprev = _NAN if st["gprev"] is None else float(st["gprev"])
        self.buffer = [float(v) for v in st["buffer"]]


class _ZClipStat:
    """ZClip's EMA statistics for one signal (see ``warmstart.spikes.detectors``)."""

    def __init__(self, alpha: float = 0.97, z_thresh: float = 2.5, warmup_steps: int = 25, eps: float = 1e-6):
        self.alpha, self.z_thresh, self.warmup_steps, self.eps = alpha, z_thresh, warmup_steps, eps
        self.buffer: list[float] = []
        self.mean: float | None = None
        self.var: float | None = None

    def update(self, v: float) -> bool:
        if self.mean is None:
            self.buffer.append(v)
            if len(self.buffer) >= self.warmup_steps:
                m = sum(self.buffer) / len(self.buffer)
                self.mean, self.var = m, sum((b - m) ** 2 for b in self.buffer) / len(self.buffer)
                self.buffer = []
            return False
        std = self.var**0.5
        z = (v - self.mean) / (std + self.eps)
        flagged = z > self.z_thresh
        eff = self.mean + self.z_thresh * std / (z / self.z_thresh) if flagged else v
        self.mean = self.alpha * self.mean + (1 - self.alpha) * eff
        self.var = self.alpha * self.var + (1 - self.alpha) * (eff - self.mean) ** 2
        return flagged

    def state_dict(self) -> dict:
        return {"buffer": list(self.buffer), "mean": self.mean, "var": self.var}

    def load_state_dict(self, st: dict) -> None:
        self.buffer, self.mean, self.var = list(st["buffer"]), st["mean"], st["var"]


_ZCLIP_KEYS = ("alpha", "z_thresh", "warmup_steps", "eps")
