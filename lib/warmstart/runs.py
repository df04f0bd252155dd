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
``arm``
    A swap method's model (``method``) trained with some ``pretrain`` settings changed: an arm of
    ``study.arms`` (``fvt-hybrid``: NorMistral's hybrid objective). Its :attr:`Run.overrides`.

Seeded runs (:meth:`Run.at_seed`): the same run trained with another seed, for the run-to-run spread
(``python -m warmstart.evaluate.seed_spread``), under ``data/seeds/s<seed>/{runs,logs}/<name>``: the DVC study's
directories never hold them.

Derived runs start from the *adapted* model (:func:`adapted_run`: the evaluation's best run, or one
named in params) and are the study's later products:

``context``
    The adapted model with its context window extended by ``method`` and fine-tuned on long
    documents (``data/context/runs/<method>``; ``warmstart.stages.context``).
``compress``
    The adapted model pruned (or a same-shape model from scratch) and retrained, ``method`` being
    the variant (``data/compress/runs/<variant>``; ``warmstart.stages.compress``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Kind = Literal["base", "scratch", "original", "swap", "arm", "context", "compress"]
SPECIAL = ("scratch", "original")
DERIVED = ("context", "compress")  # study runs that are not a swap method, in report order


@dataclass(frozen=True)
class Run:
    name: str
    kind: Kind
    method: str | None = (
        None  # the swap method of a ``swap`` run (an arm's init); the extension method / compression variant
    )
    overrides: tuple[tuple[str, Any], ...] = ()  # an arm's pretrain settings
    seed: int | None = None  # None: the DVC study's run (shared.seed); else a seed-spread run

    def at_seed(self, seed: int) -> Run:
        """The same run trained with ``seed`` (its own directories under ``data/seeds/s<seed>``)."""
        if self.kind not in ("scratch", "original", "swap", "arm"):
            raise ValueError(f"only study runs are trained per seed, not {self.kind} runs ({self.name})")
        return Run(self.name, self.kind, self.method, self.overrides, seed)

    def _root(self, params: Any, what: str) -> Path:
        return params.path(what) if self.seed is None else params.path("seeds", f"s{self.seed}", what)

    def dir(self, params: Any) -> Path:
        """``data/runs/<name>``: the trainer's outputs (phases, checkpoints, TensorBoard logs, models);
        ``data/<kind>/runs/<method>`` for a derived run (outside ``data/runs``, which the study's stages
        depend on as a whole: the derived stages depend on the study, never the other way round)."""
        if self.kind in DERIVED:
            return params.path(self.kind, "runs", self.method or self.name)
        return self._root(params, "runs") / self.name

    def record_dir(self, params: Any) -> Path:
        """``data/logs/<name>`` (``data/<kind>/logs/<method>`` for a derived run): the run's step log
        ``log.jsonl`` and record ``run.json``, apart from the checkpoints, so that stages reading only
        logs (spikes, report) do not depend on any checkpoint."""
        if self.kind in DERIVED:
            return params.path(self.kind, "logs", self.method or self.name)
        return self._root(params, "logs") / self.name

    def log(self, params: Any) -> Path:
        return self.record_dir(params) / "log.jsonl"

    def record(self, params: Any) -> Path:
        return self.record_dir(params) / "run.json"

    def init_dir(self, params: Any) -> Path:
        """The step-0 model of the run (a Hugging Face model dir with its tokenizer)."""
        if self.kind in ("base", "original"):
            return base_model_dir(params)
        if self.kind in ("scratch", "context", "compress"):  # built by the run's own stage
            return self.dir(params) / "init"
        return swap_model_dir(params, self.method or self.name)


def base_model_dir(params: Any) -> Path:
    return params.path("models", "base")


def swap_model_dir(params: Any, method: str) -> Path:
    return params.path("models", f"swap-{method}")


BASE = Run("base", "base")


def study_runs(params: Any) -> list[Run]:
    """Every run of the study, in report order: scratch, original, one per swap method, then the arms."""
    arms = [Run(name, "arm", arm.init, tuple(sorted(arm.overrides.items()))) for name, arm in params.study.arms.items()]
    return [Run(n, n) for n in SPECIAL] + [Run(m, "swap", m) for m in params.vocab_swap.methods] + arms  # type: ignore[arg-type]


def run_names(params: Any) -> list[str]:
    return [r.name for r in study_runs(params)]


def get_run(params: Any, name: str) -> Run:
    """The study run called ``name``, or an error that lists the study's runs."""
    for run in study_runs(params):
        if run.name == name:
            return run
    raise ValueError(f"unknown run {name!r}; the study's runs are {run_names(params)}")


def derived_run(kind: Literal["context", "compress"], method: str) -> Run:
    """A run derived from the adapted model: ``context-<method>`` or ``compress-<variant>``."""
    if kind not in ("context", "compress"):
        raise ValueError(f"derived runs are 'context' or 'compress', not {kind!r}")
    return Run(f"{kind}-{method}", kind, method)


def adapted_run(params: Any, choice: str) -> Run:
    """The study's adapted model that later stages start from.

    ``choice`` is ``"best"`` (the evaluation's best run by final target bits per byte,
    ``best_run`` in ``reports/metrics/evaluate.json``) or the name of a study run.
    """
    import json

    if choice != "best":
        return get_run(params, choice)
    path = params.report_path("metrics", "evaluate.json")
    if not path.is_file():
        raise FileNotFoundError(
            f"run: best needs the evaluation's headline {path} (run the evaluate stage first), "
            f"or name a run ({', '.join(run_names(params))})"
        )
    best = json.loads(path.read_text()).get("best_run")
    if not best:
        raise ValueError(f"{path} names no best_run; name a run instead ({', '.join(run_names(params))})")
    return get_run(params, best)
