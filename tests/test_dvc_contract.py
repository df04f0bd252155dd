"""dvc.yaml against the code: each stage's code deps are its module's import closure, its params exactly the keys
the module declares; the package has no import cycle and no oversized module; notebooks stay thin."""

import ast
import json
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import assert_acyclic
from warmstart.closure import import_closure
from warmstart.closure import imports as _imports
from warmstart.stages.__main__ import diff
from warmstart.stages.contract import STAGES, code_deps

LIB = Path(__file__).resolve().parents[1] / "lib"


def test_dvc_yaml_declares_exactly_what_each_stage_runs(root):
    assert diff(root) == {}, "run `python -m warmstart.stages sync` (and review the diff)"


def test_contract_test_fails_when_a_dep_or_a_params_key_is_removed(root, tmp_path):
    shutil.copy(root / "dvc.yaml", tmp_path / "dvc.yaml")
    doc = yaml.safe_load((tmp_path / "dvc.yaml").read_text())
    doc["stages"]["scratch"]["deps"].remove("lib/warmstart/kernels")  # scratch trains: it runs the kernels package
    doc["stages"]["evaluate"]["params"].remove("evaluate")
    doc["stages"]["spikes"]["params"].append("pretrain")  # a key the spike stage never reads
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    (tmp_path / "lib").symlink_to(LIB)
    assert diff(tmp_path) == {
        "scratch": {"missing_deps": ["lib/warmstart/kernels"]},
        "evaluate": {"missing_params": ["evaluate"]},
        "spikes": {"extra_params": ["pretrain"]},
    }


def test_code_deps_are_package_folders_top_level_modules_and_the_stage_own_files(root):
    closure = import_closure("warmstart.stages.corpus", LIB)
    assert {"warmstart", "warmstart.data", "warmstart.data.handbook", "warmstart.config"} <= closure
    assert not any(m.startswith(("warmstart.spikes", "warmstart.train", "warmstart.kernels")) for m in closure)
    corpus = code_deps("warmstart.stages.corpus", root)
    assert {"lib/warmstart/data", "lib/warmstart/config", "lib/warmstart/fragments.py"} <= set(corpus)
    assert "lib/warmstart/data/handbook.py" not in corpus  # a package is one dep, its folder
    assert [d for d in corpus if d.startswith("lib/warmstart/stages")] == [
        "lib/warmstart/stages/__init__.py",
        "lib/warmstart/stages/contract.py",
        "lib/warmstart/stages/corpus.py",
    ]  # of the top layer, only the stage's own files: editing one stage reruns only it
    # the trainer's spike mitigation (imported inside a function) makes the spikes package a dep of training
    assert "lib/warmstart/spikes" in code_deps("warmstart.stages.base", root)
    assert "lib/warmstart/report" not in code_deps("warmstart.stages.base", root)  # the report reruns alone


def _modules() -> dict[str, Path]:
    out = {}
    for f in sorted((LIB / "warmstart").rglob("*.py")):
        parts = list(f.relative_to(LIB).with_suffix("").parts)
        if parts[-1] == "__main__":
            continue
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def test_no_import_cycle_in_the_package():
    """Imports anywhere in a module (function-level ones too) form a DAG; a module importing its own
    parent package (``from warmstart.kernels import reference`` inside warmstart.kernels) is not an edge."""
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        deps = set()
        for imp in _imports(path, name):
            while imp and imp not in mods:
                imp = imp.rpartition(".")[0]
            if imp and imp != name and not name.startswith(imp + "."):
                deps.add(imp)
        graph[name] = deps
    assert_acyclic(graph, "import cycle")


@pytest.mark.parametrize("stage", sorted(set(STAGES)))
def test_each_stage_notebook_is_thin_and_calls_its_stage(root, stage):
    doc = yaml.safe_load((root / "dvc.yaml").read_text())["stages"][stage]
    doc = doc.get("do", doc)  # a foreach stage
    nb_path = next(d for d in doc["deps"] if str(d).startswith("notebooks/"))
    nb = json.loads((root / nb_path).read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and "parameters" not in c["metadata"].get("tags", [])]
    lines = [
        ln for c in code for ln in "".join(c["source"]).splitlines() if ln.strip() and not ln.strip().startswith("#")
    ]
    assert len(lines) <= 60, f"{nb_path}: {len(lines)} lines of code outside the parameters cell"
    imported = {
        a.name if isinstance(n, ast.Import) else f"{n.module}.{a.name}"
        for c in code
        for n in ast.walk(ast.parse("".join(c["source"])))
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in n.names
    }
    assert STAGES[stage] in imported, f"{nb_path} does not import {STAGES[stage]}"
    assert ".run(" in "".join("".join(c["source"]) for c in code)
