"""The run-to-run spread's per-run fingerprints (warmstart.evaluate.seed_spread): what each covers, how the
report reads a spread that covers some runs, and how measuring some runs merges into the file. No training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _params(tmp_path: Path | None = None, **overrides):
    from warmstart.config import load_params

    if tmp_path is not None:
        overrides = {
            **overrides,
            "shared": {
                **overrides.get("shared", {}),
                "data_dir": str(tmp_path / "data"),
                "reports_dir": str(tmp_path / "reports"),
            },
        }
    return load_params(ROOT / "params.yaml", overrides=overrides)


def _fps(params) -> dict[str, str]:
    from warmstart.evaluate.seed_spread import run_fingerprints

    return run_fingerprints(params)


def _changed(a: dict[str, str], b: dict[str, str]) -> set[str]:
    """The runs of both whose fingerprints differ."""
    return {n for n in a.keys() & b.keys() if a[n] != b[n]}


# ---------------------------------------------------------------- what a run's fingerprint covers


def test_run_fingerprints_are_read_key_by_key_and_ignore_directories(tmp_path):
    from warmstart.evaluate.seed_spread import run_fingerprint
    from warmstart.report.build import PARAMS as REPORT_PARAMS
    from warmstart.runs import run_names
    from warmstart.stages.contract import declared
    from warmstart.stages.evaluate import PARAMS as EVALUATE_PARAMS

    params = _params(tmp_path)
    fps = _fps(params)
    assert list(fps) == run_names(params) and all(len(fp) == 16 for fp in fps.values())
    assert len(set(fps.values())) == len(fps)  # every run its own configuration
    for stage, keys in (("evaluate", EVALUATE_PARAMS), ("report", REPORT_PARAMS)):  # the stages that read it
        view = declared(params, stage, keys)
        assert {n: run_fingerprint(view, n) for n in fps} == fps, stage
    assert _fps(_params(tmp_path / "elsewhere")) == fps  # the directories are not the configuration


def test_adding_an_arm_leaves_every_other_run_unchanged(tmp_path):
    params = _params(tmp_path)
    more = _params(tmp_path, study={"arms": {"fvt-zloss": {"init": "fvt", "z_loss": 1e-4}}})
    before, after = _fps(params), _fps(more)
    assert set(after) == set(before) | {"fvt-zloss"}
    assert {n: after[n] for n in before} == before


def test_changing_a_phase_changes_every_run(tmp_path):
    params = _params(tmp_path)
    name = params.pretrain.phases[1].name
    lr = params.pretrain.phases[1].lr
    other = _params(tmp_path, pretrain={"phases": {name: {"lr": lr / 2}}})
    assert _changed(_fps(params), _fps(other)) == set(_fps(params))
    # so does any other pretrain setting, and the evaluation's text
    for overrides in ({"pretrain": {"z_loss": 1e-4}}, {"evaluate": {"eval_bytes": 16000}}):
        assert _changed(_fps(params), _fps(_params(tmp_path, **overrides))) == set(_fps(params)), overrides


def test_changing_an_arms_overrides_changes_only_that_arm(tmp_path):
    params = _params(tmp_path)
    arms = {n: a.init for n, a in params.study.arms.items()}
    assert arms, "params.yaml has no study.arms"
    arm = next(iter(arms))
    other = _params(tmp_path, study={"arms": {arm: {"z_loss": 1e-4}}})
    assert _changed(_fps(params), _fps(other)) == {arm}
    for name, a in params.study.arms.items():  # a phase field an arm overrides
        for phase, fields in (a.overrides.get("phases") or {}).items():
            if "steps" in fields:
                other = _params(tmp_path, study={"arms": {name: {"phases": {phase: {"steps": fields["steps"] + 1}}}}})
                assert _changed(_fps(params), _fps(other)) == {name}, (name, phase)
    # an arm's own overrides are applied: an arm equal to its init's run but for the overrides differs from it
    fps = _fps(params)
    assert fps[arm] != fps[arms[arm]]


def test_vocab_swap_methods_neighbours_and_step0_text_change_no_other_run(tmp_path):
    params = _params(tmp_path)
    methods = list(params.vocab_swap.methods)
    used = {a.init for a in params.study.arms.values()}
    extra = next(m for m in reversed(methods) if m not in used)
    fewer = _params(tmp_path, vocab_swap={"methods": [m for m in methods if m != extra]})
    before, after = _fps(fewer), _fps(params)  # adding `extra` to the methods
    assert set(after) == set(before) | {extra} and {n: after[n] for n in before} == before
    for field, value in (("neighbours", 3), ("eval_bytes", 1000)):
        assert _fps(_params(tmp_path, vocab_swap={field: value})) == after, field
    # a swap setting does change the runs (the swapped models are built from all of them)
    assert _changed(after, _fps(_params(tmp_path, vocab_swap={"omp_k": 4})))
    # the fertility table's text budget changes no run; the swap's text budget and the tokenizer's size do
    assert _fps(_params(tmp_path, tokenizer={"fertility_bytes": 2000})) == after
    assert _changed(after, _fps(_params(tmp_path, vocab_swap={"text_bytes": 2000}))) >= {"focus", "tokdistil"}
    assert _changed(after, _fps(_params(tmp_path, tokenizer={"vocab_size": 4096}))) == set(after)


# ---------------------------------------------------------------- reading a spread that covers some runs


def _entry(v: float = 1.0, std: float = 0.01) -> dict:
    return {"mean": v, "std": std, "min": v - std, "max": v + std, "n": 3, "values": [v - std, v, v + std]}


def _write(params, record: dict) -> None:
    from warmstart.evaluate.seed_spread import spread_path

    spread_path(params).parent.mkdir(parents=True, exist_ok=True)
    spread_path(params).write_text(json.dumps(record))


def test_spread_for_uses_each_run_only_for_its_own_configuration(tmp_path):
    from warmstart.evaluate.seed_spread import spread_for, spread_section

    params = _params(tmp_path)
    fps = _fps(params)
    names = list(fps)
    spread, why = spread_for(params)
    assert spread is None and "no run-to-run spread is recorded" in why and spread_section(params) is None
    ck = [
        {"run": n, "seed": s, "step": 0, "bytes": 0, "bpb_target": 3.0, "bpb_source": 4.0}
        for n in names
        for s in (1, 2, 3)
    ]
    rec = {
        "metric": "m",
        "seeds": [1, 2, 3],
        "runs": {n: _entry() for n in names},
        "checkpoints": ck,
        "fingerprints": fps,
        "seconds": 60,
        "hardware": "cpu",
    }
    _write(params, rec)
    spread, why = spread_for(params)
    assert why == "" and list(spread["runs"]) == names and spread["seeds"] == [1, 2, 3]
    assert spread_section(params)["tables"][0]["rows"][0] == [
        names[0],
        "0.990, 1.000, 1.010",
        "1.000",
        "0.0100",
        "0.990–1.010",
    ]

    # two runs' configurations changed, one run never measured: the others are still used
    stale, absent = names[-2:], names[0]
    runs = {n: e for n, e in rec["runs"].items() if n != absent}
    _write(params, rec | {"runs": runs, "fingerprints": fps | dict.fromkeys(stale, "0" * 16)})
    spread, why = spread_for(params)
    covered = [n for n in names if n not in stale and n != absent]
    assert list(spread["runs"]) == covered and set(spread["fingerprints"]) == set(covered)
    assert {c["run"] for c in spread["checkpoints"]} == set(covered)  # no curve of a run not covered
    missing = [absent, *stale]
    assert f"has no spread for the runs {', '.join(missing)} as configured now" in why
    assert f"(python -m warmstart.evaluate.seed_spread --runs {' '.join(missing)} measures them)" in why
    section = spread_section(params)
    assert [r[0] for r in section["tables"][0]["rows"]] == covered and any(why in p for p in section["paragraphs"])

    # no run covered: no spread
    _write(params, rec | {"fingerprints": dict.fromkeys(names, "0" * 16)})
    spread, why = spread_for(params)
    assert spread is None and "measured for another configuration of every study run" in why
    assert spread_section(params) is None
    # a file from before per-run fingerprints (one for the whole study): not used
    _write(params, {k: v for k, v in rec.items() if k != "fingerprints"} | {"fingerprint": "3473ed5d324b075b"})
    spread, why = spread_for(params)
    assert spread is None and "records no per-run fingerprints" in why


# ---------------------------------------------------------------- measuring some runs merges


def _rec(runs: dict[str, float], fps: dict[str, str], seeds=(1, 2), **extra) -> dict:
    return {
        "metric": "m",
        "seeds": list(seeds),
        "runs": {n: _entry(v) for n, v in runs.items()},
        "checkpoints": [{"run": n, "seed": s, "step": 8, "bpb_target": v} for n, v in runs.items() for s in seeds],
        "fingerprints": {n: fps[n] for n in runs},
        "train_seconds": 10.0,
        "seconds": 20.0,
        "hardware": "cpu",
        "torch": "2",
        **extra,
    }


def test_merge_keeps_the_other_runs_that_still_match():
    from warmstart.evaluate.seed_spread import merge_spread

    current = {"scratch": "s1", "fvt": "f1", "focus": "o1", "arm": "a1"}
    old = _rec(
        {"scratch": 2.0, "fvt": 1.5, "focus": 1.4, "gone": 1.0},
        {"scratch": "s1", "fvt": "f0", "focus": "o1", "gone": "g"},
    )
    new = _rec({"fvt": 1.6, "arm": 1.3}, current, hardware="gpu")
    out = merge_spread(old, new, current)
    # scratch and focus kept (fingerprints match), fvt replaced, arm added, stale/removed runs dropped
    assert list(out["runs"]) == ["scratch", "fvt", "focus", "arm"]
    assert out["runs"]["scratch"] == old["runs"]["scratch"] and out["runs"]["focus"] == old["runs"]["focus"]
    assert out["runs"]["fvt"] == new["runs"]["fvt"] and out["runs"]["arm"] == new["runs"]["arm"]
    assert out["fingerprints"] == current
    assert sorted({(c["run"], c["bpb_target"]) for c in out["checkpoints"]}) == [
        ("arm", 1.3),
        ("focus", 1.4),
        ("fvt", 1.6),
        ("scratch", 2.0),
    ]
    assert len(out["checkpoints"]) == 8 and out["seeds"] == [1, 2]
    assert (
        out["train_seconds"] == 20.0
        and out["seconds"] == 40.0
        and out["hardware"] == "cpu; gpu"
        and out["torch"] == "2"
    )
    assert old["runs"].keys() == {"scratch", "fvt", "focus", "gone"}  # the inputs are not changed
    # a file with one study-wide fingerprint (before per-run ones) keeps nothing
    legacy = {k: v for k, v in old.items() if k != "fingerprints"} | {"fingerprint": "3473ed5d324b075b"}
    assert list(merge_spread(legacy, new, current)["runs"]) == ["fvt", "arm"]
    # no file yet, or the whole study measured: the new record as is
    assert merge_spread(None, new, current) == new
    assert merge_spread(old, new, current, whole=True) == new


def test_merge_refuses_other_seeds_unless_the_whole_study_is_measured():
    from warmstart.evaluate.seed_spread import merge_spread

    current = {"scratch": "s1", "fvt": "f1"}
    old = _rec({"scratch": 2.0, "fvt": 1.5}, current, seeds=(1, 2, 3))
    new = _rec({"fvt": 1.6}, current, seeds=(1, 2))
    with pytest.raises(ValueError, match=r"seeds \[1, 2, 3\], not \[1, 2\].*--seeds 1 2 3"):
        merge_spread(old, new, current)
    whole = _rec({"scratch": 2.1, "fvt": 1.6}, current, seeds=(1, 2))
    assert merge_spread(old, whole, current, whole=True) == whole


def test_measure_checks_its_arguments_before_training(tmp_path):
    from warmstart.evaluate.seed_spread import measure

    params = _params(tmp_path)
    with pytest.raises(ValueError, match=r"at least two seeds, got \[1337\]"):
        measure(params, [1337])
    with pytest.raises(ValueError, match=r"unknown runs \['fvtt'\]"):
        measure(params, [1, 2], ["fvtt"])
    fps = _fps(params)
    _write(params, _rec({"scratch": 2.0}, fps, seeds=(1337, 1338, 1339)))
    with pytest.raises(ValueError, match=r"seeds \[1337, 1338, 1339\], not \[1337, 1340\]"):
        measure(params, [1337, 1340], ["fvt"])  # refused before any training (there is no data to train on)
