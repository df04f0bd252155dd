"""Synthetic benchmark for ``warmstart.spikes`` with ground truth.

``synthetic_runs(seed, n_runs)`` makes loss curves with injected spikes and
negative controls; ``evaluate`` scores one method's events against them;
``benchmark`` runs every method and returns the table;
``python -m warmstart.spikes bench`` prints it.

Metrics (event level):

* precision: events that match an injected spike / all events (all runs,
  controls included);
* recall: injected spikes matched by an event; ``recall_ge8`` the same for
  spikes of at least 8 noise units.  A spike and an event match when the
  event's start or peak is within +-5 records of the spike's onset or peak
  (one-to-one, nearest first);
* mean_delay: records from a matched spike's onset to its event's first
  flagged record;
* fa_per_10k: unmatched events starting on a clean record, per 10,000 clean
  records (a clean record is outside every spike's neighbourhood
  [onset - 5, onset + width + max(20, width)]); ``fa_per_10k_controls`` the
  same on the negative-control runs only.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from warmstart.spikes.detectors import SpikeEvent, detect
from warmstart.spikes.params import MAD_TO_SIGMA, METHODS

__all__ = ["GOALS", "SyntheticRun", "synthetic_runs", "evaluate", "benchmark", "meets_goals", "bench_markdown"]

GOALS = {"recall_ge8": 0.95, "precision": 0.9, "fa_per_10k": 1.0}
MATCH_TOL = 5  # steps


@dataclass
class SyntheticRun:
    """One synthetic run with ground truth.

    ``spikes``: dicts with ``onset``, ``peak``, ``end`` (steps), ``height``
    (in noise units, see ``synthetic_runs``), ``width``, ``grad`` (co-spike).
    ``zone``: boolean array, True where a record is inside a spike's
    neighbourhood (not a clean step)."""

    name: str
    kind: str  # "spikes" or "control"
    shape: str
    df: pd.DataFrame
    spikes: list[dict]
    hotswaps: list[int]
    noise: float  # base sigma of the log-loss noise
    zone: np.ndarray = field(repr=False, default=None)
    sigma_t: np.ndarray = field(repr=False, default=None)  # per-record noise sigma


_SHAPES = ("power", "exp", "cosine", "plateau")
_PLAN = (
    ("spikes", "power", {}),
    ("spikes", "exp", {}),
    ("spikes", "cosine", {}),
    ("spikes", "plateau", {}),
    ("spikes", "wsd", {"hotswap": True}),
    ("spikes", "cosine", {"grad": False, "lr": False}),
    ("control", "warmup", {}),
    ("control", "warmup", {"lr": False}),
    ("control", "wsd", {}),
    ("control", "hotswap_up", {}),
    ("control", "hotswap_down", {}),
    ("control", "levelshift", {}),
    ("control", "rewarm", {}),
    ("spikes", "exp", {"lr": False}),
)


def _lr_schedule(rng, n: int, shape: str) -> tuple[np.ndarray, int]:
    t = np.arange(n, dtype=float)
    wu = int(rng.integers(50, 300))
    if shape == "warmup":
        wu = int(rng.integers(100, 400))
    ramp = np.minimum(1.0, (t + 1) / wu)
    if shape == "cosine":
        prog = np.clip((t - wu) / max(n - wu, 1), 0, 1)
        body = 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * prog))
    elif shape == "wsd":
        d0 = int(n * rng.uniform(0.6, 0.8))
        body = np.where(t < d0, 1.0, np.clip(1 - (t - d0) / (n - d0), 0.02, 1))
    elif shape == "rewarm":  # two-phase warm start: lr restarts from ~0 with a new warm-up
        p2 = int(n * rng.uniform(0.25, 0.5))
        wu2 = int(rng.integers(50, 300))
        body = np.where(t < p2, 1.0, np.minimum(1.0, (t - p2 + 1) / wu2))
    else:
        body = np.ones(n)
    return ramp * np.where(t < wu, 1.0, body), wu


def _clean_curve(rng, n: int, shape: str, lr: np.ndarray) -> np.ndarray:
    """Noise-free loss (natural units) driven by cumulative learning rate."""
    S = np.cumsum(lr)
    l_inf = rng.uniform(1.5, 3.0)
    l0 = rng.uniform(7.0, 11.0)
    s0 = rng.uniform(20, 150)
    alpha = rng.uniform(0.3, 0.7)
    anneal = rng.uniform(0.05, 0.25)  # loss term proportional to lr (drops as lr decays)
    if shape == "exp":
        core = np.exp(-S / rng.uniform(300, 1500))
        core = 0.7 * core + 0.3 * (1 + S / s0) ** -alpha
    elif shape == "plateau":
        sp = rng.uniform(150, 600)  # plateau in cumulative-lr units
        soft = np.logaddexp(0, (S - sp) / 30.0) * 30.0  # softplus: 0 on the plateau, then S - sp
        core = 0.15 + 0.85 * (1 + soft / s0) ** -alpha
    else:
        core = (1 + S / s0) ** -alpha
    return l_inf + (l0 - l_inf - anneal) * core + anneal * lr


def _spike_shape(height: float, width: int, rise: int, length: int) -> np.ndarray:
    """Linear rise to ``height`` over ``rise`` records, then exponential decay
    that reaches 1 noise unit at ``width`` records after onset."""
    out = np.zeros(length)
    for j in range(min(rise + 1, length)):
        out[j] = height * (j + 1) / (rise + 1)
    tau = max(width - rise, 1) / math.log(max(height, 1.5))
    j = np.arange(rise + 1, length)
    out[rise + 1 :] = height * np.exp(-(j - rise) / tau)
    return out


def synthetic_runs(
    seed: int = 0, n_runs: int = 98, n_steps: int = 4000, mad: str = "scaled", noise: str = "gauss"
) -> list[SyntheticRun]:
    """Synthetic loss curves with ground-truth spikes, and negative controls.

    Curves: power-law, exponential, warm-up + cosine, plateau + decay, WSD,
    driven by the cumulative learning rate (so warm-up and decay kinks shape
    them), with multiplicative noise (log-normal, sigma 0.4 %-3 % per run,
    slowly varying, plus a slow AR(1) wobble).  Spike runs get spikes of 4-12x
    the noise scale, 1-50 records wide (linear rise over up to a quarter of
    the width, exponential recovery), 60 % with a grad-norm co-spike.
    Controls have no spikes: warm-up (with and without ``lr``), WSD decay
    kink, announced hot-swap level shifts up / down (``corpus`` changes) and
    unannounced persistent level shifts.

    ``mad``: the unit of spike height. ``"scaled"`` (default): 1.4826 x MAD of
    the noise (= its sigma; the unit of ``SpikeEvent.magnitude``); ``"raw"``:
    the raw MAD (0.6745 sigma), i.e. spikes 1.48x smaller.

    ``noise``: ``"gauss"`` (default) or ``"t5"`` (Student-t, 5 degrees of
    freedom, scaled to the same 1.4826 x MAD: a heavy-tailed stress test).
    The run plan cycles through 14 kinds, so ``n_runs`` = 98 is 7 of each.
    """
    if mad not in ("scaled", "raw"):
        raise ValueError(f"mad must be 'scaled' or 'raw', got {mad!r}")
    if n_steps < 1000:
        raise ValueError(f"n_steps must be >= 1000 (warm-up, hot-swaps and spikes need room), got {n_steps}")
    if noise not in ("gauss", "t5"):
        raise ValueError(f"noise must be 'gauss' or 't5', got {noise!r}")
    t5_mad = 0.7266868438004229  # median |t_5|
    unit = 1.0 if mad == "scaled" else 1.0 / MAD_TO_SIGMA
    runs = []
    for r in range(n_runs):
        kind, shape, opts = _PLAN[r % len(_PLAN)]
        rng = np.random.default_rng([seed, r])
        n = n_steps
        sched_shape = {"hotswap_up": "power", "hotswap_down": "cosine", "levelshift": "power"}.get(shape, shape)
        lr, wu = _lr_schedule(rng, n, sched_shape)
        curve_shape = sched_shape if sched_shape in _SHAPES else "power"
        if shape == "rewarm":
            curve_shape = "exp"
        clean = np.log(_clean_curve(rng, n, curve_shape, lr))
        sigma = float(np.exp(rng.uniform(np.log(0.004), np.log(0.03))))
        # slowly varying noise level (+-20 %) and a slow AR(1) wobble
        sig_t = sigma * np.exp(0.2 * np.sin(2 * np.pi * (np.arange(n) / rng.uniform(800, 3000) + rng.uniform())))
        wob = np.zeros(n)
        e = rng.normal(size=n) * 0.5 * sigma * math.sqrt(1 - 0.995**2)
        for i in range(1, n):
            wob[i] = 0.995 * wob[i - 1] + e[i]
        if shape == "rewarm":  # unfreezing + re-warm: a slow bump up (2-6 %), then recovery
            p2 = int(np.argmax(lr[wu:] < 0.5)) + wu
            rise, amp = int(rng.integers(50, 200)), rng.uniform(0.02, 0.06)
            t = np.arange(n - p2, dtype=float)
            clean[p2:] += amp * np.where(t < rise, t / rise, np.exp(-(t - rise) / rng.uniform(100, 500)))
        eps = rng.normal(size=n) if noise == "gauss" else rng.standard_t(5, size=n) / (MAD_TO_SIGMA * t5_mad)
        y = clean + wob + sig_t * eps
        steps = np.arange(1, n + 1)
        hotswaps: list[int] = []
        corpus = None
        blocked = np.zeros(n, dtype=bool)
        blocked[: wu + 300] = True
        if shape in ("hotswap_up", "hotswap_down", "levelshift") or opts.get("hotswap"):
            k = int(rng.integers(1, 3))
            lo, hi = min(wu + 400, n // 2), max(n - 300, n // 2 + 1)
            if hi - lo < 800:
                k = 1  # too short for two hot-swaps 400 records apart
            pos = np.sort(rng.choice(np.arange(lo, hi), size=k, replace=False))
            while k > 1 and pos[1] - pos[0] < 400:
                pos = np.sort(rng.choice(np.arange(lo, hi), size=k, replace=False))
            if shape == "hotswap_up":
                signs = np.ones(k)
            elif shape == "hotswap_down":
                signs = -np.ones(k)
            else:
                signs = rng.choice([-1.0, 1.0], size=k)
            for pidx, sgn in zip(pos, signs):
                size = rng.uniform(0.03, 0.15)
                t = np.arange(n - pidx)
                adapt = 0.5 + 0.5 * np.exp(-t / rng.uniform(300, 1500))  # half the shift fades
                y[pidx:] += sgn * size * adapt
                blocked[max(pidx - 50, 0) : pidx + 200] = True
            hotswaps = [int(steps[pidx]) for pidx in pos]
            if shape != "levelshift":
                corpus = np.full(n, "c0", dtype=object)
                for j, pidx in enumerate(pos):
                    corpus[pidx:] = f"c{j + 1}"
        spikes: list[dict] = []
        g = None
        has_grad = opts.get("grad", True) and rng.uniform() < 0.85
        if has_grad:
            sg = rng.uniform(0.05, 0.2)
            gbase = rng.uniform(0.3, 1.2) * (1 + 8 * np.exp(-np.arange(n) / rng.uniform(50, 300)))
            g = np.log(gbase) + sg * rng.normal(size=n)
        if kind == "spikes":
            n_sp = int(rng.integers(5, 9))
            tries = 0
            while len(spikes) < n_sp and tries < 500:
                tries += 1
                o = int(rng.integers(0, n - 150))
                if blocked[max(o - 250, 0) : o + 250].any():
                    continue
                height = float(rng.uniform(4, 12))
                width = int(np.clip(round(math.exp(rng.uniform(0, math.log(50)))), 1, 50))
                rise = 0 if width <= 2 else int(rng.integers(0, width // 4 + 1))
                length = min(n - o, width + 200)
                amp = height * unit * sig_t[o]
                y[o : o + length] += _spike_shape(height, width, rise, length) * unit * sig_t[o]
                co = bool(g is not None and rng.uniform() < 0.6)
                if co:
                    gk = rng.uniform(6, 30) * sg
                    gw = max(1, width // 3)
                    go = max(o - int(rng.integers(0, 2)), 0)
                    gl = min(n - go, gw + 50)
                    g[go : go + gl] += _spike_shape(gk, gw, 0, gl)
                spikes.append(
                    {
                        "onset": int(steps[o]),
                        "peak": int(steps[o + rise]),
                        "end": int(steps[min(o + width - 1, n - 1)]),
                        "height": height,
                        "width": width,
                        "rise": rise,
                        "grad": co,
                        "amp": float(amp),
                    }
                )
                blocked[max(o - 250, 0) : o + 250] = True
            spikes.sort(key=lambda s: s["onset"])
        zone = np.zeros(n, dtype=bool)
        for s in spikes:
            a = s["onset"] - 1 - MATCH_TOL
            b = s["onset"] - 1 + s["width"] + max(20, s["width"])
            zone[max(a, 0) : min(b, n)] = True
        data = {"step": steps, "loss": np.exp(y)}
        if g is not None:
            data["grad_norm"] = np.exp(g)
        if opts.get("lr", True):
            data["lr"] = 3e-4 * lr
        if corpus is not None:
            data["corpus"] = corpus
        df = pd.DataFrame(data)
        name = f"s{seed}-r{r:03d}-{kind}-{shape}" + ("" if opts.get("lr", True) else "-nolr")
        runs.append(
            SyntheticRun(
                name=name,
                kind=kind,
                shape=shape,
                df=df,
                spikes=spikes,
                hotswaps=hotswaps,
                noise=sigma,
                zone=zone,
                sigma_t=sig_t,
            )
        )
    return runs


def _match(events: Sequence[SpikeEvent], spikes: Sequence[dict], tol: int = MATCH_TOL):
    """One-to-one greedy matching; returns {spike index: event index}."""
    pairs = []
    for si, s in enumerate(spikes):
        for ei, e in enumerate(events):
            d = min(abs(a - b) for a in (e.start_step, e.peak_step) for b in (s["onset"], s["peak"]))
            if d <= tol:
                pairs.append((d, si, ei))
    pairs.sort()
    used_s, used_e, out = set(), set(), {}
    for _, si, ei in pairs:
        if si not in used_s and ei not in used_e:
            used_s.add(si)
            used_e.add(ei)
            out[si] = ei
    return out


def evaluate(runs: Sequence[SyntheticRun], events: Sequence[Sequence[SpikeEvent]]) -> dict:
    """Event-level metrics of one method over ``runs`` (``events[i]`` for run i)."""
    tp = n_ev = n_sp = found = n_big = found_big = 0
    delays: list[int] = []
    fa = fa_ctrl = 0
    clean = clean_ctrl = 0
    missed: list[tuple[str, dict]] = []
    for run, evs in zip(runs, events):
        m = _match(evs, run.spikes)
        n_ev += len(evs)
        tp += len(m)
        n_sp += len(run.spikes)
        found += len(m)
        for si, s in enumerate(run.spikes):
            big = s["height"] >= 8
            n_big += big
            if si in m:
                found_big += big
                delays.append(evs[m[si]].start_step - s["onset"])
            elif big:
                missed.append((run.name, s))
        matched_e = set(m.values())
        n_clean = int((~run.zone).sum())
        clean += n_clean
        if run.kind == "control":
            clean_ctrl += n_clean
        steps0 = int(run.df["step"].iloc[0])
        for ei, e in enumerate(evs):
            if ei in matched_e:
                continue
            if not run.zone[e.start_step - steps0]:
                fa += 1
                if run.kind == "control":
                    fa_ctrl += 1
    return {
        "events": n_ev,
        "spikes": n_sp,
        "precision": tp / n_ev if n_ev else float("nan"),
        "recall": found / n_sp if n_sp else float("nan"),
        "recall_ge8": found_big / n_big if n_big else float("nan"),
        "mean_delay": float(np.mean(delays)) if delays else float("nan"),
        "fa_per_10k": 1e4 * fa / clean if clean else float("nan"),
        "fa_per_10k_controls": 1e4 * fa_ctrl / clean_ctrl if clean_ctrl else float("nan"),
        "clean_steps": clean,
        "missed_ge8": missed,
    }


def benchmark(
    seed: int = 1,
    n_runs: int = 98,
    n_steps: int = 4000,
    methods: Sequence[str] = METHODS,
    mad: str = "scaled",
    noise: str = "gauss",
    params: dict[str, dict] | None = None,
    runs: Sequence[SyntheticRun] | None = None,
) -> pd.DataFrame:
    """Run each method on ``synthetic_runs(seed, n_runs, n_steps, mad)``; one row
    per method with precision, recall, recall on spikes >= 8x, mean detection
    delay (records from onset to the first flagged one), false alarms per 10k
    clean records (all runs, and negative controls only), and wall time."""
    runs = list(runs) if runs is not None else synthetic_runs(seed, n_runs, n_steps, mad, noise)
    params = params or {}
    rows = []
    for method in methods:
        t0 = time.perf_counter()
        evs = [detect(run.df, method, **params.get(method, {})) for run in runs]
        dt = time.perf_counter() - t0
        m = evaluate(runs, evs)
        m.pop("missed_ge8")
        rows.append({"method": method, **m, "seconds": dt})
    out = pd.DataFrame(rows).set_index("method")
    out.attrs.update({"seed": seed, "n_runs": len(runs), "n_steps": n_steps, "mad": mad, "noise": noise})
    return out


def meets_goals(row: pd.Series | dict) -> dict[str, bool]:
    """Which of ``GOALS`` a benchmark row meets."""
    return {
        "recall_ge8": row["recall_ge8"] >= GOALS["recall_ge8"],
        "precision": row["precision"] >= GOALS["precision"],
        "fa_per_10k": row["fa_per_10k"] <= GOALS["fa_per_10k"],
    }


def bench_markdown(table: pd.DataFrame) -> str:
    """The benchmark table as markdown, with what produced it and whether the
    default method meets ``GOALS``."""
    a = table.attrs
    cols = [
        "events",
        "spikes",
        "precision",
        "recall",
        "recall_ge8",
        "mean_delay",
        "fa_per_10k",
        "fa_per_10k_controls",
        "clean_steps",
        "seconds",
    ]
    head = (
        "# Loss-spike detector benchmark\n\n"
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n"
        f"- data: synthetic_runs(seed={a.get('seed')}, n_runs={a.get('n_runs')}, n_steps={a.get('n_steps')}, "
        f"mad={a.get('mad')!r}, noise={a.get('noise')!r}); the robust defaults were tuned on seed 0\n"
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}, "
        f"numpy {np.__version__}, pandas {pd.__version__}\n"
        f"- goals for robust: recall on spikes >= 8x >= {GOALS['recall_ge8']}, precision >= "
        f"{GOALS['precision']}, false alarms <= {GOALS['fa_per_10k']} per 10k clean records\n"
    )
    if "robust" in table.index:
        met = meets_goals(table.loc["robust"])
        head += "- robust meets: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in met.items()) + "\n"
    return head + "\n" + _to_markdown(table[cols]) + "\n"


def _to_markdown(t: pd.DataFrame) -> str:
    def cell(v) -> str:
        if isinstance(v, (int, np.integer)):
            return str(int(v))
        if isinstance(v, (float, np.floating)):
            return "nan" if not np.isfinite(v) else f"{v:.3f}"
        return str(v)

    cols = [t.index.name or ""] + [str(c) for c in t.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, *vals in t.itertuples(name=None):
        lines.append("| " + " | ".join([str(idx)] + [cell(v) for v in vals]) + " |")
    return "\n".join(lines)
