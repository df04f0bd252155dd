"""The study's training as a list of phases (``pretrain.phases``): the default's two phases train exactly as the
two hand-built trainer configs they replaced, arms change phase fields or append a phase, replay mixes read the
source corpus, a run resumes across a phase boundary bit for bit, and bad recipes are refused by phase and key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, TINY_LLAMA, WORDS_EN, WORDS_NB, model_for
from test_study import _corpus

PHASES = [
    {"name": "phase1", "train": ["embed_tokens", "lm_head"], "steps": 3, "lr": 0.003, "warmup_steps": 1,
     "lr_schedule": "constant", "min_lr_ratio": 1.0, "weight_decay": 0.0},
    {"name": "phase2", "train": [], "steps": 4, "lr": 0.002, "warmup_steps": 1, "lr_schedule": "cosine",
     "min_lr_ratio": 0.1, "weight_decay": 0.1},
]  # fmt: skip


def _params(tmp_path: Path, arms: dict | None = None, **pretrain):
    """params.yaml on the tiny project, with the test's two short phases, then ``pretrain`` over them (``phases``:
    a phase's fields by its name) and ``arms`` added."""
    from warmstart.config import deep_merge, load_params

    tiny = {
        "shared": {"data_dir": str(tmp_path / "data"), "reports_dir": str(tmp_path / "reports")},
        "pretrain": {"seq_len": 16, "micro_batch": 2, "phases": PHASES, "tag_every": 2, "log_every": 1,
                     "signals_every": 0},
        "study": {"arms": arms or {}},
    }  # fmt: skip
    return load_params(ROOT / "params.yaml", overrides=deep_merge(tiny, {"pretrain": pretrain}))


@pytest.fixture
def project(tmp_path):
    """A target tokenizer, the focus swap model it starts from, and the target and source training splits
    tokenized with it (what the tokenize stage writes)."""
    from warmstart.config import Tokenizer as TokCfg
    from warmstart.data.shards import tokenize_files
    from warmstart.model import save_model
    from warmstart.tokenizer import train_tokenizer

    data = tmp_path / "data"
    _corpus(data, "en-US", WORDS_EN)
    _corpus(data, "nb-NO", WORDS_NB)
    tok = train_tokenizer([" ".join(WORDS_EN + WORDS_NB)] * 4, TokCfg(vocab_size=300, target_mix={"target": 1.0}))
    model = model_for(tok, **TINY_LLAMA, max_pos=64, seed=0, bos_token_id=tok.bos_token_id)
    save_model(model, tok, data / "models" / "swap-focus")
    for lang in ("nb-NO", "en-US"):
        tokenize_files([str(data / "corpus" / lang / "train.jsonl")], data / "tokens" / "target" / lang / "train", tok)
    return tmp_path


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_default_phases_train_exactly_as_the_two_hand_built_configs(project):
    """The phase list resolves to the trainer configs the study built by hand before (phase 1: embeddings and
    head only, constant rate; phase 2: everything, cosine): the same weights bit for bit."""
    from warmstart.train.config import TrainConfig
    from warmstart.train.loop import train
    from warmstart.train.study import train_run

    params = _params(project)
    got = train_run(params, "focus").info
    data = project / "data"
    common = dict(
        tokenizer_path=str(data / "models/swap-focus"),
        train_files={"target": [str(data / "tokens/target/nb-NO/train")]},
        seq_len=16, micro_batch=2, log_every=1, seed=params.shared.seed, keep_last=1, tag_every=2,
        progress=False, tensorboard=False,
    )  # fmt: skip
    p1 = TrainConfig(
        model_path=str(data / "models/swap-focus"), out_dir=str(project / "hand/phase1"),
        train_only=["embed_tokens", "lm_head"], steps=3, lr=0.003, warmup_steps=1, lr_schedule="constant",
        min_lr_ratio=1.0, weight_decay=0.0, **common,
    )  # fmt: skip
    train(p1)
    p2 = TrainConfig(
        model_path=str(project / "hand/phase1/final"), out_dir=str(project / "hand/phase2"), steps=4, lr=0.002,
        warmup_steps=1, lr_schedule="cosine", min_lr_ratio=0.1, weight_decay=0.1, **common,
    )  # fmt: skip
    train(p2)
    _same(_weights(Path(got["final"])), _weights(project / "hand/phase2/final"))
    assert [p["name"] for p in got["phases"]] == ["phase1", "phase2"]
    assert [p["train"] for p in got["plan"]] == [["embed_tokens", "lm_head"], []]
    # phase 1 left the body alone
    init, after1 = _weights(data / "models/swap-focus"), _weights(data / "runs/focus/phase1/final")
    body = [k for k in init if "embed_tokens" not in k and "lm_head" not in k]
    assert body and all(torch.equal(init[k], after1[k]) for k in body)
    assert not torch.equal(init["model.embed_tokens.weight"], after1["model.embed_tokens.weight"])


def test_an_arm_appends_an_annealing_phase_with_its_own_mix_and_wsd_decay(project):
    """Lucie's annealing as an arm: phase 2 at a constant rate, then a phase that decays linearly (WSD with
    decay over the whole phase) on a target/source mix; the logged rates are the schedule's, exactly, and the
    rows of the mixed phase follow the weights exactly."""
    from warmstart.train.schedules import lr_multiplier
    from warmstart.train.study import train_run

    anneal = {"steps": 4, "lr": 0.002, "warmup_steps": 0, "lr_schedule": "wsd", "decay_steps": 4,
              "min_lr_ratio": 0.01, "mix": {"target": 0.75, "source": 0.25}}  # fmt: skip
    arms = {"lucie": {"init": "focus", "phases": {"phase2": {"lr_schedule": "constant"}, "anneal": anneal}}}
    params = _params(project, arms=arms)
    info = train_run(params, "lucie").info
    assert [p["name"] for p in info["plan"]] == ["phase1", "phase2", "anneal"]
    assert info["plan"][2]["mix"] == {"target": 0.75, "source": 0.25}
    log = [json.loads(x) for x in Path(info["log"]).read_text().splitlines()]
    lrs = {(r["phase"], r["step"]): r["lr"] for r in log}
    assert [lrs[("phase2", s)] for s in (4, 5, 6, 7)] == [0.002] * 4  # warm-up of 1 step, then constant
    want = [0.002 * lr_multiplier(k, 4, "wsd", 0, 4, 0.01) for k in (1, 2, 3, 4)]
    assert want == pytest.approx([0.002 * 0.7525, 0.002 * 0.505, 0.002 * 0.2575, 0.002 * 0.01], abs=1e-15)
    assert [lrs[("anneal", s)] for s in (8, 9, 10, 11)] == pytest.approx(want, rel=1e-12)
    assert {r["corpus"] for r in log if r["phase"] == "anneal"} == {"mix"}
    assert {r["corpus"] for r in log if r["phase"] != "anneal"} == {"target"}
    state = json.loads(
        next((project / "data/runs/lucie/anneal/checkpoints").glob("step*/trainer_state.json")).read_text()
    )
    counts = state["data_state"]["counts"]
    rows = sum(counts.values())
    assert counts == {"target": rows * 3 // 4, "source": rows // 4}


def test_the_rewarm_of_a_later_phase_starts_from_zero(project):
    """A warm-up in a later phase re-warms (Ibrahim et al. 2024): its first step runs at lr / warmup_steps."""
    from warmstart.train.study import train_run

    params = _params(project, phases={"phase2": {"warmup_steps": 2}})
    log = [json.loads(x) for x in Path(train_run(params, "focus").info["log"]).read_text().splitlines()]
    p2 = [r["lr"] for r in log if r["phase"] == "phase2"]
    assert p2[:2] == pytest.approx([0.001, 0.002], rel=1e-12)


def test_a_run_resumes_across_a_phase_boundary_bit_for_bit(project):
    """Interrupted after phase 1, or in phase 2 after a tagged checkpoint, ``train_run(resume=True)`` keeps the
    finished phase (not retrained) and ends on the uninterrupted run's weights."""
    from warmstart.train.study import train_run

    params = _params(project)
    full = train_run(params, "focus").info
    want = _weights(Path(full["final"]))
    runs = project / "data/runs/focus"
    log_before = Path(full["log"]).read_text()
    stamp = (runs / "phase1/final/model.safetensors").stat().st_mtime_ns
    shutil.rmtree(runs / "phase2")  # killed at the phase boundary
    again = train_run(params, "focus", resume=True).info
    _same(_weights(Path(again["final"])), want)
    assert (runs / "phase1/final/model.safetensors").stat().st_mtime_ns == stamp, "phase 1 was trained again"
    # killed inside phase 2, after its tagged checkpoint at step 2 (the final export and last records lost)
    shutil.rmtree(runs / "phase2/final")
    for ck in (runs / "phase2/checkpoints").glob("step*"):
        if ck.name != "step0000002":
            shutil.rmtree(ck)
    third = train_run(params, "focus", resume=True).info
    _same(_weights(Path(third["final"])), want)
    keys = ("step", "phase", "loss", "lr", "grad_norm", "tokens", "bytes", "data_state")  # not the timings

    def records(text: str) -> list[tuple]:
        return [tuple(json.loads(x).get(k) for k in keys) for x in text.splitlines()]

    assert records(Path(third["log"]).read_text()) == records(log_before)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"pretrain": {"phases": {"phase2": {"mix": {"target": 0.0}}}}},
         r"pretrain.phases\[phase2\].*mix weights must be >= 0 and sum to a positive number"),
        ({"pretrain": {"phases": {"phase2": {"mix": {"target": -1.0, "source": 2.0}}}}},
         r"phase phase2: mix weights must be >= 0"),
        ({"study": {"arms": {"r": {"init": "focus", "phases": {"phase2": {"mix": {"english": 1.0}}}}}}},
         r"study.arms.r.phases\[phase2\].mix.english: no corpus 'english'; the corpora are \['target', 'source'\]"),
        ({"tokenize": {"corpora": {"target": ["target"]}}},
         r"study.arms.replay-5.phases\[phase2\].mix.source: the source corpus \(en-US\) is not tokenized with the "
         r"target tokenizer; add source to tokenize.corpora.target"),
        ({"pretrain": {"phases": {"phase2": {"lrr": 0.1}}}}, r"pretrain.phases\[phase2\].lrr: unknown key"),
        ({"pretrain": {"phases": {"phase2": {"train": ["(unclosed"]}}}}, r"phase phase2: train regex '\(unclosed'"),
        ({"pretrain": {"phases": [PHASES[0], PHASES[0]]}}, r"phase names repeat: \['phase1', 'phase1'\]"),
        ({"pretrain": {"phase1": {"steps": 1}}}, r"pretrain.phase1/phase2/phase1_train_only became pretrain.phases"),
        ({"study": {"arms": {"r": {"init": "focus", "phases": {"extra": {"steps": 2}}}}}},
         r"study.arms.r.phases\[extra\].lr: missing key"),
        ({"pretrain": {"phases": {"phase2": {"batch_ramp": {"start": 3, "increment": 16, "samples": 9}}}}},
         r"pretrain.phases\[phase2\].batch_ramp: start \(3\) and increment \(16\) must be multiples of micro_batch"),
        ({"pretrain": {"phases": {"phase2": {"lr_schedule": "wsd", "decay_steps": 0}}}},
         r"wsd needs 0 < decay_steps <= steps - warmup_steps"),
    ],
)  # fmt: skip
def test_bad_phases_are_refused_naming_the_phase_and_key(overrides, message):
    from warmstart.config import ParamsError, load_params

    with pytest.raises(ParamsError, match=message):
        load_params(ROOT / "params.yaml", overrides=overrides)


def test_a_phase_training_no_parameter_is_refused_before_anything_is_written(project):
    from warmstart.train.study import train_run

    params = _params(project, phases={"phase1": {"train": ["no_such_param"]}})
    with pytest.raises(ValueError, match=r"run focus: pretrain.phases\[phase1\].train \['no_such_param'\] matches no"):
        train_run(params, "focus")
    assert not (project / "data/runs/focus").exists()


def test_a_replay_mix_without_the_source_shards_names_the_fix(project):
    from warmstart.train.study import train_run

    shutil.rmtree(project / "data/tokens/target/en-US")
    arms = {"replay": {"init": "focus", "phases": {"phase2": {"mix": {"target": 0.9, "source": 0.1}}}}}
    with pytest.raises(FileNotFoundError, match=r"pretrain.phases\[phase2\].mix.source reads .*tokens/target/en-US"):
        train_run(_params(project, arms=arms), "replay")
    assert not (project / "data/runs/replay").exists()


def test_notebook_overrides_address_a_phase_by_name():
    from warmstart.notebook.setup import nest_overrides

    assert nest_overrides({"pretrain.phases.phase2.lr": 0.01}) == {"pretrain": {"phases": {"phase2": {"lr": 0.01}}}}
    from warmstart.config import load_params

    p = load_params(ROOT / "params.yaml", overrides=nest_overrides({"pretrain.phases.phase2.lr": 0.01}))
    assert p.pretrain.phase("phase2").lr == 0.01 and p.pretrain.phase("phase1").lr == 0.003
    assert [ph.name for ph in p.pretrain.phases] == ["phase1", "phase2"]


def test_scratch_takes_the_recipe_init_range_and_rope_theta(project):
    """Lucie's RoPE theta (500k) and an initializer range reach the scratch run's model config from params."""
    from transformers import AutoConfig

    from warmstart.train.study import build_scratch

    data = project / "data"
    shutil.copytree(data / "models/swap-focus", data / "models/base")
    shutil.copytree(data / "models/swap-focus", data / "tokenizer/target")
    params = _params(project, scratch_init_range=0.006, scratch_rope_theta=500000.0)
    cfg = AutoConfig.from_pretrained(build_scratch(params, project / "scratch", seed=1))
    theta = (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta", getattr(cfg, "rope_theta", None))
    assert cfg.initializer_range == 0.006 and theta == 500000.0
    plain = AutoConfig.from_pretrained(build_scratch(_params(project), project / "plain", seed=1))
    assert plain.initializer_range == 0.02
    w = _weights(project / "scratch")["model.layers.0.mlp.up_proj.weight"]
    assert 0.004 < float(w.std()) < 0.008  # drawn with the recipe's std, not the base's 0.02


def test_a_phase_batch_ramp_and_optimiser_knobs_reach_the_trainer(project):
    """Lucie's batch-size ramp, Adam epsilon and betas and the weight-decay exclusions, set on one phase."""
    from warmstart.train.study import train_run

    knobs = {"batch_ramp": {"start": 2, "increment": 2, "samples": 4}, "eps": 1e-5, "betas": [0.9, 0.99],
             "no_decay": ["norm"]}  # fmt: skip
    info = train_run(_params(project, grad_accum=2, phases={"phase2": knobs}), "focus").info
    log = [json.loads(x) for x in Path(info["log"]).read_text().splitlines()]
    assert [r["batch_rows"] for r in log if r["phase"] == "phase2"] == [2, 2, 4, 4]  # Megatron's ramp, 2 -> 4 rows
    assert [r["batch_rows"] for r in log if r["phase"] == "phase1"] == [4, 4, 4]
    cfg = json.loads((project / "data/runs/focus/phase2/train_config.json").read_text())
    assert cfg["eps"] == 1e-5 and cfg["betas"] == [0.9, 0.99] and cfg["no_decay"] == ["norm"]
    assert cfg["batch_ramp"] == {"start": 2, "increment": 2, "samples": 4}
    first = json.loads((project / "data/runs/focus/phase1/train_config.json").read_text())
    assert first["eps"] == 1e-8 and first["batch_ramp"] is None


def test_an_overlay_drops_an_arm_from_the_written_params(tmp_path):
    """`<arm>: null` in an overlay removes the arm from params.yaml itself (dvc.yaml's foreach expands every arm)."""
    import yaml

    from warmstart.config import apply_profile

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "drop.yaml").write_text("study:\n  arms:\n    anneal: null\n")
    params = apply_profile(str(tmp_path / "drop.yaml"), tmp_path / "params.yaml")
    written = yaml.safe_load((tmp_path / "params.yaml").read_text())["study"]["arms"]
    assert "anneal" not in written and "anneal" not in params.study.arms and "replay-5" in written
