"""Notebooks are thin, parameterised by their stage's identity only, and committed clean.

A notebook's ``parameters`` cell holds what dvc.yaml passes with ``papermill -p`` (``run``, ``method``,
``part``, ``variant``) and ``overrides = {}``; the next cell reads params.yaml through
:func:`warmstart.notebook.setup.stage_params`.
"""

import ast
import json
from pathlib import Path

import pytest
import yaml

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
MAX_CODE_LINES = 30


def _stages(root):
    """dvc.yaml's stages, a ``foreach`` stage as its ``do`` block."""
    return {k: v.get("do", v) for k, v in yaml.safe_load((root / "dvc.yaml").read_text())["stages"].items()}


def _parameters_cell(nb):
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "exactly one cell tagged 'parameters'"
    return cells[0]


def _item_vars(root, nb_name):
    """Variables the stages running ``nb_name`` pass with ``papermill -p NAME`` (the stage's identity)."""
    names = set()
    for st in _stages(root).values():
        toks = st["cmd"].split()
        if f"notebooks/{nb_name}" in toks:
            names |= {toks[i + 1] for i, t in enumerate(toks[:-1]) if t == "-p"}
    return names


def _code_lines(nb):
    return sum(
        1 for c in nb["cells"] if c["cell_type"] == "code" for line in "".join(c["source"]).splitlines() if line.strip()
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name}: strip outputs (nbstripout)"
    assert nb["metadata"]["kernelspec"]["name"] == "warmstart"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_is_the_stage_identity_and_overrides(path, root):
    nb = json.loads(path.read_text())
    cell = _parameters_cell(nb)
    src = "".join(cell["source"])
    tree = ast.parse(src)
    names = []
    for stmt in tree.body:
        assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name), (
            f"{path.name}: the parameters cell only assigns names, got {ast.unparse(stmt)!r}"
        )
        names.append(stmt.targets[0].id)
    ns: dict = {}
    exec(compile(tree, "parameters", "exec"), {}, ns)
    identity = _item_vars(root, path.name)
    assert sorted(names) == sorted(identity | {"overrides"}), (
        f"{path.name}: the parameters cell defines {names}; expected the variables dvc.yaml passes with -p "
        f"({sorted(identity)}) and `overrides`"
    )
    assert ns["overrides"] == {}, f"{path.name}: overrides is empty as committed (dvc repro runs params.yaml as is)"
    assert all(isinstance(ns[v], str) for v in identity), f"{path.name}: identity values are strings"
    over = next(line for line in src.splitlines() if line.startswith("overrides"))
    assert "#" in over, f"{path.name}: a comment says what `overrides` is for"
    # the next code cell reads params.yaml with the overrides
    after = nb["cells"][nb["cells"].index(cell) + 1]
    assert after["cell_type"] == "code" and "stage_params(overrides)" in "".join(after["source"]), (
        f"{path.name}: the cell after `parameters` calls stage_params(overrides)"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_short(path):
    n = _code_lines(json.loads(path.read_text()))
    assert n <= MAX_CODE_LINES, f"{path.name}: {n} code lines (at most {MAX_CODE_LINES}); move logic into lib/warmstart"


def test_every_stage_runs_its_notebook_with_papermill(root):
    stages = _stages(root)
    used = set()
    for name, st in stages.items():
        cmd = st["cmd"]
        nb = next(tok for tok in cmd.split() if tok.startswith("notebooks/"))
        assert "${nb}" in cmd and nb in st["deps"], (
            f"stage {name} runs its notebook through papermill and depends on it"
        )
        toks = cmd.split()
        assert not {"-f", "--parameters_file", "-y", "--parameters_yaml"} & set(toks), (
            f"stage {name}: papermill passes only the stage's identity (-p); the notebook reads params.yaml"
        )
        used.add(nb.split("/")[1])
    nb_names = {p.name for p in NOTEBOOKS}
    assert used == nb_names, f"notebooks without a stage: {sorted(nb_names - used)}"
    nb_var = yaml.safe_load((root / "dvc.yaml").read_text())["vars"][0]["nb"]
    assert "-k warmstart" in nb_var and "--log-output" in nb_var


@pytest.fixture
def project(root, tmp_path, monkeypatch):
    """A copy of params.yaml and dvc.yaml; the working directory a subfolder of it (as JupyterLab's notebooks/)."""
    import warmstart.notebook.setup as setup

    for name in ("params.yaml", "dvc.yaml"):
        (tmp_path / name).write_text((root / name).read_text())
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    styled = []
    monkeypatch.setattr(setup, "style", lambda: styled.append(True))  # global matplotlib/pandas options: not here
    return tmp_path, styled


def test_stage_params_reads_params_yaml_with_dotted_overrides(project, params_dict):
    import os

    from warmstart.notebook.setup import stage_params

    tmp, styled = project
    plain = stage_params()
    assert Path(os.getcwd()) == tmp.resolve() and styled == [True], "chdir to the project root, figure style applied"
    assert plain.pretrain.phase("phase2").lr == params_dict["pretrain"]["phases"][1]["lr"]
    lr = plain.pretrain.phase("phase2").lr * 1.5
    p = stage_params({"pretrain.phases.phase2.lr": lr, "study.arms.fvt-hybrid.masked_share": 0.2, "spikes.warmup": 7})
    assert p.pretrain.phase("phase2").lr == lr
    assert p.pretrain.phase("phase2").steps == plain.pretrain.phase("phase2").steps, "only the overridden key changes"
    assert p.pretrain.phase("phase1") == plain.pretrain.phase("phase1")
    assert p.study.arms["fvt-hybrid"].overrides["masked_share"] == 0.2
    assert p.spikes.warmup == 7


@pytest.mark.parametrize(
    ("key", "named"),
    [
        ("pretrain.phases.phase2.lrr", "'lrr'"),
        ("pretrain.phase2.lr", "'phase2'"),
        ("pretrian.seq_len", "'pretrian'"),
        ("shared.seed.x", "shared.seed"),
    ],
)
def test_stage_params_refuses_a_key_not_in_the_schema(project, key, named):
    from warmstart.config import ParamsError
    from warmstart.notebook.setup import stage_params

    with pytest.raises(ParamsError) as err:
        stage_params({key: 1})
    assert key in str(err.value) and named in str(err.value)


def test_stage_params_validates_override_values(project):
    from warmstart.config import ParamsError
    from warmstart.notebook.setup import stage_params

    with pytest.raises(ParamsError, match=r"pretrain.phases\[phase2\].lr: Input should be greater than 0"):
        stage_params({"pretrain.phases.phase2.lr": -1.0})


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
