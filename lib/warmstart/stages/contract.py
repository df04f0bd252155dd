"""The contract between a stage module and ``dvc.yaml``: which params it may read, which code it runs.

``PARAMS``
    Every stage module declares the params keys it reads (dotted; a section name covers all its keys), or a dict
    ``{dvc stage: keys}`` where one module runs several stages. ``run`` sees the params only through
    :func:`declared`, a view that refuses any other key, so a stage cannot depend on a value DVC does not track.
    ``dvc.yaml`` lists exactly these keys. :data:`SHARED` is the run of ``shared.*`` keys most stages start with.
code deps
    The stage module's import closure (:mod:`warmstart.closure`), as DVC deps by package folder
    (:func:`code_deps`): the folder of every subpackage the closure enters (``lib/warmstart/train``), every
    top-level module it imports (``lib/warmstart/config.py``), and of ``stages/`` only the stage's own module
    and this file. The trade-off: an edit anywhere in a package reruns every stage that uses that package.

``python -m warmstart.stages check`` diffs ``dvc.yaml`` against both; ``sync`` rewrites them
(``tests/test_dvc_contract.py`` fails on drift).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from warmstart.closure import import_closure, lib_root, module_file

# dvc.yaml stage name -> the module that runs it (the scratch/original stages and the
# pretrain matrix are one module; vocab_swap's matrix is the swap module)
STAGES = {
    "corpus": "warmstart.stages.corpus",
    "tokenizer": "warmstart.stages.tokenizer",
    "tokenize": "warmstart.stages.tokenize",
    "base": "warmstart.stages.base",
    "scratch": "warmstart.stages.pretrain",
    "vocab_swap": "warmstart.stages.swap",
    "pretrain": "warmstart.stages.pretrain",
    "original": "warmstart.stages.pretrain",
    "arm": "warmstart.stages.pretrain",
    "evaluate": "warmstart.stages.evaluate",
    "spikes": "warmstart.stages.spikes",
    "stability": "warmstart.stages.stability",
    "context_testbed": "warmstart.stages.context",
    "context_run": "warmstart.stages.context",
    "context": "warmstart.stages.context",
    "compress_prep": "warmstart.stages.compress",
    "compress_run": "warmstart.stages.compress",
    "compress": "warmstart.stages.compress",
    "chat": "warmstart.stages.chat",
    "report": "warmstart.stages.report",
}

# the shared keys most stages read, in the order their PARAMS list them (spread in: ``(*SHARED, ...)``)
SHARED = ("shared.seed", "shared.source_lang", "shared.target_lang", "shared.data_dir", "shared.reports_dir")

# what the Params helpers read: calling them through a view needs these keys declared
_HELPERS = {
    "path": ("shared.data_dir",),
    "report_path": ("shared.reports_dir",),
    "languages": ("shared.source_lang", "shared.target_lang", "corpus.extra_languages"),
    "resolve_lang": ("shared.source_lang", "shared.target_lang"),
    "pretrain_for": ("pretrain", "study.arms"),
    "mix_language": ("shared.source_lang", "shared.target_lang", "corpus.extra_languages"),
}
RECORD_ENV = "WARMSTART_PARAMS_RECORD"  # a file: append every key read (one JSON line per stage run)


class UndeclaredParam(KeyError):
    """A stage read a params key its PARAMS (and so dvc.yaml) does not declare."""

    def __str__(self) -> str:
        return str(self.args[0])


def _covers(declared: Iterable[str], key: str) -> bool:
    return any(key == d or key.startswith(d + ".") for d in declared)


class ParamsView:
    """Read-only view of validated params that lets a stage read only its declared keys."""

    __slots__ = ("_obj", "_declared", "_prefix", "_seen", "_stage")

    def __init__(self, obj: BaseModel, declared: frozenset[str], prefix: str, seen: set[str], stage: str) -> None:
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_declared", declared)
        object.__setattr__(self, "_prefix", prefix)
        object.__setattr__(self, "_seen", seen)
        object.__setattr__(self, "_stage", stage)

    def _need(self, key: str) -> None:
        self._seen.add(key)
        if not _covers(self._declared, key):
            raise UndeclaredParam(
                f"stage {self._stage!r} read params key {key!r}, which it does not declare: add it to PARAMS in "
                f"{STAGES.get(self._stage, 'its stage module')} and to the stage's params in dvc.yaml"
            )

    def __getattr__(self, name: str) -> Any:
        obj, prefix = self._obj, self._prefix
        key = f"{prefix}.{name}" if prefix else name
        if name in type(obj).model_fields:
            value = getattr(obj, name)
            if isinstance(value, BaseModel):
                return ParamsView(value, self._declared, key, self._seen, self._stage)
            self._need(key)
            return value
        if not prefix and name in _HELPERS:
            for k in _HELPERS[name]:
                self._need(k)
        else:  # any other attribute of a section (model_dump, a method) uses the whole section
            self._need(prefix or "<all params>")
        return getattr(obj, name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("params are read-only")

    @property  # type: ignore[misc]
    def __class__(self):  # isinstance(view, Params) holds, so library code takes it as params
        return type(self._obj)

    def __repr__(self) -> str:
        return f"ParamsView({self._stage}: {self._prefix or 'params'})"


def stage_keys(module: Any, stage: str) -> tuple[str, ...]:
    """The params keys ``module`` declares for DVC stage ``stage``."""
    keys = module.PARAMS
    return tuple(keys[stage] if isinstance(keys, dict) else keys)


def declared(params: Any, stage: str, keys: Iterable[str]) -> Any:
    """``params`` as a view that refuses keys outside ``keys`` (an existing view is re-scoped)."""
    obj = params._obj if isinstance(params, ParamsView) else params
    view = ParamsView(obj, frozenset(keys), "", set(), stage)
    record = os.environ.get(RECORD_ENV)
    if record:
        import atexit

        def dump() -> None:
            with open(record, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"stage": stage, "keys": sorted(view._seen)}) + "\n")

        atexit.register(dump)
    return view


def unwrap(params: Any) -> Any:
    """The validated params object behind a view (for code that needs the whole model, e.g. a dump)."""
    return params._obj if isinstance(params, ParamsView) else params


# ---------------------------------------------------------------- code deps


def code_deps(module: str, root: str | Path = ".") -> list[str]:
    """``module``'s import closure as dvc.yaml deps, sorted: package folders, top-level modules and, of
    ``stages/``, the files the closure runs (so one stage's edit does not rerun the others)."""
    lib = lib_root(root)
    deps = set()
    for name in import_closure(module, lib):
        parts = name.split(".")
        if len(parts) >= 2 and parts[1] != "stages" and (lib / "warmstart" / parts[1]).is_dir():
            deps.add(f"lib/warmstart/{parts[1]}")
        else:
            f = module_file(name, lib)
            deps.add(str(Path("lib") / f.relative_to(lib)))
    return sorted(deps)
