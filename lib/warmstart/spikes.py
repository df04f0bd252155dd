"""Loss-spike detection for training logs.

Reads a step log (the trainer's JSONL, any JSONL with ``step`` and ``loss``, or
a TensorBoard log directory), finds loss spikes and describes each one::

    df = load_log("data/runs/x/steps.jsonl")        # or a TensorBoard log dir
    events = detect(df)                              # list[SpikeEvent], method="robust"
    spike_score(df)                                  # OLMo 2's score, loss and grad norm
    det = OnlineDetector(warmup=200)                 # in the trainer: det.update(step, loss, gn)

    python -m warmstart.spikes detect LOG [--method robust|olmo2|mad|zclip] [--json] [--hotswap STEP ...]
    python -m warmstart.spikes bench [--seed N] [--out FILE.md]

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
    (``warmstart.bench_spikes``).  Known weakness: the thresholds assume
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

import argparse
import json
import math
import sys
import warnings
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "METHODS",
    "SpikeLogError",
    "SpikeEvent",
    "SpikeEvents",
    "RobustParams",
    "load_log",
    "hotswap_steps",
    "resolve_warmup",
    "detect",
    "events_frame",
    "spike_score",
    "OnlineDetector",
    "format_events",
    "study_runs",
    "run_boundaries",
    "analyse_run",
    "plot_run",
    "run_stage",
    "main",
    # re-exported from warmstart.bench_spikes
    "SyntheticRun",
    "synthetic_runs",
    "evaluate",
    "benchmark",
    "GOALS",
]

_BENCH_NAMES = ("SyntheticRun", "synthetic_runs", "evaluate", "benchmark", "GOALS", "meets_goals", "bench_markdown")


def __getattr__(name: str):  # lazy re-export: the benchmark lives in its own module
    if name in _BENCH_NAMES:
        from warmstart import bench_spikes

        return getattr(bench_spikes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

METHODS = ("robust", "olmo2", "mad", "zclip")
MAD_TO_SIGMA = 1.482602218505602  # 1 / Phi^-1(3/4): MAD of a normal -> sigma


class SpikeLogError(ValueError):
    """A log that cannot be read as a loss curve; the message names the problem."""


# --------------------------------------------------------------------------- #
# Loading
# --------------------------------------------------------------------------- #

STEP_KEYS = ("step", "global_step", "train/step", "iteration", "iter", "it", "_step")
LOSS_KEYS = ("loss", "train/loss", "train_loss", "train/lm_loss", "lm_loss", "loss/train", "training_loss")
GRAD_KEYS = (
    "grad_norm", "train/grad_norm", "gradnorm", "grad-norm", "grad_norm/total",
    "optim/grad_norm", "train/gradnorm", "total_grad_norm", "gradient_norm", "grad/norm/total",
)
LR_KEYS = ("lr", "train/lr", "learning_rate", "train/learning_rate", "optim/lr", "lr-adamw", "lr/group0")
CORPUS_KEYS = ("corpus", "train/corpus", "dataset", "data/corpus")
SKIP_KEYS = ("skipped", "train/skipped", "skip")
_NOT_TRAIN = ("val", "eval", "valid", "test", "dev")


def _norm_key(key: str) -> str:
    return key.strip().lower().replace("-", "_").replace(" ", "_")


def _pick_key(keys: Iterable[str], wanted: Sequence[str]) -> str | None:
    """The key of ``keys`` that best names ``wanted[0]`` (exact alias first, then
    a key whose last path component is the base name, never a val/eval one)."""
    keys = list(keys)
    by_norm = {}
    for k in keys:
        by_norm.setdefault(_norm_key(k), k)
    for alias in wanted:
        if _norm_key(alias) in by_norm:
            return by_norm[_norm_key(alias)]
    base = {_norm_key(a).split("/")[-1] for a in wanted}
    cands = []
    for k in keys:
        parts = _norm_key(k).replace(".", "/").split("/")
        if parts[-1] in base and not any(p.startswith(_NOT_TRAIN) for p in parts[:-1]):
            cands.append(k)
    if not cands:
        return None
    cands.sort(key=lambda k: (("train" not in k.lower()), len(k)))
    return cands[0]


def _as_number(value: Any, *, where: str, key: str) -> float:
    """A JSON value as a float; None -> nan; anything non-numeric is an error."""
    if value is None:
        return math.nan
    if isinstance(value, bool):
        raise SpikeLogError(f"{where}: `{key}` is not a number: {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise SpikeLogError(f"{where}: `{key}` is not a number: {value!r}")


def _as_step(value: Any, *, where: str, key: str) -> int:
    v = _as_number(value, where=where, key=key)
    if not math.isfinite(v) or v != int(v):
        raise SpikeLogError(f"{where}: `{key}` must be an integer step, got {value!r}")
    return int(v)


def _read_jsonl(path: Path) -> pd.DataFrame:
    rows: list[dict] = []
    saw_step = saw_loss = False
    keys_seen: set[str] = set()
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise SpikeLogError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            if not isinstance(rec, dict):
                continue
            keys_seen.update(rec)
            sk = _pick_key(rec, STEP_KEYS)
            lk = _pick_key(rec, LOSS_KEYS)
            saw_step |= sk is not None
            if sk is None or lk is None:
                continue  # config / eval / checkpoint records
            saw_loss = True
            where = f"{path}:{lineno}"
            row = {
                "step": _as_step(rec[sk], where=where, key=sk),
                "loss": _as_number(rec[lk], where=where, key=lk),
            }
            gk = _pick_key(rec, GRAD_KEYS)
            if gk is not None:
                row["grad_norm"] = _as_number(rec[gk], where=where, key=gk)
            rk = _pick_key(rec, LR_KEYS)
            if rk is not None:
                row["lr"] = _as_number(rec[rk], where=where, key=rk)
            ck = _pick_key(rec, CORPUS_KEYS)
            if ck is not None and rec[ck] is not None:
                row["corpus"] = str(rec[ck])
            xk = _pick_key(rec, SKIP_KEYS)
            if xk is not None:
                row["skipped"] = bool(rec[xk])
            rows.append(row)
    if not rows:
        if not keys_seen:
            raise SpikeLogError(f"{path}: no JSON records in the file")
        if not saw_step:
            raise SpikeLogError(
                f"{path}: no `step` column (looked for {', '.join(STEP_KEYS)}); "
                f"keys present: {', '.join(sorted(keys_seen)[:20])}"
            )
        if not saw_loss:
            raise SpikeLogError(
                f"{path}: no `loss` column in records that have a step (looked for "
                f"{', '.join(LOSS_KEYS)}); keys present: {', '.join(sorted(keys_seen)[:20])}"
            )
    return pd.DataFrame(rows)


def _event_dirs(path: Path) -> list[Path]:
    return sorted({p.parent for p in path.rglob("*tfevents*") if p.is_file()})


def _read_tensorboard(path: Path) -> pd.DataFrame:
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError as err:  # pragma: no cover - tensorboard is a dependency
        raise SpikeLogError(f"{path}: reading TensorBoard logs needs the `tensorboard` package") from err
    target = path
    if path.is_dir() and not any(p.is_file() for p in path.glob("*tfevents*")):
        dirs = _event_dirs(path)
        if not dirs:
            raise SpikeLogError(f"{path}: no TensorBoard event files (events.out.tfevents.*) in this directory")
        if len(dirs) > 1:
            raise SpikeLogError(
                f"{path}: holds several TensorBoard runs; pass one of: "
                + ", ".join(str(d) for d in dirs[:10])
            )
        target = dirs[0]
    acc = EventAccumulator(str(target), size_guidance={"scalars": 0, "tensors": 0}, purge_orphaned_data=False)
    acc.Reload()
    tags = acc.Tags()
    series: dict[str, list[tuple[int, float]]] = {}
    for tag in tags.get("scalars", []):
        series[tag] = [(int(e.step), float(e.value)) for e in acc.Scalars(tag)]
    if not series:  # TF2-style summaries store scalars as tensors
        from tensorboard.util import tensor_util

        for tag in tags.get("tensors", []):
            vals = []
            for e in acc.Tensors(tag):
                arr = tensor_util.make_ndarray(e.tensor_proto)
                if arr.size == 1 and np.issubdtype(arr.dtype, np.number):
                    vals.append((int(e.step), float(arr.reshape(()))))
            if vals:
                series[tag] = vals
    lk = _pick_key(series, LOSS_KEYS)
    if lk is None:
        raise SpikeLogError(
            f"{target}: no loss scalar (looked for {', '.join(LOSS_KEYS)}); tags present: "
            + (", ".join(sorted(series)[:20]) or "none")
        )

    def frame(tag: str, col: str) -> pd.DataFrame:
        d = pd.DataFrame(series[tag], columns=["step", col])
        return d.drop_duplicates("step", keep="last")  # resumes: the last write wins

    df = frame(lk, "loss")
    for keys, col in ((GRAD_KEYS, "grad_norm"), (LR_KEYS, "lr")):
        k = _pick_key(series, keys)
        if k is not None:
            df = df.merge(frame(k, col), on="step", how="left")
    return df


def load_log(path: str | Path) -> pd.DataFrame:
    """Read a step log into a DataFrame sorted by ``step``.

    ``path`` is a JSONL file (records with ``step`` and ``loss``; ``grad_norm``,
    ``lr``, ``corpus``, ``skipped`` when present, common aliases accepted), or a
    TensorBoard event file or log directory (tags ``train/loss``, ``loss``,
    ``train/grad_norm``, ``train/lr``, ...), or a run directory: its single
    ``*.jsonl`` (the trainer's ``log.jsonl``) if it has one, else the one
    TensorBoard run below it.  Records without both a step and
    a loss (config, eval, checkpoint records) are ignored.  Duplicate steps
    (resumes, roll-backs) keep the *last* record written.  Non-finite losses
    are dropped with a warning (a NaN loss is a divergence: look at it).

    Columns: ``step`` (int64), ``loss`` (float64), and where present
    ``grad_norm``, ``lr`` (float64, NaN where missing), ``corpus`` (str,
    forward-filled), ``skipped`` (bool).  ``df.attrs["source"]`` is the path.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"spike log not found: {path}")
    if path.is_dir():  # a run dir: its one JSONL step log (richer: corpus, skipped), else TensorBoard
        logs = sorted(path.glob("*.jsonl"))
        if len(logs) == 1:
            path = logs[0]
        elif not _event_dirs(path):
            raise SpikeLogError(
                f"{path}: no TensorBoard event files (events.out.tfevents.*) in this directory"
                + (f" and several JSONL files ({', '.join(p.name for p in logs[:10])}): pass one" if logs else "")
            )
    is_tb = path.is_dir() or "tfevents" in path.name
    df = _read_tensorboard(path) if is_tb else _read_jsonl(path)
    df = df.drop_duplicates("step", keep="last").sort_values("step", kind="stable").reset_index(drop=True)
    df["step"] = df["step"].astype("int64")
    for col in ("loss", "grad_norm", "lr"):
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="raise").astype("float64")
    bad = ~np.isfinite(df["loss"].to_numpy())
    if bad.any():
        steps = df.loc[bad, "step"].tolist()
        warnings.warn(
            f"{path}: dropped {len(steps)} record(s) with a non-finite loss at step(s) "
            f"{steps[:10]}{' ...' if len(steps) > 10 else ''}",
            stacklevel=2,
        )
        df = df.loc[~bad].reset_index(drop=True)
    if df.empty:
        raise SpikeLogError(f"{path}: no finite loss values")
    if "corpus" in df:
        df["corpus"] = df["corpus"].ffill()
    if "skipped" in df:
        df["skipped"] = df["skipped"].fillna(False).astype(bool)
    df.attrs["source"] = str(path)
    return df


def _check_frame(df: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a DataFrame or a path, got {type(df).__name__}")
    for col in ("step", "loss"):
        if col not in df:
            raise SpikeLogError(f"log has no `{col}` column (columns: {', '.join(map(str, df.columns))})")
    for col in ("step", "loss", "grad_norm", "lr"):
        if col in df and not pd.api.types.is_numeric_dtype(df[col]):
            raise SpikeLogError(f"log column `{col}` is not numeric (dtype {df[col].dtype})")
    if not df["step"].is_monotonic_increasing or df["step"].duplicated().any():
        df = df.drop_duplicates("step", keep="last").sort_values("step", kind="stable")
    finite = np.isfinite(df["loss"].to_numpy(dtype=float))
    if not finite.all():
        warnings.warn(f"ignored {int((~finite).sum())} record(s) with a non-finite loss at step(s) "
                      f"{df.loc[~finite, 'step'].tolist()[:10]}", stacklevel=3)
        df = df[finite]
    if df.empty:
        raise SpikeLogError("log has no finite loss values")
    return df.reset_index(drop=True)


def hotswap_steps(df: pd.DataFrame, extra: Iterable[int] | None = None) -> list[int]:
    """Steps where the ``corpus`` value changes (the first step on the new corpus),
    plus ``extra`` steps, sorted and unique."""
    out = set(int(s) for s in (extra or []))
    if "corpus" in df:
        c = df["corpus"].ffill()
        prev = c.shift(1)
        chg = c.notna() & prev.notna() & (c != prev)
        out.update(int(s) for s in df.loc[chg, "step"])
    return sorted(out)


def resolve_warmup(df: pd.DataFrame, warmup: int | str | None = "auto") -> int:
    """The first step at which detection is armed.

    ``"auto"``: the first step where ``lr`` reaches 95 % of its maximum (the end
    of the warm-up ramp) when the log has learning rates, else the first step.
    An int is a number of steps from the first logged step.
    """
    first = int(df["step"].iloc[0])
    if warmup is None or warmup == 0:
        return first
    if isinstance(warmup, str):
        if warmup != "auto":
            raise ValueError(f"warmup must be 'auto' or a number of steps, got {warmup!r}")
        if "lr" in df and df["lr"].notna().any():
            lr = df["lr"].to_numpy(dtype=float)
            top = np.nanmax(lr)
            if top > 0:
                idx = int(np.argmax(np.nan_to_num(lr, nan=-np.inf) >= 0.95 * top))
                return int(df["step"].iloc[idx])
        return first
    if int(warmup) < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    return first + int(warmup)


# --------------------------------------------------------------------------- #
# Events
# --------------------------------------------------------------------------- #


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

    def __init__(self, events=(), *, level_shifts=(), hotswaps=(), armed_from=None, method="robust",
                 mirror: dict | None = None):
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


@dataclass
class RobustParams:
    """Parameters of the ``robust`` method (defaults tuned on synthetic seed 0,
    see ``warmstart.bench_spikes``).  Windows count log records."""

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
    def from_kwargs(cls, kw: dict) -> "RobustParams":
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
        self.active = {"start": i, "start_step": step, "ref": ref, "sc": sc, "peak": i, "peak_step": step,
                       "peakz": z, "last": i, "last_step": step, "below": 0, "n": 1, "zs": [z]}

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
            before = float(np.median(a["zs"][-2 * h:-h]))
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
            "loss": self.loss.state(), "grad": self.grad.state(),
            "active": None if a is None else {k: (list(v) if isinstance(v, list) else v) for k, v in a.items()},
            "prev": None if self.prev is None else [None if (isinstance(v, float) and v != v) else v for v in self.prev],
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


def _use_log(x: np.ndarray, log: bool | None) -> bool:
    if log is None:
        if (x > 0).all():
            return True
        warnings.warn("some losses are <= 0: detecting on the raw loss, not log-loss", stacklevel=3)
        return False
    if log and not (x > 0).all():
        raise SpikeLogError("log=True needs every loss to be > 0")
    return bool(log)


def _run_core(steps: np.ndarray, x: np.ndarray, g: np.ndarray | None, starts: set[int], arm: int,
              p: RobustParams, log: bool):
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
            zz = (y[pk + 1:stop] - ref) / sc
            hit = np.flatnonzero(zz <= p.recovery_band)
            rec = int(steps[pk + 1 + hit[0]] - steps[pk]) if hit.size else None
        gz = float(gzs[pk]) if np.isfinite(gzs[pk]) else None
        w = gzs[max(s - 2, 0):e + 1]
        w = w[np.isfinite(w)]
        gmax = float(w.max()) if w.size else None
        near = int(hs[np.argmin(np.abs(hs - steps[s]))]) if hs.size else None
        lr_pk = float(lr[pk]) if lr is not None and np.isfinite(lr[pk]) else None
        out.append(SpikeEvent(
            start_step=int(steps[s]), peak_step=int(steps[pk]), end_step=int(steps[e]),
            magnitude=mag, delta_loss=delta, recovery_steps=rec, grad_norm_z=gz, lr=lr_pk,
            nearest_hotswap=near, method=method, peak_loss=float(x[pk]), reference_loss=ref_loss,
            n_flagged=int(ev["n"]), grad_norm_max_z=gmax, open=bool(ev.get("open", False)),
            n_skipped=int(skipped[s:e + 1].sum()) if skipped is not None else 0,
        ))
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
        pk = s + int(np.argmax(loss[s:e + 1]))
        out.append({"start": s, "peak": pk, "end": e, "n": n, "open": e + patience >= len(flags)})
    return out


def _olmo2_flags(x: np.ndarray, window: int = 1000, n_sigma: float = 7.0, min_periods: int = 100,
                 two_sided: bool = False) -> np.ndarray:
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


class _ZClipStat:
    """ZClip's EMA statistics for one signal (see the module docstring)."""

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
        std = self.var ** 0.5
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
    mirror = {"records": int(ok.sum()), "below": below,
              "per_10k": float(1e4 * below / ok.sum()) if ok.any() else None}
    return SpikeEvents(described, level_shifts=[int(steps[i]) for i in shifts] if method == "robust" else [],
                       hotswaps=hs, armed_from=int(steps[min(arm, n - 1)]) if arm < n else None, method=method,
                       mirror=mirror)


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


# --------------------------------------------------------------------------- #
# Online detector
# --------------------------------------------------------------------------- #


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
            "method": self.method, "warmup": self.warmup, "kw": dict(self.kw), "first_step": self.first_step,
            "n": self.n, "corpus": self.corpus, "events": [dict(e) for e in self._events],
            "level_shifts": list(self.level_shifts), "run": dict(self.run) if self.run else None,
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
        self._events.append({"start_step": int(ev["start_step"]), "peak_step": int(ev["peak_step"]),
                            "end_step": int(ev["last_step"]), "magnitude": float(ev["peakz"]),
                            "_last": int(ev["last"])})

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
                self._events.append({"start_step": r["start"], "peak_step": r["peak"],
                                    "end_step": r["last"], "magnitude": None})
                self.run = None
        return flagged


# --------------------------------------------------------------------------- #
# The spikes stage (notebooks/07_spikes.ipynb)
# --------------------------------------------------------------------------- #


def study_runs(params) -> list[tuple[str, Path]]:
    """Run names and dirs the stage analyses: base, scratch, original, one per vocab_swap method."""
    names = ["base", "scratch", "original", *params.vocab_swap.methods]
    return [(n, Path(params.shared.data_dir, "runs", n)) for n in names]


def run_boundaries(run_dir: Path) -> tuple[list[int], list[int]]:
    """(phase boundaries, checkpoint steps) from ``run.json``: the first step of every phase but the first."""
    meta_path = Path(run_dir) / "run.json"
    if not meta_path.is_file():
        return [], []
    meta = json.loads(meta_path.read_text())
    bounds = [int(p["start_step"]) for p in meta.get("phases", [])[1:] if p.get("start_step")]
    ckpts = sorted({int(c["step"]) for c in meta.get("checkpoints", [])})
    return bounds, ckpts


def analyse_run(run_dir: Path, method: str = "robust", warmup: int | str = "auto", params: dict | None = None,
                score_window: int = 1000, score_min_periods: int | None = None) -> dict:
    """Detection on one trainer run dir (``log.jsonl`` + optional ``run.json``): the log, events, score.

    Phase boundaries of a two-phase run are passed as known boundaries (every
    window restarts there, as at a hot-swap), so the schedule kink and level
    shift between phases are not spikes.
    """
    run_dir = Path(run_dir)
    log_path = run_dir / "log.jsonl"
    df = load_log(log_path if log_path.is_file() else run_dir)
    bounds, ckpts = run_boundaries(run_dir)
    full = [json.loads(x) for x in log_path.read_text().splitlines() if x.strip()] if log_path.is_file() else []
    by_step = {int(r["step"]): r for r in full if "step" in r}
    for col in ("update_cos", "phase"):
        if any(col in r for r in full):
            df[col] = [by_step.get(int(st), {}).get(col) for st in df["step"]]
    if "update_cos" in df:
        df["update_cos"] = pd.to_numeric(df["update_cos"], errors="coerce")
    events = detect(df, method, hotswaps=bounds, warmup=warmup, **dict(params or {}))
    score = spike_score(df, window=score_window, min_periods=score_min_periods)
    return {"df": df, "events": events, "boundaries": bounds, "checkpoints": ckpts, "score": score,
            "hotswaps": [h for h in events.hotswaps if h not in bounds]}


def _mark(ax, res: dict) -> None:
    """Phase boundaries (dotted), hot-swaps (dashed) and spike spans (shaded) on one panel."""
    for b in res["boundaries"]:
        ax.axvline(b, color="grey", ls=":", lw=1)
    for h in res["hotswaps"]:
        ax.axvline(h, color="tab:green", ls="--", lw=1)
    for e in res["events"]:
        ax.axvspan(e.start_step, e.end_step, color="red", alpha=0.12)


def plot_run(name: str, res: dict, path: Path | None = None):
    """Loss with spike markers, hot-swap (dashed) and phase (dotted) lines; grad norm and update cosine."""
    import matplotlib.pyplot as plt

    df, events = res["df"], res["events"]
    panels = ["loss"] + [c for c in ("grad_norm", "update_cos") if c in df and df[c].notna().any()]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 1.2 + 1.6 * len(panels)), sharex=True, squeeze=False)
    for ax, col in zip(axes[:, 0], panels):
        ax.plot(df["step"], df[col], lw=0.9, color="tab:blue")
        _mark(ax, res)
        ax.set_ylabel(col)
    ax0 = axes[0, 0]
    if events:
        ax0.plot([e.peak_step for e in events], [e.peak_loss for e in events], "v", color="red", label="spike peak")
        ax0.legend(fontsize=7)
    if (df["loss"] > 0).all():
        from matplotlib.ticker import ScalarFormatter

        ax0.set_yscale("log")
        ax0.yaxis.set_major_formatter(ScalarFormatter())  # 6, 7, 8 rather than 6 x 10^0
        ax0.yaxis.set_minor_formatter(ScalarFormatter())
    ax0.set_ylabel("loss (nats/token)")
    ax0.set_title(f"{name}: {len(events)} spike(s) (dotted: phase boundary, dashed: hot-swap)")
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    return fig


def plot_overview(results: dict, path: Path | None = None, ncols: int = 2):
    """All runs' loss curves as small multiples: spikes shaded, peaks marked, phase (dotted) and hot-swap (dashed) lines."""
    import math

    import matplotlib.pyplot as plt

    names = list(results)
    nrows = max(1, math.ceil(len(names) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(9, 1.9 * nrows + 0.4), squeeze=False)
    for ax, name in zip(axes.flat, names):
        res = results[name]
        df, events = res["df"], res["events"]
        ax.plot(df["step"], df["loss"], lw=0.9, color="tab:blue")
        _mark(ax, res)
        if events:
            ax.plot([e.peak_step for e in events], [e.peak_loss for e in events], "v", color="red", ms=5)
        ax.set_title(f"{name}: {len(events)} spike(s)", fontsize=9)
        ax.set_ylabel("loss (nats/token)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(names):]:
        ax.set_axis_off()
    for ax in axes[-1]:
        ax.set_xlabel("optimizer step", fontsize=8)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    return fig


def run_stage(params, show: bool = True) -> dict:
    """The spikes stage: detection on every study run, figures, tables, metrics and the report fragment."""
    import time

    from warmstart.fragments import table, write_fragment
    from warmstart.io import write_json

    t0 = time.perf_counter()
    sp = params.spikes
    out_dir = params.report_path("spikes")
    out_dir.mkdir(parents=True, exist_ok=True)
    results, notes, rows, ev_rows, figs = {}, [], [], [], []
    for name, d in study_runs(params):
        if not ((d / "log.jsonl").is_file() or (d.is_dir() and _event_dirs(d))):
            notes.append(f"{name}: no run at {d}, skipped")
            continue
        res = analyse_run(d, sp.method, sp.warmup, sp.params, sp.score_window, sp.score_min_periods)
        results[name] = res
        fig_path = out_dir / f"{name}.png"
        fig = plot_run(name, res, fig_path)
        if not show:
            import matplotlib.pyplot as plt

            plt.close(fig)
        figs.append((name, fig_path))
        evs = res["events"]
        rows.append({"run": name, "records": len(res["df"]), "armed_from": evs.armed_from, "spikes": len(evs),
                     "max_z": max((e.magnitude or 0.0 for e in evs), default=None),
                     "score_loss_%": res["score"]["loss"], "score_grad_%": res["score"]["grad_norm"],
                     "level_shifts": len(evs.level_shifts)})
        ev_rows += [{"run": name, **e.to_dict()} for e in evs]
    runs = pd.DataFrame(rows)
    events = pd.DataFrame(ev_rows, columns=["run", *[f.name for f in fields(SpikeEvent)]])
    runs.to_csv(out_dir / "runs.csv", index=False)
    events.to_csv(out_dir / "events.csv", index=False)
    metrics = {"method": sp.method, "runs": {r["run"]: {k: v for k, v in r.items() if k != "run"} for r in rows},
               "total_spikes": int(len(events)), "skipped_runs": [n.split(":")[0] for n in notes]}
    write_json(params.report_path("metrics", "spikes.json"), metrics)
    paras = [
        f"Loss spikes detected with the `{sp.method}` method of `warmstart.spikes` (causal robust z of the "
        "log-loss against a trailing median; phase boundaries and corpus hot-swaps restart the reference, so the "
        "phase-1 to phase-2 kink is not a spike). The OLMo 2 spike score is the share of records at least 7 "
        f"standard deviations from the mean of the previous {sp.score_window} records (1,000 in the paper).",
        f"{int(len(events))} spike(s) over {len(rows)} run(s)." + (" " + "; ".join(notes) if notes else ""),
    ]
    short = [r["run"] for r in rows if r["armed_from"] is None]
    if short:
        paras.append("Too few log records for the detector to arm in: " + ", ".join(short) + ".")
    tables = [table(runs, "Spikes and OLMo 2 spike score (%) per run")] if len(runs) else []
    if len(events):
        cols = ["run", "start_step", "peak_step", "end_step", "magnitude", "delta_loss", "recovery_steps", "grad_norm_z", "lr"]
        tables.append(table(events[cols], "Detected spikes"))
    overview = []
    if results:
        import matplotlib.pyplot as plt

        plt.close(plot_overview(results, out_dir / "overview.png"))
        overview = [{"path": str(out_dir / "overview.png"), "caption": "Training loss of every run (spikes shaded, "
                     "peaks marked; dotted: phase boundary, dashed: corpus hot-swap). Per-run panels with grad norm "
                     "and update cosine: reports/spikes/<run>.png and the stage notebook."}]  # fmt: skip
    write_fragment(params.shared.reports_dir, "spikes", 70, "Loss spikes", paras, tables, overview,
                   {"total_spikes": int(len(events)), **{f"spikes.{r['run']}": r["spikes"] for r in rows}},
                   time.perf_counter() - t0)
    return {"runs": runs, "events": events, "results": results, "notes": notes, "metrics": metrics}


# --------------------------------------------------------------------------- #
# CLI
# --------------------------------------------------------------------------- #


def _fmt(v: Any, nd: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def format_events(events: Sequence[SpikeEvent]) -> str:
    """A readable table of events (and, for ``SpikeEvents``, what shaped them)."""
    notes = []
    if isinstance(events, SpikeEvents):
        if events.armed_from is not None:
            notes.append(f"detection armed from step {events.armed_from} (after warm-up)")
        if events.hotswaps:
            notes.append(f"hot-swaps (reference restarted): {', '.join(map(str, events.hotswaps))}")
        if events.level_shifts:
            notes.append("persistent level shifts (not spikes; reference restarted): "
                         + ", ".join(map(str, events.level_shifts)))
        m = events.mirror
        if m.get("records"):
            notes.append(f"noise check: {m['below']} of {m['records']} records fell >= z_enter robust units "
                         "below the reference; noise alone should give about as many false spikes")
    if not events:
        return "\n".join(["no spikes found", *notes])
    head = ["start", "peak", "end", "z", "d_loss", "recovery", "grad_z", "lr", "hotswap"]
    rows = [[_fmt(e.start_step), _fmt(e.peak_step), _fmt(e.end_step) + ("+" if e.open else ""),
             _fmt(e.magnitude, 1), _fmt(e.delta_loss, 4), _fmt(e.recovery_steps), _fmt(e.grad_norm_z, 1),
             _fmt(e.lr, 6), _fmt(e.nearest_hotswap)] for e in events]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    lines.append(f"{len(events)} spike(s); z in robust units (1.4826 MAD of the log-loss residual), "
                 "recovery in steps from the peak ('-': not recovered), '+': still open at the end of the log")
    return "\n".join(lines + notes)


def _warmup_arg(v: str) -> int | str:
    if v == "auto":
        return v
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--warmup must be 'auto' or a number of steps, got {v!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"--warmup must be >= 0, got {n}")
    return n


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m warmstart.spikes", description="Loss-spike detection.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("detect", help="detect spikes in a JSONL step log or a TensorBoard log dir")
    d.add_argument("log", help="JSONL file, TensorBoard event file or log directory")
    d.add_argument("--method", choices=METHODS, default="robust")
    d.add_argument("--json", action="store_true", help="print a JSON list of events")
    d.add_argument("--hotswap", type=int, nargs="+", action="extend", default=[], metavar="STEP",
                   help="hot-swap steps (in addition to changes of the log's `corpus` field)")
    d.add_argument("--warmup", type=_warmup_arg, default="auto",
                   help="'auto' (end of the lr ramp, default) or a number of steps to ignore")
    d.add_argument("--score", action="store_true", help="also print the OLMo 2 spike score (stderr)")
    b = sub.add_parser("bench", help="run the synthetic benchmark")
    b.add_argument("--seed", type=int, default=1)
    b.add_argument("--n-runs", type=int, default=98)
    b.add_argument("--n-steps", type=int, default=4000)
    b.add_argument("--methods", nargs="*", choices=METHODS, default=list(METHODS))
    b.add_argument("--mad", choices=("scaled", "raw"), default="scaled",
                   help="unit of injected spike height: 1.4826 x MAD (= sigma) or raw MAD")
    b.add_argument("--noise", choices=("gauss", "t5"), default="gauss")
    b.add_argument("--out", help="write the markdown table here")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "detect":
            df = load_log(args.log)
            events = detect(df, args.method, hotswaps=args.hotswap, warmup=args.warmup)
            if args.json:
                print(json.dumps([e.to_dict() for e in events], indent=2))
            else:
                print(format_events(events))
            if args.score:
                print(f"OLMo 2 spike score (%): {json.dumps(spike_score(df))}", file=sys.stderr)
            return 0
        from warmstart.bench_spikes import bench_markdown, benchmark

        table = benchmark(seed=args.seed, n_runs=args.n_runs, n_steps=args.n_steps, methods=args.methods,
                          mad=args.mad, noise=args.noise)
        md = bench_markdown(table)
        print(md)
        if args.out:
            from warmstart.io import write_text

            write_text(args.out, md)
        return 0
    except (SpikeLogError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
