"""Light packages: a package ``__init__`` that exports names of its submodules without importing them.

A stage's DVC deps are its import closure (:func:`warmstart.stages.code_deps`), so a package ``__init__``
that imported every submodule would make every importer depend on all of them. Such a package lists its
exports here, imports them statically only under ``TYPE_CHECKING`` (which the closure reads), and binds::

    __getattr__, __dir__ = lazy_exports(__name__, {"run_study": "run", ...})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``names`` maps an exported name to its submodule
    (``"run"``) or to an absolute module (``"warmstart.instability"``)."""

    def __getattr__(name: str) -> Any:
        if name in names:
            module = names[name] if "." in names[name] else f"{package}.{names[name]}"  # absolute, or a submodule
            value = getattr(importlib.import_module(module), name)
            setattr(sys.modules[package], name, value)  # imported once
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__
