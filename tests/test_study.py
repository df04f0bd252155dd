"""The base stage's HF path on a locally saved model, the run-log merge, the runs registry, the params view."""

import json
from pathlib import Path

import pytest

from conftest import ROOT, WORDS_EN, WORDS_NB, model_for


def _corpus(root: Path, lang: str, words: list[str]) -> None:
    for split in ("train", "val", "test"):
        d = root / "corpus" / lang
        d.mkdir(parents=True, exist_ok=True)
        recs = [
            {
                "id": f"{split}{i}",
                "doc": f"d{i % 3}",
                "page": "p",
                "lang": lang,
                "kind": "para",
                "text": " ".join(words[(i + j) % len(words)] for j in range(12)),
            }
            for i in range(6)
        ]
        (d / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def _params(tmp_path: Path, **base):
    from warmstart.config import load_params

    return load_params(
        ROOT / "params.yaml",
        overrides={
            "shared": {"data_dir": str(tmp_path / "data"), "reports_dir": str(tmp_path / "reports")},
            "base": base,
            "vocab_swap": {"eval_bytes": 1000},
        },
    )


def test_base_stage_loads_a_locally_saved_hf_model(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from warmstart.config import Tokenizer as TokCfg
    from warmstart.model import save_model
    from warmstart.stages import base as stage
    from warmstart.tokenizer import train_tokenizer

    _corpus(tmp_path / "data", "en-US", WORDS_EN)
    _corpus(tmp_path / "data", "nb-NO", WORDS_NB)
    tok = train_tokenizer([" ".join(WORDS_EN + WORDS_NB)] * 4, TokCfg(vocab_size=300, target_mix={"target": 1.0}))
    model = model_for(tok, hidden=16, layers=1, heads=2, max_pos=64, seed=0, bos_token_id=tok.bos_token_id)
    save_model(model, tok, tmp_path / "hub-model")
    params = _params(tmp_path, source="hf", model_id=str(tmp_path / "hub-model"))
    headline = stage.run(params)
    out = tmp_path / "data/models/base"
    loaded = AutoModelForCausalLM.from_pretrained(out)
    assert AutoTokenizer.from_pretrained(out).get_vocab() == tok.get_vocab()
    for k, v in model.state_dict().items():
        assert (loaded.state_dict()[k] == v).all(), k
    m = json.loads((tmp_path / "reports/base/base.json").read_text())
    assert m["source"] == "hf" and m["params"] == headline["params"] == sum(p.numel() for p in model.parameters())
    assert m["steps"] == 0 and m["model_type"] == "llama" and m["architectures"] == ["LlamaForCausalLM"]
    assert set(m["val_bits_per_byte"]) == {"en-US", "nb-NO"} and all(v > 0 for v in m["val_bits_per_byte"].values())
    assert json.loads((tmp_path / "reports/metrics/base.json").read_text()) == headline
    assert headline["val_bpb_nb-NO"] == m["val_bits_per_byte"]["nb-NO"] and len(headline) <= 12


def test_base_params_name_the_missing_model_id(tmp_path):
    from warmstart.config import ParamsError

    with pytest.raises(ParamsError, match="base.source is 'hf' but base.model_id is not set"):
        _params(tmp_path, source="hf")


def test_merge_logs_offsets_steps_and_counters(tmp_path):
    from warmstart.train.launch import merge_logs

    for name, steps, recs in (
        ("phase1", 4, [(2, 100, 400), (4, 200, 800)]),
        ("phase2", 6, [(3, 150, 600), (6, 300, 1200)]),
    ):
        d = tmp_path / name
        d.mkdir()
        (d / "train_config.json").write_text(json.dumps({"steps": steps}))
        (d / "log.jsonl").write_text(
            "".join(
                json.dumps({"step": s, "samples": s, "tokens": t, "bytes": b, "loss": 1.0}) + "\n" for s, t, b in recs
            )
        )
    log, table = merge_logs([("phase1", tmp_path / "phase1"), ("phase2", tmp_path / "phase2")])
    assert [(r["phase"], r["step"], r["tokens"], r["bytes"]) for r in log] == [
        ("phase1", 2, 100, 400),
        ("phase1", 4, 200, 800),
        ("phase2", 7, 350, 1400),
        ("phase2", 10, 500, 2000),
    ]
    assert table == [{"name": "phase1", "start_step": 1, "steps": 4}, {"name": "phase2", "start_step": 5, "steps": 6}]


@pytest.mark.slow
def test_launch_with_two_processes_runs_ddp(tmp_path, monkeypatch):
    """`pretrain.num_processes: 2` goes through `accelerate launch` (gloo on CPU): both ranks train, rank 0 logs."""
    from warmstart.config import Tokenizer as TokCfg
    from warmstart.model import ModelSpec
    from warmstart.tokenizer import train_tokenizer
    from warmstart.train.checkpoint import list_checkpoints
    from warmstart.train.config import TrainConfig
    from warmstart.train.launch import launch

    for k in [k for k in __import__("os").environ if k.startswith("ACCELERATE_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    text = [" ".join(WORDS_NB[(i + j) % len(WORDS_NB)] for j in range(20)) for i in range(60)]
    train_tokenizer(text, TokCfg(vocab_size=300, target_mix={"target": 1.0}), tmp_path / "tok")
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in text))
    cfg = TrainConfig(
        model=ModelSpec(hidden=16, layers=1, heads=2, max_pos=64),
        tokenizer_path=str(tmp_path / "tok"),
        train_files={"t": [str(tmp_path / "t.jsonl")]},
        seq_len=32,
        micro_batch=2,
        steps=3,
        out_dir=str(tmp_path / "run"),
        log_every=1,
        progress=False,
        tensorboard=False,
        peak_flops=1e11,
    )
    launch(cfg, num_processes=2)
    log = [json.loads(x) for x in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and log[-1]["tokens"] == 3 * 2 * 2 * 32  # 2 ranks x micro_batch 2
    state = json.loads((list_checkpoints(tmp_path / "run/checkpoints")[-1] / "trainer_state.json").read_text())
    assert state["world_size"] == 2


def test_runs_registry_names_dirs_and_starting_models(tmp_path):
    from warmstart.runs import BASE, get_run, run_names, study_runs

    params = _params(tmp_path)
    swaps = ["random", "exact", "fvt", "focus", "omp", "hf-default", "tokdistil"]
    assert run_names(params) == ["scratch", "original", *swaps, "fvt-hybrid", "replay-5", "replay-25", "anneal"]
    kinds = {r.name: (r.kind, r.method) for r in study_runs(params)}
    assert (
        kinds["scratch"] == ("scratch", None)
        and kinds["original"] == ("original", None)
        and kinds["omp"] == ("swap", "omp")
    )
    data = tmp_path / "data"
    fvt = get_run(params, "fvt")
    assert (fvt.dir(params), fvt.log(params), fvt.record(params)) == (
        data / "runs/fvt",
        data / "logs/fvt/log.jsonl",
        data / "logs/fvt/run.json",
    )
    assert fvt.init_dir(params) == data / "models/swap-fvt"
    assert get_run(params, "original").init_dir(params) == BASE.init_dir(params) == data / "models/base"
    assert get_run(params, "scratch").init_dir(params) == data / "runs/scratch/init"
    with pytest.raises(ValueError, match=r"unknown run 'fvtt'; the study's runs are \['scratch', 'original', 'random'"):
        get_run(params, "fvtt")
    # the arm: fvt's swapped model, its own directories, its pretrain settings
    arm = get_run(params, "fvt-hybrid")
    assert (arm.kind, arm.method, dict(arm.overrides)) == ("arm", "fvt", {"masked_share": 0.1})
    replay = get_run(params, "replay-5")
    assert (replay.kind, replay.method) == ("arm", "focus") and dict(replay.overrides)["phases"]["phase2"][
        "steps"
    ] == 126
    assert arm.init_dir(params) == data / "models/swap-fvt" and arm.dir(params) == data / "runs/fvt-hybrid"
    # a seed-spread run: the same run under data/seeds/s<seed>, never in the DVC study's directories
    s = arm.at_seed(7)
    assert (s.dir(params), s.record(params)) == (
        data / "seeds/s7/runs/fvt-hybrid",
        data / "seeds/s7/logs/fvt-hybrid/run.json",
    )
    assert s.init_dir(params) == data / "models/swap-fvt" and s.overrides == arm.overrides
    assert get_run(params, "scratch").at_seed(7).init_dir(params) == data / "seeds/s7/runs/scratch/init"
    from warmstart.runs import derived_run

    with pytest.raises(ValueError, match="only study runs are trained per seed"):
        derived_run("context", "yarn").at_seed(7)


@pytest.mark.parametrize(
    "study,message",
    [
        (
            {"arms": {"x": {"init": "fvtt", "masked_share": 0.1}}},
            r"study.arms.x.init is 'fvtt', not a vocab_swap method",
        ),
        ({"arms": {"x": {"init": "fvt"}}}, "an arm changes at least one pretrain setting"),
        (
            {"arms": {"x": {"init": "fvt", "seq_len": 64}}},
            r"arm keys \['seq_len'\] are not pretrain settings an arm may change",
        ),
        ({"arms": {"fvt": {"init": "fvt", "z_loss": 1e-4}}}, "the name is already a study run's"),
        ({"arms": {"Bad Name": {"init": "fvt", "z_loss": 1e-4}}}, "use lower-case letters"),
        ({"seeds": [1, 1]}, r"seeds must be distinct and >= 0: \[1, 1\]"),
        ({"seeds": []}, "at least 1 item"),
    ],
)
def test_study_params_name_what_is_wrong(tmp_path, study, message):
    from warmstart.config import ParamsError, load_params

    with pytest.raises(ParamsError, match=message):
        load_params(ROOT / "params.yaml", overrides={"study": study})


def test_params_view_refuses_undeclared_keys(tmp_path):
    from warmstart.config import Params
    from warmstart.stages.contract import UndeclaredParam, declared

    params = _params(tmp_path)
    view = declared(params, "base", ["shared.data_dir", "base.optim", "base.seq_len"])
    assert isinstance(view, Params) and isinstance(view.base.optim.lr, float)
    assert view.base.optim.model_dump() == params.base.optim.model_dump()  # a declared section, whole
    assert view.path("models") == tmp_path / "data/models"  # Params.path reads shared.data_dir: declared
    with pytest.raises(
        UndeclaredParam, match=r"stage 'base' read params key 'base.micro_batch', which it does not declare"
    ):
        _ = view.base.micro_batch
    with pytest.raises(UndeclaredParam, match=r"'shared.reports_dir'"):
        view.report_path("x")  # Params.report_path needs shared.reports_dir
    with pytest.raises(UndeclaredParam, match=r"'base.model'"):
        view.base.model.model_dump()  # a method of an undeclared section reads all of it
    with pytest.raises(AttributeError, match="read-only"):
        view.shared = None


def test_read_records_of_a_matrix_name_the_missing_stage(tmp_path):
    from warmstart.outputs import read_records

    params = _params(tmp_path)
    params.report_path("context").mkdir(parents=True)
    params.report_path("context", "yarn.json").write_text(json.dumps({"method": "yarn"}))
    assert read_records(params, "context", ["yarn"], "context_run") == {"yarn": {"method": "yarn"}}
    with pytest.raises(FileNotFoundError, match=r"context/pi.json is missing: run the context_run@pi stage first"):
        read_records(params, "context", ["yarn", "pi"], "context_run")


def test_headline_metrics_are_flat_finite_scalars(tmp_path):
    """A headline file is strict JSON: a non-finite number (which json writes as Infinity or NaN) is refused by
    name before anything is written, as is a nested value or a thirteenth key."""
    from warmstart.config import load_params
    from warmstart.outputs import write_headline

    params = load_params(
        Path(__file__).resolve().parents[1] / "params.yaml", {"shared": {"reports_dir": str(tmp_path)}}
    )
    with pytest.raises(ValueError, match=r"must be finite numbers \(or null\); not finite: \['a', 'c'\]"):
        write_headline(params, "x", {"a": float("inf"), "b": 1.0, "c": float("nan")})
    with pytest.raises(TypeError, match=r"must be flat scalars; not: \{'d': 'dict'\}"):
        write_headline(params, "x", {"d": {"e": 1}})
    with pytest.raises(ValueError, match=r"have 13 keys \(at most 12\)"):
        write_headline(params, "x", {f"k{i}": i for i in range(13)})
    assert not (tmp_path / "metrics").exists()
    assert write_headline(params, "x", {"a": 1.5, "b": None, "c": "focus", "d": True}) == json.loads(
        (tmp_path / "metrics/x.json").read_text()
    )
