"""The lock (requirements/*.txt), environment.yml, pyproject.toml and the installed env agree."""

import importlib.metadata as md
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dev"))
import lock  # noqa: E402  (dev/lock.py, what `make lock` runs)


def _locked(root, name: str) -> dict[str, tuple[str, str]]:
    return lock.blocks((root / "requirements" / name).read_text())


def _ranges(root) -> list[Requirement]:
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    opt = project["optional-dependencies"]
    return [Requirement(s) for s in project["dependencies"] + opt["dev"] + opt["gpu"]]


def test_lock_parser_reads_versions_and_hash_lines():
    text = "# header\nfoo-Bar==1.2 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n    # via x\nbaz==0.1+cpu \\\n    --hash=sha256:cc\n"
    got = lock.blocks(text)
    assert {k: v for k, (v, _) in got.items()} == {"foo-bar": "1.2", "baz": "0.1+cpu"}
    assert got["foo-bar"][1].count("--hash=") == 2 and "baz" not in got["foo-bar"][1]


@pytest.mark.parametrize("name", ["cpu.txt", "gpu.txt", "flash-attn.txt"])
def test_every_locked_package_is_exact_and_hashed(root, name):
    parts = _locked(root, name)
    assert parts, f"{name} is empty"
    for pkg, (version, body) in parts.items():
        assert re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version), (pkg, version)
        assert "--hash=sha256:" in body, f"{name}: {pkg} has no hash"


def test_lock_satisfies_pyproject_ranges_and_sets_agree(root):
    cpu, gpu = _locked(root, "cpu.txt"), {**_locked(root, "gpu.txt"), **_locked(root, "flash-attn.txt")}
    for req in _ranges(root):
        name = lock.norm(req.name)
        in_gpu_only = name in ("flash-attn",)
        where = gpu if in_gpu_only else cpu
        assert name in where, f"{req} is in pyproject.toml but not in the lock"
        version = where[name][0]
        assert req.specifier.contains(version.split("+")[0], prereleases=True), (
            f"locked {name}=={version} violates {req}"
        )
    shared = cpu.keys() & gpu.keys()
    assert {"transformers", "triton", "liger-kernel", "accelerate", "numpy", "torch"} <= shared
    differ = {k: (cpu[k][0], gpu[k][0]) for k in shared if cpu[k][0].split("+")[0] != gpu[k][0].split("+")[0]}
    assert differ == {}, f"the CPU and GPU sets disagree on {differ}"
    assert cpu["torch"][0].endswith("+cpu") and "+" not in gpu["torch"][0]


def test_environment_yml_pins_exactly_the_cpu_lock(root):
    env = yaml.safe_load((root / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pins = dict(s.split("==", 1) for s in pip if "==" in s)
    assert pins == {k: v for k, (v, _) in _locked(root, "cpu.txt").items()}, "environment.yml is stale: run make lock"
    assert "-e ." in pip and "python=3.11" in env["dependencies"]


def test_installed_environment_is_the_lock(root):
    """What `make env` installed is what the lock says (no stray upgrade, no missing package)."""
    name = "cpu.txt" if md.version("torch").endswith("+cpu") else "gpu.txt"  # make env / make env GPU=1
    locked = _locked(root, name)
    wrong = {}
    for name, (version, _) in locked.items():
        try:
            got = md.version(name)
        except md.PackageNotFoundError:
            got = None
        if got != version:
            wrong[name] = (version, got)
    assert wrong == {}, f"installed versions differ from requirements/{name} (locked, installed): {wrong}"


@pytest.mark.parametrize("gpu, locks", [("", ["cpu.txt"]), ("1", ["gpu.txt", "flash-attn.txt"])])
def test_make_env_installs_only_from_the_lock(root, tmp_path, gpu, locks):
    """`make env` (dry run, every step forced) installs hashed lock files without resolving anything: uv
    from requirements/uv.txt (into the tools venv), then the lock with that uv, then the project."""
    out = subprocess.run(
        ["make", "-n", "-B", "env", f"VENV={tmp_path / 'v'}", f"TOOLS={tmp_path / 't'}", f"GPU={gpu}"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installs = [ln for ln in out.replace("\\\n", " ").splitlines() if " pip install " in ln]
    assert [ln.split(" -r ")[1].split()[0] for ln in installs if " -r " in ln] == [
        "requirements/uv.txt",
        *(f"requirements/{f}" for f in locks),
    ]
    assert (
        installs[1].startswith(f"{tmp_path / 't'}/bin/uv pip install ")
        and f"--python {tmp_path / 'v'}/bin/python" in installs[1]
    )
    for ln in installs:
        assert "--no-deps" in ln, f"an install that may resolve on its own: {ln}"
        assert ("--require-hashes" in ln) != ln.endswith(" -e ."), ln
    assert installs[-1].endswith("--no-deps --no-build-isolation -e .")  # built with the locked setuptools
    assert "make lock" in (root / "README.md").read_text()


def test_ci_runs_the_readme_test_command(root):
    assert "make test" in (root / ".ci" / "run").read_text()
    assert "make test" in (root / "README.md").read_text() and "make repro" in (root / "README.md").read_text()
