"""The stage kernel (warmstart.notebook.kernel): collector thresholds, the exit freeze, the kernel spec it installs."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap

import nbformat
import pytest

from warmstart.notebook.kernel import GEN0_THRESHOLD, install, tune_gc

CYCLE = textwrap.dedent("""
    import sys
    if sys.argv[1] == "tuned":
        from warmstart.notebook.kernel import tune_gc
        tune_gc()
    class Node:
        def __del__(self):
            print("finalised", flush=True)
    a, b = Node(), Node()
    a.other, b.other = b, a
""")


def test_tune_gc_raises_only_the_first_generation_threshold():
    before = gc.get_threshold()
    try:
        tune_gc(12_345)
        assert gc.get_threshold() == (12_345, before[1], before[2])
        assert gc.isenabled()
    finally:
        gc.set_threshold(*before)


def test_tune_gc_rejects_a_non_positive_threshold():
    with pytest.raises(ValueError, match="gen0 must be a positive allocation count, got 0"):
        tune_gc(0)


@pytest.mark.parametrize("mode, printed", [("plain", "finalised\nfinalised\n"), ("tuned", "")])
def test_exit_freeze_skips_the_final_collection(tmp_path, mode, printed):
    """A reference cycle alive at exit is finalised by the interpreter's last collection, except after
    tune_gc, whose exit handler freezes it out of that collection (the 1.6 s saved per stage)."""
    script = tmp_path / "cycle.py"
    script.write_text(CYCLE)
    out = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, check=True)
    assert out.stdout == printed


def test_installed_spec_starts_this_module_and_the_kernel_runs_tuned(tmp_path):
    spec_dir = install(name="ws-test", display_name="ws test", prefix=str(tmp_path))
    spec = json.loads((spec_dir / "kernel.json").read_text())
    argv = spec["argv"]
    assert argv[argv.index("-m") + 1] == "warmstart.notebook.zygote" and "ipykernel_launcher" not in argv
    assert argv[-2:] == ["-f", "{connection_file}"] and spec["display_name"] == "ws test"

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import gc\nprint(gc.get_threshold()[0], gc.isenabled())")]
    src, dst = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, src)
    env = {**os.environ, "JUPYTER_PATH": str(tmp_path / "share" / "jupyter")}
    subprocess.run(
        [sys.executable, "-m", "warmstart.notebook.run", "-k", "ws-test", "--no-progress-bar", str(src), str(dst)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    outputs = nbformat.read(dst, as_version=4).cells[0].outputs
    assert [o.get("text") for o in outputs] == [f"{GEN0_THRESHOLD} True\n"]


def test_a_pool_worker_is_tuned():
    from warmstart.pool import process_pool

    with process_pool(_threshold, 2) as run_all:
        assert run_all([0, 1]) == [GEN0_THRESHOLD, GEN0_THRESHOLD]


def _threshold(_: int) -> int:
    return gc.get_threshold()[0]
