"""Every public name of :mod:`warmstart.spikes` in one namespace (notebooks, tests, interactive use)."""

from __future__ import annotations

from warmstart.spikes.analysis import analyse_run, format_events, run_boundaries, run_stage, study_runs
from warmstart.spikes.bench import (
    GOALS,
    SyntheticRun,
    bench_markdown,
    benchmark,
    evaluate,
    meets_goals,
    synthetic_runs,
)
from warmstart.spikes.cli import main
from warmstart.spikes.detectors import SpikeEvent, SpikeEvents, detect, events_frame, spike_score
from warmstart.spikes.logs import hotswap_steps, load_log, resolve_warmup
from warmstart.spikes.online import OnlineDetector
from warmstart.spikes.params import MAD_TO_SIGMA, METHODS, RobustParams, SpikeLogError
from warmstart.spikes.plots import plot_overview, plot_run

__all__ = [
    "METHODS",
    "MAD_TO_SIGMA",
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
    "plot_overview",
    "run_stage",
    "main",
    # the synthetic benchmark (warmstart.spikes.bench)
    "SyntheticRun",
    "synthetic_runs",
    "evaluate",
    "benchmark",
    "GOALS",
    "meets_goals",
    "bench_markdown",
]
