"""Notebooks are thin, parameterised, committed clean, and mirror params.yaml."""

import ast
import json

import pytest
import yaml

NOTEBOOKS = sorted((__import__("pathlib").Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def _stages(root):
    """dvc.yaml's stages, a ``foreach`` stage as its ``do`` block."""
    return {k: v.get("do", v) for k, v in yaml.safe_load((root / "dvc.yaml").read_text())["stages"].items()}


def _parameters_cell(nb):
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "exactly one cell tagged 'parameters'"
    src = "".join(cells[0]["source"])
    ns: dict = {}
    exec(compile(ast.parse(src), "parameters", "exec"), {}, ns)
    return ns


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name}: strip outputs (nbstripout)"
    assert nb["metadata"]["kernelspec"]["name"] == "warmstart"


def _item_vars(root, nb_name):
    """Variables the stages running ``nb_name`` pass with ``papermill -p NAME`` (DVC matrix items)."""
    names = set()
    for st in _stages(root).values():
        toks = st["cmd"].split()
        if f"notebooks/{nb_name}" in toks:
            names |= {toks[i + 1] for i, t in enumerate(toks[:-1]) if t == "-p"}
    return names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_mirrors_params_yaml(path, root, params_dict):
    ns = _parameters_cell(json.loads(path.read_text()))
    assert ns, "the parameters cell defines the stage's sections"
    items = _item_vars(root, path.name)
    for section, value in ns.items():
        if section in items:
            continue
        assert section in params_dict, f"{path.name}: {section} is not a params.yaml section nor a `-p` matrix item"
        assert value == params_dict[section], (
            f"{path.name}: parameters cell section {section!r} drifted from params.yaml "
            "(fix: python -m warmstart.notebook.setup sync)"
        )


def test_every_stage_runs_its_notebook_with_papermill(root):
    stages = _stages(root)
    nb_names = {p.name for p in NOTEBOOKS}
    used: dict[str, set[str]] = {}  # notebook -> the params sections of every stage that runs it
    for name, st in stages.items():
        cmd = st["cmd"]
        nb = next(tok for tok in cmd.split() if tok.startswith("notebooks/"))
        assert "${nb}" in cmd and nb in st["deps"], (
            f"stage {name} runs its notebook through papermill and depends on it"
        )
        used.setdefault(nb.split("/")[1], set()).update(p.split(".")[0] for p in st["params"])
    for nb, declared in used.items():  # a notebook several stages run (parts, matrices) mirrors their sections' union
        ns = _parameters_cell(json.loads((root / "notebooks" / nb).read_text()))
        assert set(ns) - _item_vars(root, nb) == declared, (
            f"{nb}: notebook sections {sorted(ns)} != its stages' dvc.yaml params {sorted(declared)}"
        )
    assert set(used) == nb_names, f"notebooks without a stage: {sorted(nb_names - set(used))}"
    nb_var = yaml.safe_load((root / "dvc.yaml").read_text())["vars"][0]["nb"]
    assert "-k warmstart" in nb_var and "--log-output" in nb_var


def test_notebook_runner_is_papermill_without_the_slow_import(root, tmp_path):
    # dvc.yaml runs every notebook through warmstart.notebook.run: papermill's CLI, minus the IRI format checker
    import subprocess
    import sys

    nb_var = yaml.safe_load((root / "dvc.yaml").read_text())["vars"][0]["nb"]
    assert nb_var.startswith("python -m warmstart.notebook.run ")
    code = (
        "import sys, runpy; sys.argv = ['papermill', '--help']\n"
        "try:\n    runpy.run_module('warmstart.notebook.run', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "import nbformat\n"
        "nbformat.validate(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('x = 1')]))\n"
        "assert sys.modules['rfc3987_syntax'] is None and 'papermill.cli' in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Usage: papermill" in out.stdout and "--parameters_file" in out.stdout
