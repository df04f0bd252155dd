"""Step-log readers: the trainer's JSONL (or any JSONL with ``step`` and
``loss``) and TensorBoard event files, as a DataFrame sorted by step; hot-swap
steps and the end of the warm-up."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from warmstart.spikes.params import SpikeLogError

__all__ = [
    "STEP_KEYS",
    "LOSS_KEYS",
    "GRAD_KEYS",
    "LR_KEYS",
    "CORPUS_KEYS",
    "SKIP_KEYS",
    "load_log",
    "hotswap_steps",
    "resolve_warmup",
]

STEP_KEYS = ("step", "global_step", "train/step", "iteration", "iter", "it", "_step")
LOSS_KEYS = ("loss", "train/loss", "train_loss", "train/lm_loss", "lm_loss", "loss/train", "training_loss")
GRAD_KEYS = (
    "grad_norm",
    "train/grad_norm",
    "gradnorm",
    "grad-norm",
    "grad_norm/total",
    "optim/grad_norm",
    "train/gradnorm",
    "total_grad_norm",
    "gradient_norm",
    "grad/norm/total",
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
                f"{path}: holds several TensorBoard runs; pass one of: " + ", ".join(str(d) for d in dirs[:10])
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
        warnings.warn(
            f"ignored {int((~finite).sum())} record(s) with a non-finite loss at step(s) "
            f"{df.loc[~finite, 'step'].tolist()[:10]}",
            stacklevel=3,
        )
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
