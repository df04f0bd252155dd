"""The corpus stage's filter pass on datatrove's executors (warmstart.data.engine)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_corpus import EN, NB, _local_params
from warmstart.config import deep_merge, profile, validate
from warmstart.data.engine import FilterSign, Scope, slurm_arguments

ROOT = Path(__file__).resolve().parents[1]


def _corpus(params_dict, tmp_path, **corpus):
    for lang, texts in (("en", EN), ("nb", NB)):
        d = tmp_path / lang
        d.mkdir(exist_ok=True)
        for i, t in enumerate(texts * 3):
            (d / f"doc{i}.txt").write_text(f"{t} ({i})\n\n{t.replace('.', ' again.')} [{i}]\n")
    sources = [
        {"kind": "local", "lang": "en-US", "paths": [str(tmp_path / "en")]},
        {"kind": "local", "lang": "nb-NO", "paths": [str(tmp_path / "nb")]},
    ]
    return _local_params(params_dict, tmp_path, sources, **corpus)


def test_tasks_and_workers_do_not_change_the_corpus(params_dict, tmp_path):
    from warmstart.data.corpus import build_corpus

    out = {}
    for tasks, workers in ((1, 1), (3, 2)):
        p = _corpus(params_dict, tmp_path, workers=workers, executor={"tasks": tasks})
        m = build_corpus(p, tmp_path / f"out{tasks}")
        m.pop("seconds")
        files = sorted((tmp_path / f"out{tasks}").rglob("*.jsonl"))
        out[tasks] = (m, {f.relative_to(tmp_path / f"out{tasks}"): f.read_bytes() for f in files})
    assert out[1] == out[3] and len(out[1][1]) == 6
    assert not [p for p in tmp_path.iterdir() if ".spill-" in p.name]  # the spill is removed


def test_a_bad_file_fails_the_stage_from_any_task(params_dict, tmp_path):
    from warmstart.data.corpus import build_corpus
    from warmstart.data.sources import BadFileError

    p = _corpus(params_dict, tmp_path, workers=2, executor={"tasks": 2})
    (tmp_path / "nb" / "doc99.txt").write_bytes(b"\xff\xfe not text")
    with pytest.raises(BadFileError, match=r"doc99\.txt is not UTF-8 text"):
        build_corpus(p, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_shipped_slurm_config_builds_datatrove_executor(params_dict, tmp_path):
    from datatrove.executor import SlurmPipelineExecutor

    over = profile(str(ROOT / "configs/corpus/slurm.yaml"))
    p = validate(deep_merge(params_dict, over))
    args = slurm_arguments(p)
    assert p.corpus.executor.kind == "slurm" and p.corpus.executor.tasks == 64
    ex = SlurmPipelineExecutor([FilterSign(Scope.of(p), str(tmp_path))], tasks=64, logging_dir=str(tmp_path), **args)
    assert (ex.partition, ex.tasks, ex.time, ex.cpus_per_task) == ("cpu", 64, "04:00:00", 1)
    assert json.loads(json.dumps(args)) == args  # plain values: the overlay is all there is


def test_slurm_arguments_are_checked_by_name(params_dict):
    bad = validate(deep_merge(params_dict, {"corpus": {"executor": {"kind": "slurm", "slurm": {"partiton": "x"}}}}))
    with pytest.raises(ValueError, match=r"\['partiton'\] are not SlurmPipelineExecutor arguments"):
        slurm_arguments(bad)
    short = validate(deep_merge(params_dict, {"corpus": {"executor": {"kind": "slurm", "slurm": {"partition": "x"}}}}))
    with pytest.raises(ValueError, match=r"needs \['time'\]"):
        slurm_arguments(short)
