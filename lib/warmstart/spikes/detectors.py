"""Offline spike detectors: ``detect`` (four methods), the events it returns
and OLMo 2's spike score (``spike_score``).

Methods (``detect(..., method=...)``):

``robust`` (default; parameters in ``RobustParams``)
    Causal (a decision at record t uses records before t only), on log-loss,
    so every threshold is relative.  For each record:

    * level = log of the median of the previous ``level_window`` (25) losses:
      a robust local trend that follows lr-schedule kinks and slow drifts;
    * r = log loss - level, the one-step-ahead residual;
    * center, scale = median and 1.4826 x MAD of the previous ``window`` (200)
      residuals.  Subtracting ``center`` removes the lag of the trailing median
      on a falling or rising curve; ``scale`` is the robust noise level,
      floored at ``min_rel_scale`` (0.1 %: a noise-free log has a finite z);
    * z = (r - center) / scale, the record's robust z.

    A spike starts at a record with z >= ``z_enter`` (5), or at the first of
    two consecutive records with z >= ``z_pair`` (3.5), or at a record with
    z >= ``z_grad`` (4) when the grad norm's own robust z is >= ``grad_enter``
    (6) at that record or the one before.  Its reference (level + center,
    scale) is then frozen: the spike lasts while records stay >= ``z_exit`` (2)
    reference units above it and ends after ``patience`` (3) records below;
    flagged records are kept out of the windows (the level window gets the
    reference instead), so a spike does not inflate the noise estimate that
    judges the next one.  A new spike that starts within ``merge_gap`` (10)
    records of the previous one's end is the same spike's tail.

    Warm-up is ignored (``warmup="auto"``: steps before the learning rate
    first reaches 95 % of its maximum; or a number of steps).  Hot-swaps (a
    change of the ``corpus`` field, or steps passed explicitly) restart every
    window.  A spike that after ``shift_check`` (100) records is still elevated
    and no longer decaying (median z of its latest 50 records >= ``z_exit`` and
    >= ``shift_ratio`` (0.7) x the median of the 50 before) is a persistent
    level shift, not a spike: it is not reported and the windows restart at
    its start.

    Defaults were tuned on synthetic seed 0 and checked on held-out seeds
    (``warmstart.spikes.bench``).  Known weakness: the thresholds assume
    roughly Gaussian noise of the log-loss; with heavy-tailed (Student-t 5)
    noise the false-alarm rate is ~12 per 10k records (raise ``z_enter``).

``olmo2``
    OLMo 2's rule: loss >= mean + 7 std of the previous 1,000 records
    (``min_periods`` 100, so shorter runs are covered).

``mad``
    Plain global rule: (loss - median) / (1.4826 MAD) >= 3.5 over the whole run.

``zclip``
    ZClip's statistics (Kumar et al. 2025; github.com/bluorion-com/ZClip):
    EMA mean and variance (alpha 0.97) initialised from the first 25 values,
    z = (x - mean) / (std + 1e-6), a record is flagged when z > 2.5, and the
    EMA is updated with ZClip's "adaptive_scaling" value mean + z_thresh^2 std / z
    on flagged records.  On the loss (``signal="loss"``), the grad norm, or
    either.

All methods share the warm-up rule and the event description; the
alternatives group flagged records into events (an event ends after
``patience`` unflagged records) and describe them with the robust reference
at their start, so events of different methods are comparable.

Every event (``SpikeEvent``) has ``start_step`` (first flagged record),
``peak_step`` (highest z), ``end_step`` (last flagged record), ``magnitude``
(robust z at the peak), ``delta_loss`` (peak loss - reference loss, the
reference being median(previous losses) x exp(center) at the start),
``recovery_steps`` (steps from the peak to the first record within
``recovery_band`` (1) scale units of the reference, i.e. within ~1 sigma of
the pre-spike level; None if that never happens before the log or segment
ends), ``grad_norm_z`` (robust z of log grad norm at the peak), ``lr`` at the
peak and ``nearest_hotswap``.

OLMo 2 spike score (``spike_score``): *the percentage of values (of the loss,
or of the gradient norm) that are at least 7 standard deviations away from the
rolling average of the previous 1,000 values.*  That is our reading of "2 OLMo
2 Furious" (OLMo et al., 2025, the training-stability section); the paper's
exact text could not be checked from this environment.  Implementation
choices (ours): the window holds the 1,000 records before the current one,
std has ddof=1, only records with a full window count (``min_periods`` =
window; lower it for short runs), and both directions count ("away from").

Windows count log *records*, not optimizer steps: if the trainer logs every k
steps, ``window=200`` spans 200 k steps.  Reported distances
(``recovery_steps``) are in steps.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from warmstart.spikes.core import _ZCLIP_KEYS, _RobustCore, _ZClipStat
from warmstart.spikes.logs import _check_frame, hotswap_steps, load_log, resolve_warmup
from warmstart.spikes.params import MAD_TO_SIGMA, METHODS, RobustParams, SpikeLogError

__all__ = ["SpikeEvent", "SpikeEvents", "events_frame", "detect", "spike_score"]


@dataclass
class SpikeEvent:
    """One spike.  Steps are the log's step numbers; z values are robust
    (1.4826 MAD) units of the log-loss residual; ``delta_loss`` and
    ``reference_loss`` are in loss units."""

    start_step: int
    peak_step: int
    end_step: int
    magnitude: float | None  # robust z of the loss at the peak
    delta_loss: float | None  # peak loss - pre-spike reference loss
    recovery_steps: int | None  # peak -> first record within `recovery_band` of the reference
    grad_norm_z: float | None  # robust z of log grad norm at the peak
    lr: float | None  # learning rate at the peak
    nearest_hotswap: int | None  # nearest hot-swap step to the start
    method: str = "robust"
    peak_loss: float = math.nan
    reference_loss: float | None = None
    n_flagged: int = 0  # flagged records in the event
    grad_norm_max_z: float | None = None  # max robust z of grad norm from start-2 to end
    open: bool = False  # the log ends inside the event
    n_skipped: int = 0  # records in the event the trainer marked ``skipped``

    def to_dict(self) -> dict:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = None
        return d


class SpikeEvents(list):
    """The events ``detect`` returns: a plain list of ``SpikeEvent`` with what
    shaped it -- ``level_shifts`` (steps where a persistent level shift was
    recognised and the reference restarted; not spikes), ``hotswaps`` (the
    hot-swap steps used), ``armed_from`` (the first step after warm-up) and
    ``mirror``, a noise check: ``below`` counts armed records whose robust z
    is <= -z_enter.  A loss does not plunge, so these are noise (or a sudden
    drop: an unannounced swap to an easier corpus, an lr cut); with symmetric
    noise about as many upward false alarms are expected among the events
    (``per_10k`` normalises by the ``records`` checked).  Many of them mean
    heavy-tailed noise: raise ``z_enter``."""

    def __init__(
        self, events=(), *, level_shifts=(), hotswaps=(), armed_from=None, method="robust", mirror: dict | None = None
    ):
        super().__init__(events)
        self.level_shifts = list(level_shifts)
        self.hotswaps = list(hotswaps)
        self.armed_from = armed_from
        self.method = method
        self.mirror = mirror or {}


def events_frame(events: Sequence[SpikeEvent]) -> pd.DataFrame:
    """Events as a DataFrame (one row per event)."""
    cols = [f.name for f in fields(SpikeEvent)]
    return pd.DataFrame([e.to_dict() for e in events], columns=cols)


def _use_log(x: np.ndarray, log: bool | None) -> bool:
    if log is None:
        if (x > 0).all():
            return True
        warnings.warn("some losses are <= 0: detecting on the raw loss, not log-loss", stacklevel=3)
        return False
    if log and not (x > 0).all():
        raise SpikeLogError("log=True needs every loss to be > 0")
    return bool(log)


def _run_core(
    steps: np.ndarray, x: np.ndarray, g: np.ndarray | None, starts: set[int], arm: int, p: RobustParams, log: bool
):
    """Run ``_RobustCore`` over a log: events (dicts keyed by record index),
    level-shift starts and the per-record statistics."""
    n = len(x)
    core = _RobustCore(p, log)
    stats = np.full((n, 6), np.nan)
    events, shifts = [], []
    for i in range(n):
        if i in starts and i:
            ev = core.reset()
            if ev is not None:
                events.append(ev)
        gi = None if g is None else float(g[i])
        _, ended, shift = core.update(i, int(steps[i]), float(x[i]), gi, i >= arm)
        stats[i] = core.last
        if ended is not None:
            events.append(ended)
        if shift is not None:
            shifts.append(shift["start"])
    ev = core.tracker.close()
    if ev is not None:
        ev["open"] = True
        events.append(ev)
    y = stats[:, 0]
    merged: list[dict] = []
    for ev in events:
        if merged and ev["start"] - merged[-1]["last"] <= p.merge_gap:
            m = merged[-1]  # a re-trigger on the tail: one spike, measured against the first reference
            m["last"], m["n"], m["open"] = ev["last"], m["n"] + ev["n"], ev.get("open", False)
            z = (y[ev["peak"]] - m["ref"]) / m["sc"]
            if z > m["peakz"]:
                m["peak"], m["peakz"] = ev["peak"], z
            continue
        merged.append(ev)
    for ev in merged:
        ev["end"] = ev["last"]
    return merged, shifts, stats


def _describe(df, raw_events, method, p, log, stats, hotswaps, boundaries) -> list[SpikeEvent]:
    steps = df["step"].to_numpy()
    x = df["loss"].to_numpy(dtype=float)
    y, level, center, scale, med, gzs = (stats[:, k] for k in range(6))
    lr = df["lr"].to_numpy(dtype=float) if "lr" in df else None
    skipped = df["skipped"].to_numpy(dtype=bool) if "skipped" in df else None
    hs = np.asarray(hotswaps, dtype=np.int64)
    bnd = np.asarray(sorted(boundaries), dtype=np.int64)
    out = []
    for ev in raw_events:
        s, pk, e = ev["start"], ev["peak"], ev["end"]
        # robust events carry their frozen reference; others use the robust stats at their start
        ref = ev.get("ref", level[s] + center[s])
        sc = ev.get("sc", scale[s])
        mag = delta = ref_loss = rec = None
        if sc > 0 and math.isfinite(ref):
            mag = float((y[pk] - ref) / sc)
            # median x exp(center): exactly the flat value on a noise-free log
            ref_loss = float(med[s] * math.exp(center[s])) if log else float(med[s] + center[s])
            delta = float(x[pk] - ref_loss)
            stop = int(bnd[np.searchsorted(bnd, pk, side="right")])
            zz = (y[pk + 1 : stop] - ref) / sc
            hit = np.flatnonzero(zz <= p.recovery_band)
            rec = int(steps[pk + 1 + hit[0]] - steps[pk]) if hit.size else None
        gz = float(gzs[pk]) if np.isfinite(gzs[pk]) else None
        w = gzs[max(s - 2, 0) : e + 1]
        w = w[np.isfinite(w)]
        gmax = float(w.max()) if w.size else None
        near = int(hs[np.argmin(np.abs(hs - steps[s]))]) if hs.size else None
        lr_pk = float(lr[pk]) if lr is not None and np.isfinite(lr[pk]) else None
        out.append(
            SpikeEvent(
                start_step=int(steps[s]),
                peak_step=int(steps[pk]),
                end_step=int(steps[e]),
                magnitude=mag,
                delta_loss=delta,
                recovery_steps=rec,
                grad_norm_z=gz,
                lr=lr_pk,
                nearest_hotswap=near,
                method=method,
                peak_loss=float(x[pk]),
                reference_loss=ref_loss,
                n_flagged=int(ev["n"]),
                grad_norm_max_z=gmax,
                open=bool(ev.get("open", False)),
                n_skipped=int(skipped[s : e + 1].sum()) if skipped is not None else 0,
            )
        )
    return out


def _group_flags(flags: np.ndarray, patience: int, loss: np.ndarray) -> list[dict]:
    """Group flagged records: an event ends after ``patience`` unflagged ones."""
    idx = np.flatnonzero(flags)
    if not idx.size:
        return []
    runs = []
    start = prev = int(idx[0])
    n = 1
    for i in idx[1:]:
        i = int(i)
        if i - prev > patience:
            runs.append((start, prev, n))
            start, n = i, 0
        prev = i
        n += 1
    runs.append((start, prev, n))
    out = []
    for s, e, n in runs:
        pk = s + int(np.argmax(loss[s : e + 1]))
        out.append({"start": s, "peak": pk, "end": e, "n": n, "open": e + patience >= len(flags)})
    return out


def _olmo2_flags(
    x: np.ndarray, window: int = 1000, n_sigma: float = 7.0, min_periods: int = 100, two_sided: bool = False
) -> np.ndarray:
    s = pd.Series(x, dtype=float)
    roll = s.rolling(window, min_periods=min_periods)
    mean = roll.mean().shift(1).to_numpy()
    std = roll.std(ddof=1).shift(1).to_numpy()
    dev = x - mean
    if two_sided:
        dev = np.abs(dev)
    with np.errstate(invalid="ignore"):
        return dev >= n_sigma * std


def _mad_flags(x: np.ndarray, threshold: float = 3.5) -> np.ndarray:
    med = np.median(x)
    mad = np.median(np.abs(x - med)) * MAD_TO_SIGMA
    if mad == 0:
        return x > med
    return (x - med) / mad >= threshold


def _zclip_flags(x: np.ndarray, g: np.ndarray | None, signal: str, **kw) -> np.ndarray:
    if signal not in ("loss", "grad_norm", "either"):
        raise ValueError(f"zclip signal must be 'loss', 'grad_norm' or 'either', got {signal!r}")
    if signal != "loss" and g is None:
        raise SpikeLogError(f"zclip signal={signal!r} needs a `grad_norm` column")
    flags = np.zeros(len(x), dtype=bool)
    zl, zg = _ZClipStat(**kw), _ZClipStat(**kw)
    for i in range(len(x)):
        fl = zl.update(float(x[i])) if signal in ("loss", "either") else False
        fg = False
        if signal in ("grad_norm", "either") and np.isfinite(g[i]):
            fg = zg.update(float(g[i]))
        flags[i] = fl or fg
    return flags


def detect(
    log: pd.DataFrame | str | Path,
    method: str = "robust",
    *,
    hotswaps: Iterable[int] | None = None,
    warmup: int | str | None = "auto",
    **params: Any,
) -> SpikeEvents:
    """Detect loss spikes in a step log (a DataFrame from ``load_log`` or a path).

    ``hotswaps``: extra hot-swap steps (added to the ``corpus`` changes).
    ``warmup``: ``"auto"`` (end of the lr ramp), a number of steps, or 0.
    ``params``: method parameters -- robust: the fields of ``RobustParams``;
    olmo2: ``window`` (1000), ``n_sigma`` (7), ``min_periods`` (100);
    mad: ``threshold`` (3.5); zclip: ``alpha`` (0.97), ``z_thresh`` (2.5),
    ``warmup_steps`` (25), ``signal`` ("loss" | "grad_norm" | "either").
    Every method accepts ``patience`` (event grouping, default 3).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    df = load_log(log) if isinstance(log, (str, Path)) else _check_frame(log)
    steps = df["step"].to_numpy()
    x = df["loss"].to_numpy(dtype=float)
    n = len(df)
    hs = hotswap_steps(df, hotswaps)
    starts = {int(np.searchsorted(steps, h, side="left")) for h in hs} - {0, n}
    arm = int(np.searchsorted(steps, resolve_warmup(df, warmup), side="left"))
    names = {f.name for f in fields(RobustParams)}
    if method == "robust":
        rp_kw = {k: params.pop(k) for k in list(params) if k in names}
    else:
        rp_kw = {k: params.pop(k) for k in ("patience", "log") if k in params}
    p = RobustParams.from_kwargs(rp_kw)
    log_mode = _use_log(x, p.log)
    g = df["grad_norm"].to_numpy(dtype=float) if "grad_norm" in df and df["grad_norm"].notna().any() else None
    if method == "robust" and params:
        raise TypeError(f"unknown robust parameter(s): {', '.join(sorted(params))}; known: {', '.join(sorted(names))}")
    events, shifts, stats = _run_core(steps, x, g, starts, arm, p, log_mode)
    if method != "robust":
        if method == "olmo2":
            kw = {k: params.pop(k) for k in ("window", "n_sigma", "min_periods") if k in params}
            flags = _olmo2_flags(x, **kw)
        elif method == "mad":
            kw = {k: params.pop(k) for k in ("threshold",) if k in params}
            flags = _mad_flags(x, **kw)
        else:
            signal = params.pop("signal", "loss")
            kw = {k: params.pop(k) for k in _ZCLIP_KEYS if k in params}
            flags = _zclip_flags(x, g, signal, **kw)
        if params:
            raise TypeError(f"unknown {method} parameter(s): {', '.join(sorted(params))}")
        flags[:arm] = False
        events = _group_flags(flags, p.patience, x)
    described = _describe(df, events, method, p, log_mode, stats, hs, starts | set(shifts) | {n})
    with np.errstate(invalid="ignore"):
        zr = (stats[:, 0] - stats[:, 1] - stats[:, 2]) / stats[:, 3]
    ok = np.isfinite(zr) & (np.arange(n) >= arm)
    below = int((zr[ok] <= -p.z_enter).sum())
    mirror = {"records": int(ok.sum()), "below": below, "per_10k": float(1e4 * below / ok.sum()) if ok.any() else None}
    return SpikeEvents(
        described,
        level_shifts=[int(steps[i]) for i in shifts] if method == "robust" else [],
        hotswaps=hs,
        armed_from=int(steps[min(arm, n - 1)]) if arm < n else None,
        method=method,
        mirror=mirror,
    )


# --------------------------------------------------------------------------- #
# OLMo 2 spike score
# --------------------------------------------------------------------------- #


def spike_score(
    log: pd.DataFrame | str | Path,
    *,
    window: int = 1000,
    n_sigma: float = 7.0,
    min_periods: int | None = None,
) -> dict[str, float | None]:
    """OLMo 2's spike score, in percent, for ``loss`` and ``grad_norm``.

    The percentage of records whose value is at least ``n_sigma`` (7) standard
    deviations away from the mean of the previous ``window`` (1,000) records.
    Only records with at least ``min_periods`` (default: ``window``) previous
    records count; ``None`` where no record qualifies or the column is absent.
    """
    df = load_log(log) if isinstance(log, (str, Path)) else _check_frame(log)
    mp = window if min_periods is None else int(min_periods)
    out: dict[str, float | None] = {}
    for col in ("loss", "grad_norm"):
        if col not in df or not df[col].notna().any():
            out[col] = None
            continue
        v = df[col].dropna().to_numpy(dtype=float)
        roll = pd.Series(v).rolling(window, min_periods=mp)
        mean = roll.mean().shift(1).to_numpy()
        std = roll.std(ddof=1).shift(1).to_numpy()
        ok = np.isfinite(mean) & np.isfinite(std)
        if not ok.any():
            out[col] = None
            continue
        hit = np.abs(v[ok] - mean[ok]) >= n_sigma * std[ok]
        out[col] = float(100.0 * hit.mean())
    return out
