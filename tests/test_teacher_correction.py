"""Minitron's teacher correction in the compress stage (``compress.teacher_correction``): its params, the
corrected teacher that compress_prep trains and every variant then uses, and what the report and card say."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, TINY_LLAMA, WORDS_EN, WORDS_NB, model_for
from test_study import _corpus

TEACHER = "fvt"  # a study run name: the tiny teacher's run.json stands in for the pretrain stage's


def _params(tmp_path, steps: int, variants=("width_kd",)):
    from warmstart.config import load_params

    return load_params(
        ROOT / "params.yaml",
        overrides={
            "shared": {"data_dir": str(tmp_path / "data"), "reports_dir": str(tmp_path / "reports")},
            "pretrain": {"seq_len": 16, "micro_batch": 2},
            "compress": {
                "teacher": TEACHER,
                "variants": list(variants),
                "eval_bytes": 1000,
                "tag_every": 1,
                "calibration": {"samples": 2, "seq_len": 16, "batch_size": 2},
                "train": {"steps": 1, "lr": 0.002, "warmup_steps": 0},
                "teacher_correction": {"steps": steps, "lr": 0.01},
            },
        },
    )


@pytest.fixture
def project(tmp_path):
    """A corpus and a tiny trained-looking teacher run (``data/logs/fvt/run.json`` naming its final model)."""
    from warmstart.config import Tokenizer as TokCfg
    from warmstart.data.shards import tokenize_files
    from warmstart.model import save_model
    from warmstart.tokenizer import train_tokenizer

    data = tmp_path / "data"
    _corpus(data, "en-US", WORDS_EN)
    _corpus(data, "nb-NO", WORDS_NB)
    tok = train_tokenizer([" ".join(WORDS_EN + WORDS_NB)] * 4, TokCfg(vocab_size=300, target_mix={"target": 1.0}))
    model = model_for(tok, **TINY_LLAMA, max_pos=64, seed=0, bos_token_id=tok.bos_token_id)
    final = save_model(model, tok, data / "runs" / TEACHER / "final")
    # what the tokenize stage writes: the students train on the target split's token shards
    tokenize_files(
        [str(data / "corpus" / "nb-NO" / "train.jsonl")], data / "tokens" / "target" / "nb-NO" / "train", tok
    )
    (data / "logs" / TEACHER).mkdir(parents=True)
    (data / "logs" / TEACHER / "run.json").write_text(
        json.dumps({"name": TEACHER, "final": str(final), "bytes": 1000, "tokens": 300})
    )
    return tmp_path, final


@pytest.mark.parametrize(
    "override,message",
    [
        ({"steps": -1}, r"compress.teacher_correction.steps: Input should be greater than or equal to 0 \(got -1\)"),
        ({"steps": "many"}, r"compress.teacher_correction.steps: Input should be a valid integer"),
        ({"steps": 2, "lr": 0}, r"compress.teacher_correction.lr: Input should be greater than 0"),
        ({"steps": 2, "warmup_steps": 3}, r"compress.teacher_correction: .*warmup_steps \(3\) must be <= steps \(2\)"),
        ({"step": 2}, r"compress.teacher_correction.step: unknown key"),
    ],
)
def test_params_name_the_bad_key(override, message):
    from warmstart.config import ParamsError, load_params

    with pytest.raises(ParamsError, match=message):
        load_params(ROOT / "params.yaml", overrides={"compress": {"teacher_correction": override}})


def test_default_is_off_with_a_small_lr():
    from warmstart.config import load_params

    p = load_params(ROOT / "params.yaml")
    tc = p.compress.teacher_correction
    assert tc.steps == 0 and tc.lr == p.compress.train.lr / 4 and tc.optimizer == p.compress.train.optimizer


def _launch_spy(monkeypatch):
    """Replace the stage's ``launch`` for the variants: record the config, train nothing."""
    from warmstart.stages import compress as stage

    seen = []

    class Stop(Exception):
        pass

    def spy(cfg):
        seen.append(cfg)
        raise Stop

    monkeypatch.setattr(stage, "launch", spy)
    return seen, Stop


def test_off_keeps_the_adapted_teacher_and_records_it(project, monkeypatch):
    from warmstart.prune.teacher import corrected_dir, teacher_dir
    from warmstart.stages import compress as stage

    tmp_path, original = project
    params = _params(tmp_path, steps=0)
    stage.run_prep(params)
    prep = json.loads((tmp_path / "reports/compress/prep.json").read_text())
    assert prep["teacher_correction"] == {"steps": 0, "corrected": False}
    assert prep["teacher_dir"] == str(original) and prep["teacher_bytes"] == 1000
    assert not corrected_dir(params).exists()
    assert teacher_dir(params) == (TEACHER, original)
    seen, Stop = _launch_spy(monkeypatch)
    with pytest.raises(Stop):
        stage.run_variant(params, "width_kd")
    assert seen[0].teacher_path == str(original)


def test_corrected_teacher_is_trained_used_and_reported(project):
    from warmstart.prune.teacher import corrected_dir, teacher_dir
    from warmstart.stages import compress as stage

    tmp_path, original = project
    params = _params(tmp_path, steps=2)
    stage.run_prep(params)
    corrected = corrected_dir(params) / "final"
    assert teacher_dir(params) == (TEACHER, corrected)
    a, b = load_file(original / "model.safetensors"), load_file(corrected / "model.safetensors")
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(x) for x in (corrected_dir(params) / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2
    prep = json.loads((tmp_path / "reports/compress/prep.json").read_text())
    c = prep["teacher_correction"]
    assert c["corrected"] and c["steps"] == 2 and c["lr"] == 0.01 and c["dir"] == prep["teacher_dir"] == str(corrected)
    assert (
        c["from"] == str(original) and c["bytes"] == log[-1]["bytes"] > 0 and prep["teacher_bytes"] == 1000 + c["bytes"]
    )
    assert set(c["bpb_before"]) == set(c["bpb_after"]) == {"nb-NO", "en-US"}
    assert c["bpb_after"] == prep["teacher_bpb"] and c["bpb_after"] != c["bpb_before"]

    stage.run_variant(params, "width_kd")  # one step, distilled from the corrected teacher by the trainer
    cfg = json.loads((tmp_path / "data/compress/runs/width_kd/train/train_config.json").read_text())
    assert cfg["teacher_path"] == str(corrected)
    assert json.loads((tmp_path / "data/compress/logs/width_kd/run.json").read_text())["teacher_dir"] == str(corrected)

    stage.run(params)
    card = (tmp_path / "reports/cards/compress/MODEL_CARD.md").read_text()
    assert "The teacher was corrected first" in card and "fine-tuned for 2 steps" in card
    assert f"| teacher ({TEACHER}, corrected: 2 steps) |" in card
    summary = json.loads((tmp_path / "reports/cards/compress/summary.json").read_text())
    assert summary["teacher_correction"]["steps"] == 2


def test_report_says_when_the_teacher_was_not_corrected():
    from warmstart.config import load_params
    from warmstart.prune.summary import correction_sentence, number_labels, teacher_label, teacher_word

    params = load_params(ROOT / "params.yaml")
    s = {"teacher": "fvt", "teacher_correction": {"steps": 0, "corrected": False}}
    assert teacher_label(s) == "teacher (fvt)" and teacher_word(s) == "the teacher"
    assert "no teacher correction (compress.teacher_correction.steps is 0)" in correction_sentence(params, s)
    assert number_labels(s)["teacher_bpb"] == "teacher's target bits per byte"
    bpb = {"nb-NO": 1.5, "en-US": 2.0}
    s["teacher_correction"] = {
        "steps": 5,
        "corrected": True,
        "bytes": 1234,
        "bpb_before": bpb,
        "bpb_after": {"nb-NO": 1.4, "en-US": 2.1},
    }
    assert teacher_label(s) == "teacher (fvt, corrected: 5 steps)" and teacher_word(s) == "the corrected teacher"
    assert (
        "target bits per byte from 1.500 to 1.400 and its source bits per byte from 2.000 to 2.100"
        in correction_sentence(params, s)
    )
    assert number_labels(s)["teacher_bpb"] == "corrected teacher's target bits per byte"


def test_headline_bytes_to_reach_scratch_and_no_infinite_speedup():
    """A student that starts below scratch's final bits per byte needs 0 bytes and has no finite speed-up: the
    headline gives the 0 and leaves the speed-up out (strict JSON); one that crosses later gets both."""
    from warmstart.config import load_params
    from warmstart.prune.summary import _finite, headline, summarise

    params = load_params(ROOT / "params.yaml")

    def run(curve):
        return {
            "params": {"total": 10, "non_embedding": 4},
            "bytes": curve[-1][0],
            "curve": [{"bytes": b, "bpb_nb-NO": y, "bpb_en-US": 3.0} for b, y in curve],
        }

    prep = {"teacher": "fvt", "teacher_bpb": {"nb-NO": 1.8, "en-US": 2.5}, "teacher_params": {}, "masking": {}}
    scratch = run([(0, 9.0), (100, 3.0), (200, 2.0)])
    s = summarise(params, prep, {"width_kd": run([(0, 1.9), (200, 1.85)]), "scratch": scratch})
    w = s["variants"]["width_kd"]
    assert w["bytes_to_scratch_final"] == 0.0 and w["speedup_vs_scratch"] == float("inf")
    head = headline(s, "nb-NO")
    assert head["width_kd_bytes_to_scratch_final"] == 0.0 and "width_kd_speedup_vs_scratch" not in head
    assert head["bpb_width_kd"] == 1.85 and head["bpb_scratch"] == 2.0 and head["teacher_bpb"] == 1.8
    strict = json.loads(json.dumps(_finite(s), allow_nan=False))  # the card's summary.json: null, not Infinity
    assert (
        strict["variants"]["width_kd"]["speedup_vs_scratch"] is None
        and strict["variants"]["width_kd"]["bytes_to_scratch_final"] == 0.0
    )
    # crossing 2.0 halfway between 0 (2.4) and 100 bytes (1.6): 50 bytes, scratch needs 200: 4x
    s = summarise(params, prep, {"width_kd": run([(0, 2.4), (100, 1.6), (200, 1.5)]), "scratch": scratch})
    head = headline(s, "nb-NO")
    assert head["width_kd_bytes_to_scratch_final"] == pytest.approx(50.0) and head[
        "width_kd_speedup_vs_scratch"
    ] == pytest.approx(4.0)
