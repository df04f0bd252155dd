"""A throwaway copy of the project on the smoke profile, for the pipeline tests (``tests/test_pipeline*.py``).

Each pipeline test file builds its own copy, so that xdist runs the files on different workers at
once (``conftest.py`` collects them first: they are the suite's longest).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

SMOKE_CONTEXT = ["short", "yarn"]  # context.methods and compress.variants of the smoke profile
SMOKE_COMPRESS = ["width_kd", "scratch"]


def run_checked(cmd, cwd, env, timeout=900):
    """Run ``cmd``; fail the test with the tail of its output unless it exits 0. Returns stdout + stderr."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


def smoke_copy(tmp_path_factory):
    """The project's tracked and unignored files in a fresh git repository, the smoke profile applied and committed."""
    root = Path(__file__).resolve().parents[1]
    dst = tmp_path_factory.mktemp("smoke") / "project"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    for f in files:
        if (root / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / f, dst / f)
    bindir = str(Path(sys.executable).parent)
    # one thread per study: the two smoke studies run at once on two cores (tiny models gain nothing from
    # more threads, and oversubscribed OpenMP threads made the pair slower than one after the other)
    env = {
        **os.environ,
        "PATH": bindir + os.pathsep + os.environ["PATH"],
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    run_checked(["git", "init", "-q"], dst, env)
    run_checked([sys.executable, "-m", "warmstart.config", "apply-profile", "smoke"], dst, env)
    run_checked(["git", "add", "-A"], dst, env)
    run_checked(["git", "commit", "-qm", "smoke"], dst, env)
    return dst, env
