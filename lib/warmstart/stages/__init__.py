"""The DVC stages: one module per stage, each a thin ``run(params, ...) -> metrics``.

A stage module declares its contract with DVC, and the tests hold ``dvc.yaml``
to it (``tests/test_dvc_contract.py``):

``PARAMS``
    The params keys the stage reads (dotted; a section name covers all its
    keys); a dict ``{dvc stage: keys}`` where one module runs several stages. ``run`` sees the params only through :func:`declared`, a view that
    refuses any other key, so a stage cannot depend on a value DVC does not
    track. ``dvc.yaml`` lists exactly these keys.
code deps
    The stage module's import closure inside ``warmstart``
    (:func:`code_deps`), which ``dvc.yaml`` lists file by file, so editing a
    module reruns exactly the stages that import it.

``run`` writes the stage's outputs, its small flat headline metrics file
(``reports/metrics/<stage>.json``, :func:`write_headline`) and its report
fragment, and returns the headline metrics. Notebooks call ``run`` and keep
only orchestration, display and plots.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

# dvc.yaml stage name -> the module that runs it (the scratch/original stages and the
# pretrain matrix are one module; vocab_swap's matrix is the swap module)
STAGES = {
    "corpus": "warmstart.stages.corpus",
    "tokenizer": "warmstart.stages.tokenizer",
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
    "report": "warmstart.stages.report",
}

# what the Params helpers read: calling them through a view needs these keys declared
_HELPERS = {
    "path": ("shared.data_dir",),
    "report_path": ("shared.reports_dir",),
    "languages": ("shared.source_lang", "shared.target_lang", "corpus.extra_languages"),
    "resolve_lang": ("shared.source_lang", "shared.target_lang"),
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


def _module_file(name: str, root: Path) -> Path | None:
    parts = name.split(".")
    base = root.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _imports(path: Path, module: str) -> set[str]:
    """Modules named by every import statement in ``path`` (function-level ones included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import submodule`
    return out


def import_closure(module: str, root: Path, package: str = "warmstart") -> set[str]:
    """Every ``package`` module that importing and running ``module`` may execute (packages' __init__ too)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or not (name == package or name.startswith(package + ".")):
            continue
        path = _module_file(name, root)
        if path is None:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run first
        todo.extend(_imports(path, name))
    return seen


def code_deps(module: str, root: str | Path = ".") -> list[str]:
    """The files of ``module``'s import closure, as dvc.yaml deps (``lib/warmstart/...``), sorted."""
    lib = Path(root, "lib")
    spec_root = lib if (lib / "warmstart").is_dir() else Path(importlib.util.find_spec("warmstart").origin).parents[1]
    files = {_module_file(m, spec_root) for m in import_closure(module, spec_root)}
    return sorted(str(Path("lib") / f.relative_to(spec_root)) for f in files if f is not None)


# ---------------------------------------------------------------- outputs


def read_records(params: Any, section: str, names: Any, stage: str) -> dict[str, dict]:
    """``reports/<section>/<name>.json`` of each item of a DVC matrix, by name; a missing one names the
    stage that writes it (``<stage>@<name>``)."""
    out = {}
    for name in names:
        path = params.report_path(section, f"{name}.json")
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run the {stage}@{name} stage first")
        out[name] = json.loads(path.read_text())
    return out


def save_figure(fig: Any, path: Path) -> Path:
    """Write a report figure (its folder made) and free it: stages run headless, many figures per process."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_headline(params: Any, stage: str, metrics: dict[str, Any], max_keys: int = 12) -> dict[str, Any]:
    """Write ``reports/metrics/<stage>.json``: a flat dict of at most ``max_keys`` numbers/strings."""
    from warmstart.io import write_json

    bad = {k: type(v).__name__ for k, v in metrics.items() if not isinstance(v, (int, float, str, bool, type(None)))}
    if bad:
        raise TypeError(f"headline metrics of {stage!r} must be flat scalars; not: {bad}")
    odd = sorted(k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v))
    if odd:  # json would write Infinity / NaN, which strict JSON readers (jq, JavaScript, DVC's plots) reject
        raise ValueError(f"headline metrics of {stage!r} must be finite numbers (or null); not finite: {odd}")
    if len(metrics) > max_keys:
        raise ValueError(
            f"headline metrics of {stage!r} have {len(metrics)} keys (at most {max_keys}): {sorted(metrics)}"
        )
    write_json(params.report_path("metrics", f"{stage}.json"), metrics)
    return metrics
