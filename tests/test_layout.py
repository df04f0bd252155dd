"""The package tree shows the system: subsystems are packages, the stages are the top layer that nothing in the
library imports, no module is long, packages import each other without cycles, and the README names every
top-level entry of the package."""

import ast
import re
from pathlib import Path

from conftest import assert_acyclic
from warmstart.closure import imports

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "lib" / "warmstart"
MAX_LINES = 500
MAX_RUN_LINES = 60


def _modules() -> dict[str, Path]:
    out = {}
    for f in sorted(PKG.rglob("*.py")):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _node(module: str) -> str:
    """The package-level node of a module: its top-level subpackage, or the top-level module itself."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def test_no_module_over_500_lines():
    sizes = {str(p.relative_to(PKG)): len(p.read_text().splitlines()) for p in _modules().values()}
    assert {k: v for k, v in sizes.items() if v > MAX_LINES} == {}


def test_nothing_in_the_library_imports_the_stages():
    offenders = {}
    for name, path in _modules().items():
        if _node(name) == "warmstart.stages":
            continue
        bad = sorted(m for m in imports(path, name) if m == "warmstart.stages" or m.startswith("warmstart.stages."))
        if bad:
            offenders[name] = bad
    assert offenders == {}


def test_no_import_cycle_between_packages():
    """Top-level modules and subpackages form a DAG (function-level imports count too). A ``__main__`` is an
    entry point: nothing imports it, so its imports cannot close a cycle."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        if name.endswith(".__main__"):
            continue
        src = _node(name)
        for imp in imports(path, name):
            while imp and imp not in mods:
                imp = imp.rpartition(".")[0]
            if imp and imp != "warmstart" and _node(imp) != src:
                graph.setdefault(src, set()).add(_node(imp))
    assert_acyclic(graph, "package import cycle")


def test_each_stage_run_reads_in_about_50_lines():
    long = {}
    for f in sorted((PKG / "stages").glob("*.py")):
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("run"):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_RUN_LINES:
                    long[f"{f.stem}.{node.name}"] = n
    assert long == {}


def _readme_layout() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^## Layout\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert m, "README.md has no '## Layout' section"
    return m.group(1)


def test_readme_layout_names_every_top_level_entry_of_the_package():
    layout = _readme_layout()
    entries = sorted(
        p.name + ("/" if p.is_dir() else "")
        for p in PKG.iterdir()
        if p.name != "__pycache__" and not p.name.endswith(".egg-info")
    )
    missing = [e for e in entries if not re.search(rf"(?<![\w/.]){re.escape(e)}(?![\w])", layout)]
    assert missing == [], f"README.md's layout section does not name: {missing}"


def test_readme_layout_names_nothing_that_is_gone():
    layout = _readme_layout()
    named = re.findall(r"^  ([a-z_]+(?:\.py|/))", layout, re.M)
    assert named, "the layout lists no package entries"
    assert [n for n in named if not (PKG / n.rstrip("/")).exists()] == []
