"""Standard lm-eval benchmarks (warmstart.evaluate.harness) offline: a local multiple-choice task scored by
hand, the default registry on, unknown names refused before the model; the config keys."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch
import yaml

from conftest import SPECIALS, TINY_LLAMA, byte_bpe, model_for
from conftest import WORDS_EN as EN
from warmstart.evaluate.harness import load_registry, run_tasks
from warmstart.evaluate.probes import EvalError

TASK = "warmstart_harness_mc"
GROUP = "warmstart_harness_group"
ITEMS = [
    {"question": "the cat sat on", "choices": ["a mat", "blue sky", "the dog", "far away"], "label": 0},
    {"question": "it ran far", "choices": ["from home", "away", "with some dog", "to see"], "label": 1},
    {"question": "the dog and", "choices": ["it ran", "the cat", "a mat with some", "sky"], "label": 2},
    {"question": "see blue", "choices": ["home", "cat sat", "on a mat", "sky"], "label": 3},
]


@pytest.fixture(scope="module", autouse=True)
def _offline():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    """A task YAML whose dataset is a local JSONL file (lm-eval's multiple_choice, acc and acc_norm) and a
    group of it that aggregates acc (as mmlu does its subjects)."""
    d = tmp_path_factory.mktemp("tasks")
    data = d / f"{TASK}.jsonl"
    data.write_text("".join(json.dumps(it) + "\n" for it in ITEMS), encoding="utf-8")
    cfg = {
        "task": TASK,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{question}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{label}}",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0},
    }
    (d / f"{TASK}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    group = {
        "group": GROUP,
        "task": [TASK],
        "aggregate_metric_list": [{"metric": "acc", "aggregation": "mean", "weight_by_size": True}],
        "metadata": {"version": 1.0},
    }
    (d / f"{GROUP}.yaml").write_text(yaml.safe_dump(group, sort_keys=False), encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def registry(task_dir):
    """Indexing lm-eval's registry takes seconds: one for the module."""
    return load_registry([task_dir])


@pytest.fixture(scope="module")
def tok_model():
    tok = byte_bpe([" ".join(EN[i:] + EN[:i]) for i in range(len(EN))] * 3, 300, SPECIALS)
    return tok, model_for(tok, **TINY_LLAMA, max_pos=256, seed=3).eval()


def test_default_registry_is_on_with_the_include(registry):
    assert {"hellaswag", "arc_easy", "arc_challenge", TASK} <= set(registry.all_tasks)
    assert "mmlu" in registry.all_groups


def test_local_task_matches_hand_scoring(tok_model, registry):
    tok, model = tok_model
    got = run_tasks(model, tok, [TASK], batch_size=4, registry=registry)

    def ll(ctx, cont):  # lm-eval's encoding: the whole string, split at the context's length
        c = tok(ctx, add_special_tokens=False)["input_ids"]
        w = tok(ctx + cont, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([w])).logits[0].double(), -1)
        return sum(float(logp[i - 1, w[i]]) for i in range(len(c), len(w)))

    acc, acc_norm = [], []
    for it in ITEMS:
        lls = [ll(it["question"], " " + c) for c in it["choices"]]
        acc.append(float(max(range(4), key=lambda k: lls[k]) == it["label"]))
        acc_norm.append(float(max(range(4), key=lambda k: lls[k] / len(it["choices"][k])) == it["label"]))

    t = got["tasks"][TASK]
    assert set(got["tasks"]) == {TASK} and got["groups"] == {} and got["tasks_requested"] == [TASK]
    assert t["n"] == t["n_total"] == 4 and t["num_fewshot"] == 0
    assert t["dataset_path"] == "json" and got["lm_eval_version"].startswith("0.4")
    assert 0 <= t["metrics"]["acc"] <= 1
    assert t["metrics"]["acc"] == pytest.approx(statistics.mean(acc))
    assert t["metrics"]["acc_norm"] == pytest.approx(statistics.mean(acc_norm))
    # lm-eval's standard error of a mean: the sample standard deviation / sqrt(n)
    assert t["metrics"]["acc_stderr"] == pytest.approx(statistics.stdev(acc) / math.sqrt(4))
    assert t["metrics"]["acc_norm_stderr"] == pytest.approx(statistics.stdev(acc_norm) / math.sqrt(4))
    json.dumps(got, allow_nan=False)

    limited = run_tasks(model, tok, [GROUP], limit=2, batch_size=4, registry=registry)
    assert limited["tasks"][TASK]["n"] == 2 and limited["tasks"][TASK]["n_total"] == 4 and limited["limit"] == 2
    assert limited["tasks"][TASK]["metrics"]["acc"] == pytest.approx(statistics.mean(acc[:2]))
    g = limited["groups"][GROUP]
    assert g["subtasks"] == [TASK] and g["n"] == 2 and g["metrics"]["acc"] == pytest.approx(statistics.mean(acc[:2]))


def test_unknown_task_refused_before_the_model(registry):
    # model and tokenizer None: the names are checked before anything touches them
    with pytest.raises(ValueError, match="no_such_benchmark_xyz") as err:
        run_tasks(None, None, ["hellaswag", "no_such_benchmark_xyz"], registry=registry)
    assert "hellaswag" not in str(err.value)
    with pytest.raises(EvalError, match="repeats"):
        run_tasks(None, None, [TASK, TASK], registry=registry)
    with pytest.raises(EvalError, match="non-empty"):
        run_tasks(None, None, [], registry=registry)


def test_missing_include_folder(tmp_path):
    with pytest.raises(EvalError, match="no such folder"):
        run_tasks(None, None, [TASK], include=[tmp_path / "absent"])


def test_evaluate_config_lm_eval_keys():
    from pydantic import ValidationError

    from warmstart.config.downstream import Evaluate

    ev = Evaluate()
    assert ev.lm_eval_tasks == [] and ev.lm_eval_include == []
    assert ev.lm_eval_limit is None and ev.lm_eval_num_fewshot is None
    ev = Evaluate(lm_eval_tasks=["hellaswag", "arc_easy"], lm_eval_include=["tasks/nb"], lm_eval_limit=100)
    assert ev.lm_eval_tasks == ["hellaswag", "arc_easy"] and ev.lm_eval_limit == 100
    for bad in (
        {"lm_eval_tasks": ["hellaswag", "hellaswag"]},
        {"lm_eval_tasks": [" "]},
        {"lm_eval_tasks": [3]},
        {"lm_eval_include": ["a", "a"]},
        {"lm_eval_include": [1]},
        {"lm_eval_limit": 0},
        {"lm_eval_num_fewshot": -1},
    ):
        with pytest.raises(ValidationError):
            Evaluate(**bad)


def test_the_evaluate_stage_runs_named_tasks_on_every_final_checkpoint(tmp_path, root, task_dir):
    """`evaluate.lm_eval_tasks` through the stage: lm-eval's task by name (a local YAML via lm_eval_include) on
    each run's final checkpoint, in reports/evaluate/harness.json; without tasks nothing runs."""
    from test_evaluate import make_study
    from warmstart.config import deep_merge, load_params
    from warmstart.stages import evaluate as stage

    tasks = {"evaluate": {"lm_eval_tasks": [TASK], "lm_eval_include": [str(task_dir)], "lm_eval_limit": 2}}
    params = load_params(root / "params.yaml", overrides=deep_merge(make_study(tmp_path), tasks))
    stage.run(params, progress=False)
    got = json.loads((tmp_path / "reports/evaluate/harness.json").read_text())
    assert sorted(r["run"] for r in got) == ["random", "scratch"]
    for r in got:
        t = r["tasks"][TASK]
        assert t["n"] == 2 and t["n_total"] == 4 and 0 <= t["metrics"]["acc"] <= 1 and r["tasks_requested"] == [TASK]
    params = load_params(root / "params.yaml", overrides=deep_merge(make_study(tmp_path / "b"), {}))
    stage.run(params, progress=False)
    assert not (tmp_path / "b/reports/evaluate/harness.json").exists()
