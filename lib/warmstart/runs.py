"""The one registry of the study's runs: their names, kinds, directories and starting models.

Every stage that trains, evaluates or analyses runs asks this module which runs
exist and where they live (``data/runs/<name>``: checkpoints and models;
``data/logs/<name>``: ``log.jsonl`` and ``run.json``), so adding a kind of run (a context-extended or a
pruned model) is one entry here, not an edit in every stage::

    for run in study_runs(params):          # scratch, original, then one per swap method
        run.name, run.kind, run.dir(params), run.init_dir(params)

Kinds:

``base``
    The source model (trained here, or loaded from the hub): ``data/runs/base``.
``scratch``
    The base architecture with the target tokenizer, random init: the baseline.
``original``
    The base model with its own tokenizer, no swap (continued pretraining).
``swap``
    The base model after a vocabulary swap with ``method`` (``data/models/swap-<method>``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Kind = Literal["base", "scratch", "original", "swap"]
SPECIAL = ("scratch", "original")  # study runs that are not a swap method, in report order


@dataclass(frozen=True)
class Run:
    name: str
    kind: Kind
    method: str | None = None  # the swap method of a ``swap`` run

    def dir(self, params: Any) -> Path:
        """``data/runs/<name>``: the trainer's outputs (phases, checkpoints, TensorBoard logs, models)."""
        return params.path("runs", self.name)

    def record_dir(self, params: Any) -> Path:
        """``data/logs/<name>``: the run's step log ``log.jsonl`` and record ``run.json``, apart from the
        checkpoints, so that stages reading only logs (spikes, report) do not depend on any checkpoint."""
        return params.path("logs", self.name)

    def log(self, params: Any) -> Path:
        return self.record_dir(params) / "log.jsonl"

    def record(self, params: Any) -> Path:
        return self.record_dir(params) / "run.json"

    def init_dir(self, params: Any) -> Path:
        """The step-0 model of the run (a Hugging Face model dir with its tokenizer)."""
        if self.kind in ("base", "original"):
            return base_model_dir(params)
        if self.kind == "scratch":
            return self.dir(params) / "init"
        return swap_model_dir(params, self.method or self.name)


def base_model_dir(params: Any) -> Path:
    return params.path("models", "base")


def swap_model_dir(params: Any, method: str) -> Path:
    return params.path("models", f"swap-{method}")


BASE = Run("base", "base")


def study_runs(params: Any) -> list[Run]:
    """Every run of the study, in report order: scratch, original, then one per swap method."""
    return [Run(n, n) for n in SPECIAL] + [Run(m, "swap", m) for m in params.vocab_swap.methods]  # type: ignore[arg-type]


def run_names(params: Any) -> list[str]:
    return [r.name for r in study_runs(params)]


def get_run(params: Any, name: str) -> Run:
    """The study run called ``name``, or an error that lists the study's runs."""
    for run in study_runs(params):
        if run.name == name:
            return run
    raise ValueError(f"unknown run {name!r}; the study's runs are {run_names(params)}")
