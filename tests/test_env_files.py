"""environment.yml (conda) and pyproject.toml describe the same package set."""

import re
import tomllib

import yaml


def _name(spec: str) -> str:
    return re.split(r"[<>=!~\[ ;]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject(root):
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    # the `gpu` extra (flash-attn, liger) is for CUDA machines; environment.yml is the CPU environment
    py_specs = project["dependencies"] + project["optional-dependencies"]["dev"]
    env = yaml.safe_load((root / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_specs = [s for s in pip if not s.startswith("-e")]
    assert sorted(map(str.strip, conda_specs)) == sorted(py_specs), "same packages and the same version ranges"
    assert {_name(s) for s in conda_specs} == {_name(s) for s in py_specs}
    assert "-e ." in pip
    assert ".[gpu]" in (root / "environment.yml").read_text(), "environment.yml tells GPU users about the gpu extra"


def test_ci_runs_the_readme_test_command(root):
    assert "make test" in (root / ".ci" / "run").read_text()
    assert "make test" in (root / "README.md").read_text() and "make repro" in (root / "README.md").read_text()
