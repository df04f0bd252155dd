"""Fragments record their stage's provenance: commit, dirty flag, versions, hardware, wall time, timestamp."""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from warmstart.fragments import PACKAGES, provenance_record, read_fragments, write_fragment

KEYS = {
    "commit",
    "dirty",
    "dirty_files",
    "timestamp",
    "seconds",
    "python",
    "platform",
    "cpu",
    "cpu_count",
    "memory_gib",
    "gpus",
    "packages",
}


def _git(cwd: Path, *args: str) -> str:
    env = dict(
        os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t"
    )
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A git checkout with a tracked source file and a tracked dvc.lock."""
    _git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "init")
    return tmp_path


def _provenance(root: Path, **kw) -> dict:
    path = write_fragment(root / "reports", "corpus", 10, "Corpus", ["p"], seconds=12.345, root=root, **kw)
    return json.loads(path.read_text())["provenance"]


def test_fragment_records_its_provenance(checkout):
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0)
    prov = _provenance(checkout)
    assert set(prov) == KEYS
    assert prov["commit"] == _git(checkout, "rev-parse", "HEAD") and len(prov["commit"]) == 40
    assert prov["dirty"] is False and prov["dirty_files"] == []
    assert prov["seconds"] == 12.35
    assert t0 <= dt.datetime.fromisoformat(prov["timestamp"]) <= dt.datetime.now(dt.UTC)
    assert prov["packages"] == {p: md.version(p.replace("_", "-")) for p in PACKAGES}
    assert prov["cpu_count"] == len(os.sched_getaffinity(0)) and prov["cpu"]
    assert prov["gpus"] == [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def test_dirty_means_changed_tracked_files_not_dvc_bookkeeping(checkout):
    (checkout / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")  # DVC rewrites it after every stage
    (checkout / "new.py").write_text("untracked\n")
    assert _provenance(checkout)["dirty"] is False
    (checkout / "code.py").write_text("x = 2\n")
    prov = _provenance(checkout)
    assert prov["dirty"] is True and prov["dirty_files"] == ["code.py"]


def test_outside_a_checkout_the_commit_is_unknown(tmp_path):
    prov = provenance_record(tmp_path, seconds=None)
    assert set(prov) == KEYS
    assert (prov["commit"], prov["dirty"], prov["dirty_files"], prov["seconds"]) == (None, None, [], None)


def test_callers_keep_their_positional_arguments(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_fragment("reports", "spikes", 70, "Loss spikes", ["Two spikes."], [], [], {"spikes.scratch": 2}, 1.5)
    (frag,) = read_fragments("reports")
    assert {k: frag[k] for k in ("stage", "order", "title", "paragraphs", "numbers", "seconds")} == {
        "stage": "spikes",
        "order": 70,
        "title": "Loss spikes",
        "paragraphs": ["Two spikes."],
        "numbers": {"spikes.scratch": 2},
        "seconds": 1.5,
    }
    assert frag["provenance"]["seconds"] == 1.5 and frag["provenance"]["commit"] is None


def test_renamed_and_spaced_paths_are_listed_by_their_new_name(checkout):
    _git(checkout, "mv", "code.py", "my code.py")
    prov = _provenance(checkout)
    assert prov["dirty"] is True and prov["dirty_files"] == ["my code.py"]


# ---------------------------------------------------------------- optional fields: findings, labels, appendix tables


def test_findings_labels_and_appendix_tables_are_kept(tmp_path, monkeypatch):
    from warmstart.fragments import table

    monkeypatch.chdir(tmp_path)
    long = table([[i, 0.5 * i] for i in range(3)], "Every checkpoint.", columns=["step", "bpb_target"], appendix=True)
    assert long["appendix"] is True and "appendix" not in table([[1]], "Short.", columns=["x"])
    write_fragment(
        "reports",
        "context",
        80,
        "Long context",
        ["p"],
        [long],
        numbers={"gain.nb-NO": 0.12},
        findings=["  Position interpolation keeps 0.12 bits per byte\nat 4x the context. "],
        labels={"gain.nb-NO": "bits per byte gained at 4x context, nb-NO"},
    )
    (frag,) = read_fragments("reports")
    assert frag["findings"] == ["Position interpolation keeps 0.12 bits per byte at 4x the context."]
    assert frag["labels"] == {"gain.nb-NO": "bits per byte gained at 4x context, nb-NO"}
    assert frag["tables"][0]["appendix"] is True
    write_fragment("reports", "plain", 81, "Plain", ["p"])
    plain = next(f for f in read_fragments("reports") if f["stage"] == "plain")
    assert "findings" not in plain and "labels" not in plain  # optional: absent when not given


@pytest.mark.parametrize(
    "findings, match",
    [
        ("one sentence", "must be a list"),
        (["ok", ""], "non-empty string"),
        (["x" * 401], "at most 400"),
        (["a", "b", "c", "d", "e"], "at most 4"),
    ],
)
def test_bad_findings_are_refused(tmp_path, findings, match):
    from warmstart.fragments import FragmentError

    with pytest.raises(FragmentError, match=match):
        write_fragment(tmp_path, "x", 80, "X", findings=findings)


def test_bad_tables_and_empty_figures_are_refused(tmp_path, monkeypatch):
    from warmstart.fragments import FragmentError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FragmentError, match="may have appendix"):
        write_fragment("r", "x", 80, "X", tables=[{"caption": "c", "columns": ["a"], "rows": [], "notes": "n"}])
    with pytest.raises(FragmentError, match="appendix flag"):
        write_fragment("r", "x", 80, "X", tables=[{"caption": "c", "columns": ["a"], "rows": [], "appendix": "yes"}])
    Path("empty.png").write_bytes(b"")
    with pytest.raises(FragmentError, match="is empty"):
        write_fragment("r", "x", 80, "X", figures=[{"path": "empty.png", "caption": ""}])


def test_nested_numbers_are_spread_into_labelled_dotted_keys(tmp_path):
    """A stage's goals dict becomes one number per goal (it was printed as a Python dict in the report)."""
    from warmstart.fragments import flat_numbers
    from warmstart.report.labels import Labels, looks_raw

    assert flat_numbers({"a": 1, "goals": {"x": True, "y": {"z": 2.0}}, "empty": {}}) == {
        "a": 1,
        "goals.x": True,
        "goals.y.z": 2.0,
    }
    goals = {"width_kd_within_5pct_of_teacher": True, "best_zero_shot>=0.70": False}
    path = write_fragment(
        tmp_path / "reports", "compress", 85, "Compress", numbers={"goals": goals, "teacher": "focus"}, root=tmp_path
    )
    nums = json.loads(path.read_text())["numbers"]
    assert nums == {
        "goals.width_kd_within_5pct_of_teacher": True,
        "goals.best_zero_shot>=0.70": False,
        "teacher": "focus",
    }
    lab = Labels("en-US", "nb-NO")
    assert (
        lab.number("goals.width_kd_within_5pct_of_teacher")
        == "goal met: width-pruned + distilled within 5% of the teacher's bits per byte"
    )
    assert lab.number("goals.best_zero_shot>=0.70").startswith(
        "goal met: testbed: the best method at least 0.70 zero-shot"
    )
    assert not lab.unknown and not looks_raw(lab.number("goals.best_zero_shot>=0.70"))
    lab.number("goals.not_a_goal")
    assert lab.unknown == {"goals.not_a_goal"}
