"""Smoke run of the DVC pipeline on the smoke profile, in a throwaway copy.

This is how notebooks are tested: papermill runs each one through `dvc repro`
exactly as `make repro` does, on a profile small enough for CI.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _run(cmd, cwd, env, timeout=900):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def smoke_project(tmp_path_factory):
    root = Path(__file__).resolve().parents[1]
    dst = tmp_path_factory.mktemp("smoke") / "project"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=root, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (root / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / f, dst / f)
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ["PATH"],
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    _run(["git", "init", "-q"], dst, env)
    _run([sys.executable, "-m", "warmstart.config", "apply-profile", "smoke"], dst, env)
    _run(["git", "add", "-A"], dst, env)
    _run(["git", "commit", "-qm", "smoke"], dst, env)
    t0 = time.time()
    log = _run(["dvc", "repro"], dst, env)
    return dst, env, log, time.time() - t0


def test_repro_writes_every_stage_output(smoke_project):
    dst, _, log, seconds = smoke_project
    print(f"smoke dvc repro: {seconds:.1f} s")
    for lang in ("en-US", "nb-NO"):
        for split in ("train", "val", "test"):
            assert (dst / "data/corpus" / lang / f"{split}.jsonl").stat().st_size > 0
    corpus = json.loads((dst / "reports/metrics/corpus.json").read_text())
    hb = corpus["sources"]["handbook"]
    assert hb["package"] == "debian-handbook" and len(hb["sha256"]) == 64 and hb["version"]
    assert corpus["split_documents"]["test"] and corpus["split_documents"]["val"]
    for nb in ("01_corpus", "02_tokenizer"):
        executed = json.loads((dst / "reports/notebooks" / f"{nb}.ipynb").read_text())
        errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors
    from transformers import AutoTokenizer

    for side in ("source", "target"):
        tok = AutoTokenizer.from_pretrained(dst / "data/tokenizer" / side)
        assert len(tok) == 1024
        assert tok.decode(tok("Blåbærsyltetøy 2024")["input_ids"]) == "Blåbærsyltetøy 2024"
    fert = json.loads((dst / "reports/metrics/fertility.json").read_text())
    assert fert["ratio_tokens_per_word"]["nb-NO"] < 1.0
    for fig in ("corpus.png", "fertility.png"):
        assert (dst / "reports/figures" / fig).stat().st_size > 10_000


def test_second_repro_is_a_noop(smoke_project):
    dst, env, _, _ = smoke_project
    t0 = time.time()
    out = _run(["dvc", "repro"], dst, env)
    print(f"no-op dvc repro: {time.time() - t0:.1f} s")
    assert "didn't change, skipping" in out and "Running stage" not in out


def test_switching_target_is_a_params_change(smoke_project):
    dst, env, _, _ = smoke_project
    _run(["dvc", "exp", "run", "-S", "shared.target_lang=sv-SE"], dst, env)
    fert = json.loads((dst / "reports/metrics/fertility.json").read_text())
    assert "sv-SE" in fert["ratio_tokens_per_word"] and "nb-NO" not in fert["ratio_tokens_per_word"]
    assert (dst / "data/corpus/sv-SE/test.jsonl").exists()
