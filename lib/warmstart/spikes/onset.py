"""Which instability signal moved first, before a loss spike: the rule, its onsets and its false-alarm rate.

Nothing here trains or imports torch; every function works on plain lists and dicts (a run's log records
or its trajectory). Used by the spikes stage (each event's context) and the stability study.

**Moved** (a signal's first departure, :func:`first_move`): record ``i``
moved when its value, transformed (``asinh`` for the attention logit, ``log``
for the update ratio and the gradient norm, the raw value for ``log Z``),
lies ``k`` robust units above the median of the previous ``window`` records
of the same run (both ways for ``log_z_mean``, which drifts down in
Wortsman's output-logit divergence and up in an untrained head), a robust
unit being 1.4826 x MAD of those records, floored at ``rel_floor`` x
max(|median|, 1). At least ``min_history`` earlier records are needed (by default the whole window:
the first ``window`` records of a run, where every signal moves, never count). A
steady exponential growth does not move by this rule (the trailing median
lags it by ~1.35 robust units), an acceleration or a jump does. A jump keeps
a signal "moving" for about half a window, until the median catches up: its
move is the *onset* of such a stretch, the record that moved after one that
did not.
Separately, a signal **crossed its threshold** at the first record (from the
start of the run) where ``attn_logit_max >= attn_logit_threshold`` or
``|log_z_mean| >= log_z_threshold``: the absolute form of "the attention
logits grew" and "log Z left 0".

**Which signal moved first** (:func:`moved_first`): the loss's onset is the
start step of the spike detector's event (``warmstart.spikes.detect``); for a
run that diverged without a detected event, the first record where the
log-loss moved by the rule above. The loss itself gets the signals' test: its
first move in ``[onset - lookback, onset]`` (the detector needs z >= 5, or two
records >= 3.5, so its event often starts a record after the loss first rose)
is the loss's reference step, else the onset. Each signal's first move is
looked for in the same window; the signal with the earliest one moved first
(ties: the larger robust z), *before the loss* when its step is strictly
before the loss's reference step (at it: with the loss). :func:`move_rate`
measures the rule's false-alarm rate on runs without any instability, so a
"lead" can be weighed against chance (p per record gives about
``1 - (1 - p) ** lookback`` per signal and window). Signals: ``attn_logit_max``
(max over layers), ``log_z_mean``, ``log_z_max``, ``update_ratio`` (max over
layers) and, for context, ``grad_norm`` (not a Wortsman signal; the
detector itself uses it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

MAD_TO_SIGMA = 1.482602218505602


# signal -> (transform, two-sided); the transforms keep a jump's size independent of the signal's scale
SIGNALS: dict[str, tuple[Callable[[float], float], bool]] = {
    "attn_logit_max": (math.asinh, False),
    "log_z_mean": (lambda x: x, True),
    "log_z_max": (lambda x: x, False),
    "update_ratio": (lambda x: math.log(max(x, 1e-12)), False),
    "grad_norm": (lambda x: math.log(max(x, 1e-12)), False),
}


WORTSMAN_SIGNALS = ("attn_logit_max", "log_z_mean", "log_z_max")  # the goal's "attention-logit or log Z"


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def robust_z(history: Sequence[float], x: float, rel_floor: float = 0.01) -> float:
    """``(x - median) / scale``: scale = 1.4826 MAD of ``history``, floored at ``rel_floor * max(|median|, 1)``."""
    med = _median(history)
    mad = _median([abs(h - med) for h in history])
    scale = max(MAD_TO_SIGMA * mad, rel_floor * max(abs(med), 1.0))
    return (x - med) / scale


def _series(steps: Sequence[int], values: Sequence[Any], name: str) -> list[tuple[int, float]]:
    """(step, transformed value) of the finite records (a transform that fails drops the record)."""
    f = SIGNALS[name][0] if name in SIGNALS else (lambda x: math.log(max(x, 1e-12)))
    out = []
    for s, v in zip(steps, values):
        if finite(v):
            try:
                out.append((int(s), float(f(v))))
            except (ValueError, OverflowError):
                continue
    return out


def _moves(
    ser: list[tuple[int, float]], two_sided: bool, window: int, k: float, min_history: int, rel_floor: float
) -> list[tuple[int, float, bool]]:
    """(step, robust z, move onset) of every record with a full history; an onset is a record that moved while
    the one before did not (a signal stays "moving" for about half a window after a jump, until the trailing
    median catches up: only the first record of such a stretch is its move)."""
    out, prev = [], False
    for i in range(min_history, len(ser)):
        z = robust_z([h for _, h in ser[max(0, i - window) : i]], ser[i][1], rel_floor)
        moved = z >= k or (two_sided and z <= -k)
        out.append((ser[i][0], z, moved and not prev))
        prev = moved
    return out


def first_move(
    steps: Sequence[int],
    values: Sequence[Any],
    name: str,
    lo: int | None = None,
    hi: int | None = None,
    window: int = 20,
    k: float = 5.0,
    min_history: int = 20,
    rel_floor: float = 0.01,
) -> dict | None:
    """The first move onset with ``lo <= step <= hi`` of signal ``name`` (module docstring), or None.

    ``name`` picks the transform and sidedness (:data:`SIGNALS`; any other name: log, one-sided, as for
    the loss). Returns ``{"step", "z", "value"}`` (``value`` untransformed). A signal already moving at
    ``lo`` (its onset earlier) has no onset in the range.
    """
    two_sided = SIGNALS.get(name, (None, False))[1]
    raw = {int(s): v for s, v in zip(steps, values)}
    for s, z, onset in _moves(_series(steps, values, name), two_sided, window, k, min_history, rel_floor):
        if hi is not None and s > hi:
            break
        if onset and (lo is None or s >= lo):
            return {"step": s, "z": float(z), "value": float(raw[s])}
    return None


def first_crossing(
    steps: Sequence[int], values: Sequence[Any], threshold: float, hi: int | None = None, absolute: bool = False
) -> int | None:
    """First step (<= ``hi``) where the value (its absolute value with ``absolute``) reaches ``threshold``."""
    for s, v in zip(steps, values):
        if hi is not None and s > hi:
            break
        if finite(v) and (abs(v) if absolute else v) >= threshold:
            return int(s)
    return None


def loss_onset(
    traj: Mapping[str, Sequence[Any]],
    events: Sequence[Mapping[str, Any]],
    window: int = 20,
    k: float = 5.0,
    min_history: int = 20,
    rel_floor: float = 0.01,
) -> tuple[int | None, str | None]:
    """The detector's view of the loss onset: the first event's start, else (a run that diverged without a
    detected event) the first move of the log-loss; returns (step, "detector" | "loss_jump" | None)."""
    if events:
        return int(events[0]["start_step"]), "detector"
    m = first_move(traj["step"], traj["loss"], "loss", window=window, k=k, min_history=min_history, rel_floor=rel_floor)
    return (m["step"], "loss_jump") if m else (None, None)


def moved_first(
    traj: Mapping[str, Sequence[Any]],
    onset: int,
    window: int = 20,
    k: float = 5.0,
    min_history: int = 20,
    lookback: int = 10,
    rel_floor: float = 0.01,
    attn_logit_threshold: float | None = 100.0,
    log_z_threshold: float | None = 20.0,
    signals: Sequence[str] = tuple(SIGNALS),
) -> dict:
    """Which signal moved first, and whether before the loss, around a loss onset at step ``onset``.

    ``traj``: ``step``, ``loss`` and one list per signal (None where not logged). The loss gets the same
    test as the signals: its own first move in ``[onset - lookback, onset]`` (a detector event often starts
    a record or two after the loss first rose), and the loss's reference step ``loss_step`` is that move,
    else ``onset``. Returns per signal its ``jump`` (first move in the window: step, z, value, ``lead`` =
    loss_step - step) and ``threshold_step`` (attention logit / |log Z mean| thresholds, from the start of the
    run, up to loss_step); ``first`` (the earliest mover; ties: larger |z|), ``first_step``, ``lead_steps``,
    ``before_loss`` (the first mover moved strictly before ``loss_step``), and ``wortsman_before_loss``: an
    attention-logit or log Z signal jumped or crossed its threshold strictly before ``loss_step``.
    """
    steps = traj["step"]
    rule = dict(window=window, k=k, min_history=min_history, rel_floor=rel_floor)
    lm = first_move(steps, traj["loss"], "loss", lo=onset - lookback, hi=onset, **rule) if "loss" in traj else None
    ref = lm["step"] if lm else onset
    per: dict[str, dict] = {}
    thresholds = {"attn_logit_max": (attn_logit_threshold, False), "log_z_mean": (log_z_threshold, True)}
    for name in signals:
        vals = traj.get(name)
        if vals is None or not any(finite(v) for v in vals):
            continue
        m = first_move(steps, vals, name, lo=onset - lookback, hi=onset, **rule)
        if m is not None:
            m["lead"] = ref - m["step"]
        thr, absolute = thresholds.get(name, (None, False))
        t = first_crossing(steps, vals, thr, hi=ref, absolute=absolute) if thr is not None else None
        per[name] = {"jump": m, "threshold_step": t}
    movers = [(v["jump"]["step"], -abs(v["jump"]["z"]), n) for n, v in per.items() if v["jump"] is not None]
    first = min(movers)[2] if movers else None
    first_step = per[first]["jump"]["step"] if first else None
    wortsman = any(
        (v["jump"] is not None and v["jump"]["step"] < ref)
        or (v["threshold_step"] is not None and v["threshold_step"] < ref)
        for n, v in per.items()
        if n in WORTSMAN_SIGNALS
    )
    return {
        "onset": int(onset),
        "loss_move": lm,
        "loss_step": int(ref),
        "signals": per,
        "first": first,
        "first_step": first_step,
        "lead_steps": (ref - first_step) if first_step is not None else None,
        "before_loss": bool(first_step is not None and first_step < ref),
        "wortsman_before_loss": bool(wortsman),
    }


def move_rate(
    trajs: Sequence[Mapping[str, Sequence[Any]]],
    name: str,
    window: int = 20,
    k: float = 5.0,
    min_history: int = 20,
    rel_floor: float = 0.01,
) -> dict[str, float | int | None]:
    """How often the rule fires on ``name`` in runs with no instability (the false-alarm base rate): move
    onsets per record, among the records with a full history."""
    tests = fired = 0
    two_sided = SIGNALS.get(name, (None, False))[1]
    for t in trajs:
        ms = _moves(_series(t["step"], t.get(name) or [], name), two_sided, window, k, min_history, rel_floor)
        tests += len(ms)
        fired += sum(m[2] for m in ms)
    return {"records": tests, "moves": fired, "rate": fired / tests if tests else None}


def shared_events(runs: Sequence[Mapping[str, Any]], tol: int = 2) -> dict[str, list[str]]:
    """Per run name: the variants of *another architecture* whose run of the same (init, lr) has an event
    starting within ``tol`` steps of one of this run's events. Every run sees the same batches in the same
    order and the same lr schedule, so a spike that recurs across architectures at the same step belongs to
    the batches or the schedule, not to the architecture. (z-loss at 1e-4 barely changes a Llama run: the
    same architecture's recurrence says nothing and is not counted.)"""
    out: dict[str, list[str]] = {}
    for r in runs:
        starts = [e["start_step"] for e in r.get("events", [])]
        arch = r.get("arch")
        out[r["name"]] = sorted(
            {
                o["variant"]
                for o in runs
                if o is not r
                and (o["init"], o["lr"]) == (r["init"], r["lr"])
                and o.get("arch") != arch
                and any(abs(e["start_step"] - s) <= tol for e in o.get("events", []) for s in starts)
            }
        )
    return out


def _max_or_none(v: Any) -> float | None:
    if isinstance(v, list):
        xs = [x for x in v if finite(x)]
        return max(xs) if xs else None
    return v if finite(v) else None


def trajectory(records: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    """Per-record series of a trainer log: step, loss (the cross-entropy: ``ce_loss`` when the log has it, as
    with z-loss), lr, grad_norm and the signals (per-layer lists reduced to their max), in log order."""
    keys = ("step", "loss", "lr", "grad_norm", "attn_logit_max", "log_z_mean", "log_z_max", "update_ratio")
    out: dict[str, list] = {k: [] for k in keys}
    out["attn_logit_max_layers"] = []
    for r in records:
        out["step"].append(int(r["step"]))
        ce = r["ce_loss"] if "ce_loss" in r else r.get("loss")
        out["loss"].append(ce if finite(ce) else None)
        out["lr"].append(r.get("lr"))
        out["grad_norm"].append(r.get("grad_norm") if finite(r.get("grad_norm")) else None)
        for key in ("attn_logit_max", "log_z_mean", "log_z_max", "update_ratio"):
            out[key].append(_max_or_none(r.get(key)))
        a = r.get("attn_logit_max")
        out["attn_logit_max_layers"].append([x if finite(x) else None for x in a] if isinstance(a, list) else None)
    return out


def summarise_signals(traj: Mapping[str, Sequence[Any]], tail: float = 0.1) -> dict[str, float | None]:
    """Max and end-of-run mean (last ``tail`` share of the records) of each signal."""
    n = len(traj["step"])
    cut = max(1, int(round(n * tail)))
    out: dict[str, float | None] = {}
    for key in ("attn_logit_max", "log_z_mean", "log_z_max", "update_ratio"):
        xs = [x for x in traj.get(key, []) if finite(x)]
        end = [x for x in traj.get(key, [])[-cut:] if finite(x)]
        out[f"{key}_max"] = max(xs) if xs else None
        out[f"{key}_end"] = sum(end) / len(end) if end else None
    zs = [abs(x) for x in traj.get("log_z_mean", []) if finite(x)]
    out["abs_log_z_mean_max"] = max(zs) if zs else None
    return out


def rounded(traj: Mapping[str, list], digits: int = 5) -> dict[str, list]:
    """The trajectory with floats rounded to ``digits`` significant digits (smaller JSON)."""

    def r(x: Any) -> Any:
        if isinstance(x, list):
            return [r(y) for y in x]
        if isinstance(x, float):
            return float(f"{x:.{digits}g}") if math.isfinite(x) else None
        return x

    return {k: r(v) for k, v in traj.items()}
