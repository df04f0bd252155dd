"""The static import closure of a ``warmstart`` module: the code that importing and running it may execute.

Read from the source (every ``import`` statement, function-level ones included, and every parent package),
never by importing. Two users: a DVC stage's code deps (:mod:`warmstart.stages.contract` turns the closure into
package folders) and records that must say which code measured them (the context testbed's code hash).
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path


def lib_root(root: str | Path | None = None) -> Path:
    """The folder that holds the ``warmstart`` package: ``<root>/lib`` of a checkout, else the installed one."""
    if root is not None and (Path(root, "lib", "warmstart")).is_dir():
        return Path(root, "lib")
    return Path(importlib.util.find_spec("warmstart").origin).parents[1]


def module_file(name: str, root: Path) -> Path | None:
    """The source file of module ``name`` under ``root`` (a package's ``__init__.py``), or None."""
    base = root.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def imports(path: Path, module: str) -> set[str]:
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
        path = module_file(name, root)
        if path is None:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run first
        todo.extend(imports(path, name))
    return seen


def closure_files(module: str, root: Path) -> list[Path]:
    """The source files of ``module``'s import closure, sorted."""
    return sorted(f for f in (module_file(m, root) for m in import_closure(module, root)) if f is not None)
