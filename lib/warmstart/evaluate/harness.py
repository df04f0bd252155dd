"""Standard benchmarks (MMLU, HellaSwag, ARC, their translations, ...) through lm-evaluation-harness.

:func:`run_tasks` runs lm-eval task, group or tag names on an in-memory Hugging Face model. Names are
looked up in lm-eval's own task registry (the tasks it ships, the ones the seed papers report) plus any
``include`` folders of task YAMLs, e.g. a local translation of a benchmark; an include task of the same
name overrides the shipped one. The registry's datasets come from the Hugging Face hub (or its cache,
offline); nothing here passes ``trust_remote_code``, so a task whose dataset needs it fails by name.

Unlike the cloze probe (:func:`warmstart.evaluate.probes.cloze_accuracy`) no separator is put before the
contexts: the tasks are scored as lm-eval defines them, so the numbers compare with published ones.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from warmstart.evaluate.probes import EvalError, _quiet

# lm-eval's default for the bootstrapped standard errors (chrF, BLEU, F1, ...); means (acc) have a closed form.
BOOTSTRAP_ITERS = 100_000


def load_registry(include: Sequence[str | Path] = ()) -> Any:
    """lm-eval's ``TaskManager`` with its default registry on plus the ``include`` folders.

    Indexing the registry takes seconds (some 15,000 names): build it once and pass it to
    :func:`run_tasks` when running several models.
    """
    missing = [str(p) for p in include if not Path(p).is_dir()]
    if missing:
        raise EvalError(f"lm_eval include: no such folder(s) {missing}")
    from lm_eval.tasks import TaskManager

    paths = [str(Path(p).resolve()) for p in include]
    return TaskManager(include_path=paths or None, include_defaults=True)


def checked_registry(tasks: Sequence[str], include: Sequence[str | Path] = ()) -> Any:
    """:func:`load_registry` with ``tasks`` checked against it (bad names fail before any model work)."""
    registry = load_registry(include)
    check_tasks(tasks, registry)
    return registry


def check_tasks(tasks: Sequence[str], registry: Any) -> None:
    """Raise :class:`EvalError` (a ``ValueError``) naming every task not in ``registry``, or a repeat."""
    if isinstance(tasks, str) or not tasks:
        raise EvalError(f"lm-eval tasks: a non-empty list of names is needed, got {tasks!r}")
    if len(set(tasks)) != len(tasks):
        raise EvalError(f"lm-eval tasks: {list(tasks)} repeats a name")
    known = set(registry.all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise EvalError(
            f"lm-eval tasks: unknown task(s) {unknown} (not in lm-eval's registry nor the include folders; "
            "`lm-eval ls tasks` lists the names)"
        )


def run_tasks(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[str],
    include: Sequence[str | Path] = (),
    limit: int | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
    *,
    registry: Any = None,
    bootstrap_iters: int = BOOTSTRAP_ITERS,
) -> dict[str, Any]:
    """``tasks`` (lm-eval task, group or tag names) on ``model`` (in memory, on its own device) as a
    JSON-able dict::

        {"lm_eval_version", "tasks_requested", "limit", "num_fewshot", "seed",
         "tasks": {task: {"metrics": {"acc": .., "acc_stderr": .., ...}, "n", "n_total",
                          "num_fewshot", "dataset_path", "dataset_name", "version"}},
         "groups": {group: {"metrics": {...}, "n", "subtasks"}}}

    ``metrics`` holds lm-eval's values under its own names, less its default filter suffix (``acc,none``
    -> ``acc``; another filter stays: ``exact_match,strict-match``); a standard error lm-eval reports as
    ``N/A`` is ``None``. ``n``: the items scored (after ``limit``), ``n_total``: the task's test set.
    ``groups``: the requested groups lm-eval aggregates (e.g. ``mmlu``), ``n`` summed over their tasks.
    ``seed`` seeds Python, numpy, torch and the few-shot sampler (lm-eval sets them process-wide).

    ``registry``: a :func:`load_registry` result to reuse (then ``include`` is ignored). Unknown names
    raise :class:`EvalError` before the model is touched.
    """
    registry = load_registry(include) if registry is None else registry
    tasks = list(tasks)
    check_tasks(tasks, registry)
    from lm_eval import __version__, simple_evaluate
    from lm_eval.models.huggingface import HFLM

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model.device))
    with _quiet():
        out = simple_evaluate(
            model=lm,
            tasks=tasks,
            task_manager=registry,
            limit=limit,
            num_fewshot=num_fewshot,
            log_samples=False,
            bootstrap_iters=bootstrap_iters,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    return _flatten(out, tasks, limit=limit, num_fewshot=num_fewshot, seed=seed, version=__version__)


def _metrics(res: dict[str, Any]) -> dict[str, float | None]:
    """lm-eval's ``{"acc,none": .., "acc_stderr,none": .., "alias": ..}`` -> ``{"acc": .., "acc_stderr": ..}``."""
    out: dict[str, float | None] = {}
    for key, value in res.items():
        if "," not in key:  # alias, sample_len, ...
            continue
        name, filt = key.split(",", 1)
        value = None if value in ("N/A", None) else float(value)
        out[name if filt == "none" else key] = None if value is not None and math.isnan(value) else value
    return out


def _flatten(
    out: dict[str, Any], requested: list[str], *, limit: int | None, num_fewshot: int | None, seed: int, version: str
) -> dict[str, Any]:
    n_samples, configs = out.get("n-samples", {}), out.get("configs", {})
    tasks = {}
    for name in sorted(n_samples):
        cfg = configs.get(name, {})
        tasks[name] = {
            "metrics": _metrics(out["results"].get(name, {})),
            "n": int(n_samples[name]["effective"]),
            "n_total": int(n_samples[name]["original"]),
            "num_fewshot": out.get("n-shot", {}).get(name),
            "dataset_path": cfg.get("dataset_path"),
            "dataset_name": cfg.get("dataset_name"),
            "version": out.get("versions", {}).get(name),
        }
    subtasks = out.get("group_subtasks", {})

    def leaves(group: str) -> list[str]:
        return [leaf for child in subtasks.get(group, []) for leaf in (leaves(child) if child in subtasks else [child])]

    groups = {
        name: {
            "metrics": _metrics(res),
            "n": sum(tasks[t]["n"] for t in leaves(name) if t in tasks),
            "subtasks": leaves(name),
        }
        for name, res in sorted(out.get("groups", {}).items())
    }
    return {
        "lm_eval_version": version,
        "tasks_requested": requested,
        "limit": limit,
        "num_fewshot": num_fewshot,
        "seed": seed,
        "tasks": tasks,
        "groups": groups,
    }
