"""Loss-spike detector: loaders, methods, CLI, benchmark goals, online form."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from warmstart.spikes import api as S
from warmstart.spikes import bench as B


def _flat_bump(n=300, base=2.0, at=150, bump=(2.5, 3.0, 2.5), step0=0, stride=1):
    loss = np.full(n, base)
    loss[at : at + len(bump)] = bump
    return pd.DataFrame({"step": step0 + stride * np.arange(n), "loss": loss})


def _noisy(n=1500, seed=0, sigma=0.01, level=3.0, spikes=((600, 0.12), (1100, 0.2))):
    """Flat-ish noisy log-loss with a slow decay and a few one-step spikes (log units)."""
    rng = np.random.default_rng(seed)
    y = np.log(level) - 0.1 * np.arange(n) / n + sigma * rng.normal(size=n)
    for at, h in spikes:
        y[at] += h
        y[at + 1] += h / 3
    return pd.DataFrame(
        {
            "step": np.arange(1, n + 1),
            "loss": np.exp(y),
            "grad_norm": np.exp(0.1 * rng.normal(size=n)),
            "lr": np.minimum(1.0, np.arange(1, n + 1) / 100) * 3e-4,
        }
    )


# --------------------------------------------------------------------------- exact events


def test_flat_bump_exact_event():
    (ev,) = S.detect(_flat_bump())
    assert (ev.start_step, ev.peak_step, ev.end_step) == (150, 151, 152)
    assert ev.delta_loss == 1.0  # 3.0 - 2.0, exactly
    assert ev.reference_loss == 2.0
    assert ev.peak_loss == 3.0
    assert ev.recovery_steps == 2  # step 153 is back at 2.0
    assert ev.magnitude == pytest.approx(math.log(1.5) / 1e-3)  # scale floored at 0.1 %
    assert ev.grad_norm_z is None and ev.lr is None and ev.nearest_hotswap is None
    assert ev.n_flagged == 3 and not ev.open


def test_steps_not_records_in_reported_distances():
    df = _flat_bump(step0=1000, stride=10)
    (ev,) = S.detect(df)
    assert (ev.start_step, ev.peak_step, ev.end_step) == (2500, 2510, 2520)
    assert ev.recovery_steps == 20
    assert ev.delta_loss == 1.0


def test_two_bumps_and_fields():
    df = _flat_bump(n=600)
    df.loc[400, "loss"] = 2.2
    df["lr"] = 1e-3
    evs = S.detect(df, hotswaps=[420])
    assert [(e.start_step, e.peak_step, e.end_step) for e in evs] == [(150, 151, 152), (400, 400, 400)]
    assert evs[1].delta_loss == pytest.approx(0.2, abs=1e-12)
    assert evs[1].lr == 1e-3 and evs[1].nearest_hotswap == 420
    assert evs[0].nearest_hotswap == 420


def test_open_event_at_end_of_log():
    df = _flat_bump(n=200, at=198, bump=(3.0, 3.0))
    (ev,) = S.detect(df)
    assert ev.open and ev.recovery_steps is None and ev.end_step == 199


# --------------------------------------------------------------------------- negative controls


def _run_of(kind_shape, seed=5, n_steps=3000):
    runs = B.synthetic_runs(seed, 14, n_steps)
    return [r for r in runs if (r.kind, r.shape) == kind_shape]


def test_warmup_gives_no_events():
    runs = _run_of(("control", "warmup"))
    assert len(runs) == 2 and ("lr" in runs[0].df) != ("lr" in runs[1].df)  # with and without lr
    for run in runs:
        assert S.detect(run.df) == [], run.name
    # a handmade steep warm-up from ln(32000) with 2 % noise, no lr column
    rng = np.random.default_rng(1)
    t = np.arange(1, 2001)
    loss = 2.5 + 8 * (1 + (np.minimum(t, 200) ** 2 / 400 + np.maximum(t - 200, 0)) / 30) ** -0.6
    df = pd.DataFrame({"step": t, "loss": loss * np.exp(0.02 * rng.normal(size=t.size))})
    assert S.detect(df) == []


def test_hotswap_level_shifts_give_no_events():
    for shape in ("hotswap_up", "hotswap_down", "levelshift"):
        (run,) = _run_of(("control", shape))
        assert run.hotswaps
        assert S.detect(run.df) == [], run.name
    # handmade: +8 % level shift (16 noise units) at a corpus change
    rng = np.random.default_rng(2)
    n = 1200
    y = np.log(3.0) + 0.005 * rng.normal(size=n)
    y[600:] += 0.08
    df = pd.DataFrame({"step": np.arange(n), "loss": np.exp(y), "corpus": ["a"] * 600 + ["b"] * 600})
    assert S.hotswap_steps(df) == [600]
    assert S.detect(df) == []
    plain = df.drop(columns="corpus")
    assert S.detect(plain, hotswaps=[600]) == []
    assert S.detect(plain) == []  # unannounced: recognised as a persistent level shift


def test_cli_hotswap_flag_and_notes(tmp_path, capsys):
    rng = np.random.default_rng(3)
    n = 1200
    y = np.log(3.0) + 0.005 * rng.normal(size=n)
    y[700:] += 0.05
    y[900] += 0.1  # a 20-sigma spike after the swap
    p = tmp_path / "run" / "steps.jsonl"
    p.parent.mkdir()
    _write_jsonl(p, pd.DataFrame({"step": np.arange(n), "loss": np.exp(y), "lr": 1e-3, "skipped": np.arange(n) == 900}))
    assert S.main(["detect", str(p.parent), "--hotswap", "700", "--warmup", "50"]) == 0  # a run dir with one JSONL
    out = capsys.readouterr().out
    assert "hot-swaps (reference restarted): 700" in out and "armed from step 50" in out
    (ev,) = S.detect(S.load_log(p), hotswaps=[700], warmup=50)
    assert (ev.start_step, ev.peak_step, ev.nearest_hotswap, ev.n_skipped) == (900, 900, 700, 1)
    assert S.main(["detect", str(p), "--json", "--hotswap", "700", "--hotswap", "701"]) == 0
    assert [e["start_step"] for e in json.loads(capsys.readouterr().out)] == [900]


def test_schedule_kinks_give_no_events():
    for shape in ("wsd", "rewarm"):
        (run,) = _run_of(("control", shape))
        assert S.detect(run.df) == [], run.name


# --------------------------------------------------------------------------- loading and CLI


def _write_jsonl(path, df, extra=()):
    with open(path, "w") as fh:
        fh.write(json.dumps({"config": {"lr": 3e-4}}) + "\n")  # a non-step record is skipped
        for rec in df.to_dict("records"):
            fh.write(json.dumps({k: (int(v) if k == "step" else v) for k, v in rec.items()}) + "\n")
        for rec in extra:
            fh.write(json.dumps(rec) + "\n")


def _write_tb(logdir, df):
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(log_dir=str(logdir))
    for rec in df.to_dict("records"):
        step = int(rec["step"])
        w.add_scalar("train/loss", rec["loss"], step)
        w.add_scalar("train/grad_norm", rec["grad_norm"], step)
        w.add_scalar("train/lr", rec["lr"], step)
        w.add_scalar("val/loss", 9.0, step)  # never mistaken for the training loss
    w.close()


def test_cli_jsonl_and_tensorboard_agree(tmp_path, capsys):
    df = _noisy()
    df["loss"] = df["loss"].astype(np.float32).astype(float)  # TensorBoard stores float32
    df["grad_norm"] = df["grad_norm"].astype(np.float32).astype(float)
    jl = tmp_path / "steps.jsonl"
    _write_jsonl(jl, df, extra=[{"step": 5, "val_loss": 1.0}])
    tb = tmp_path / "tb"
    _write_tb(tb, df)

    assert S.main(["detect", str(jl), "--json"]) == 0
    from_jsonl = json.loads(capsys.readouterr().out)
    assert S.main(["detect", str(tb), "--json"]) == 0
    from_tb = json.loads(capsys.readouterr().out)
    assert S.load_log(tmp_path).attrs["source"] == str(jl)  # a run dir: its JSONL log first
    (tmp_path / "other.jsonl").write_text("")
    via_tb = S.load_log(tmp_path)  # several JSONL files: the TensorBoard run below
    assert via_tb.attrs["source"] == str(tmp_path) and len(via_tb) == len(df)
    assert [(e["start_step"], e["peak_step"]) for e in from_jsonl] == [(601, 601), (1101, 1101)]
    assert len(from_tb) == len(from_jsonl)
    for a, b in zip(from_jsonl, from_tb):
        for k in ("start_step", "peak_step", "end_step", "recovery_steps", "nearest_hotswap"):
            assert a[k] == b[k], k
        for k in ("magnitude", "delta_loss", "grad_norm_z", "lr"):
            assert a[k] == pytest.approx(b[k], rel=1e-5), k

    assert S.main(["detect", str(tb)]) == 0
    table = capsys.readouterr().out
    assert "start" in table and "1101" in table and "2 spike(s)" in table

    out = subprocess.run(
        [sys.executable, "-m", "warmstart.spikes", "detect", str(jl), "--json", "--method", "olmo2"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert isinstance(json.loads(out.stdout), list)


def test_load_log_resume_duplicates_aliases_and_corpus(tmp_path):
    p = tmp_path / "log.jsonl"
    recs = [{"global_step": s, "train_loss": 3.0 - s / 100, "learning_rate": 1e-3, "corpus": "c1"} for s in range(10)]
    recs += [{"global_step": s, "train_loss": 9.0, "learning_rate": 1e-3} for s in (7, 8)]  # a resume
    recs += [{"global_step": 10, "train_loss": "2.5", "corpus": "c2"}, {"global_step": 11, "train_loss": 2.4}]
    p.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    df = S.load_log(p)
    assert df["step"].tolist() == list(range(12))
    assert df.loc[7, "loss"] == 9.0 and df.loc[8, "loss"] == 9.0 and df.loc[10, "loss"] == 2.5
    assert df["corpus"].tolist()[-2:] == ["c2", "c2"]
    assert S.hotswap_steps(df) == [10]
    assert df["step"].dtype == np.int64 and df["loss"].dtype == np.float64


def test_nonfinite_losses_dropped_with_warning(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_text(
        '{"step": 1, "loss": 2.0}\n{"step": 2, "loss": NaN}\n{"step": 3, "loss": null}\n{"step": 4, "loss": 1.9}\n'
    )
    with pytest.warns(UserWarning, match=r"non-finite loss at step\(s\) \[2, 3\]"):
        df = S.load_log(p)
    assert df["step"].tolist() == [1, 4]


@pytest.mark.parametrize(
    "content, match",
    [
        ('{"step": 1, "loss": "abc"}\n', r"log\.jsonl:1: `loss` is not a number: 'abc'"),
        ('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": true}\n', r":2: `loss` is not a number: True"),
        ('{"step": 1.5, "loss": 2.0}\n', r"`step` must be an integer step"),
        ('{"step": 1, "val_loss": 2.0}\n', r"no `loss` column"),
        ('{"epoch": 1, "loss": 2.0}\n', r"no `step` column"),
        ('{"step": 1, "loss": 2.0}\nnot json\n', r"log\.jsonl:2: not valid JSON"),
        ("", r"no JSON records"),
    ],
)
def test_bad_jsonl_errors_name_the_problem(tmp_path, content, match):
    p = tmp_path / "log.jsonl"
    p.write_text(content)
    with pytest.raises(S.SpikeLogError, match=match):
        S.load_log(p)


def test_other_bad_inputs(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="spike log not found: .*nope.jsonl"):
        S.load_log(tmp_path / "nope.jsonl")
    with pytest.raises(S.SpikeLogError, match="no `loss` column"):
        S.detect(pd.DataFrame({"step": [1, 2], "value": [1.0, 2.0]}))
    with pytest.raises(S.SpikeLogError, match="`loss` is not numeric"):
        S.detect(pd.DataFrame({"step": [1, 2], "loss": ["a", "b"]}))
    with pytest.raises(ValueError, match="unknown method 'bogus'"):
        S.detect(_flat_bump(), method="bogus")
    with pytest.raises(TypeError, match="unknown robust parameter.*z_entr"):
        S.detect(_flat_bump(), z_entr=3)
    with pytest.raises(ValueError, match="z_exit .* must be < z_enter"):
        S.detect(_flat_bump(), z_enter=1.0)
    with pytest.raises(ValueError, match="mad is a global rule"):
        S.OnlineDetector("mad")
    empty = tmp_path / "empty_tb"
    empty.mkdir()
    with pytest.raises(S.SpikeLogError, match="no TensorBoard event files"):
        S.load_log(empty)
    with pytest.warns(UserWarning, match=r"non-finite loss at step\(s\) \[1\]"):
        assert S.detect(pd.DataFrame({"step": [0, 1, 2], "loss": [1.0, np.inf, 1.0]})) == []
    assert S.main(["detect", str(tmp_path / "missing.jsonl")]) == 2
    assert "spike log not found" in capsys.readouterr().err


def test_tensorboard_without_loss_tag_lists_tags(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(log_dir=str(tmp_path))
    for s in range(3):
        w.add_scalar("eval/accuracy", 0.5, s)
    w.close()
    with pytest.raises(S.SpikeLogError, match="no loss scalar.*eval/accuracy"):
        S.load_log(tmp_path)


def test_nonpositive_losses_fall_back_to_raw_scale():
    df = _flat_bump()
    df["loss"] -= 2.5  # values around -0.5
    with pytest.warns(UserWarning, match="raw loss"):
        (ev,) = S.detect(df)
    assert (ev.start_step, ev.peak_step, ev.end_step) == (150, 151, 152)
    assert ev.delta_loss == pytest.approx(1.0)


# --------------------------------------------------------------------------- methods and spike score


def test_alternative_methods_find_a_big_spike():
    df = _noisy(n=1500, spikes=((1200, 0.3),))
    for method in S.METHODS:
        evs = S.detect(df, method)
        assert any(abs(e.peak_step - 1200) <= 1 for e in evs), method
        assert all(e.method == method for e in evs)
    evs = S.detect(df, "zclip", signal="either", z_thresh=3.0)
    assert any(abs(e.peak_step - 1200) <= 1 for e in evs)


def test_spike_score_olmo2_definition():
    rng = np.random.default_rng(0)
    v = 3.0 + 0.01 * rng.normal(size=2000)
    v[1500] += 1.0  # one 100-sigma spike
    g = 1.0 + 0.05 * rng.normal(size=2000)
    df = pd.DataFrame({"step": np.arange(2000), "loss": v, "grad_norm": g})
    score = S.spike_score(df)
    assert score["loss"] == pytest.approx(100 / 1000)  # 1 of the 1000 records with a full window
    assert score["grad_norm"] == 0.0
    assert S.spike_score(df.iloc[:500]) == {"loss": None, "grad_norm": None}
    assert S.spike_score(df.iloc[:500].drop(columns="grad_norm"), min_periods=100)["loss"] == 0.0


# --------------------------------------------------------------------------- benchmark goals


def test_benchmark_meets_goals_on_fixed_seed():
    """Default method on a seed never used for tuning (tuned on seed 0)."""
    runs = B.synthetic_runs(seed=7, n_runs=56, n_steps=4000)
    evs = [S.detect(r.df) for r in runs]
    m = B.evaluate(runs, evs)
    n_big = sum(s["height"] >= 8 for r in runs for s in r.spikes)
    assert n_big >= 40 and m["clean_steps"] >= 100_000
    assert m["recall_ge8"] >= B.GOALS["recall_ge8"], m["missed_ge8"]
    assert m["precision"] >= B.GOALS["precision"]
    assert m["fa_per_10k"] <= B.GOALS["fa_per_10k"]
    assert all(B.meets_goals(m).values())
    table = B.benchmark(runs=runs[:14], methods=["robust", "olmo2"])
    assert list(table.index) == ["robust", "olmo2"]
    md = B.bench_markdown(table)
    assert "| robust |" in md and "seed=" in md


def test_synthetic_runs_are_deterministic_and_labelled():
    a, b = B.synthetic_runs(3, 14, 3000), B.synthetic_runs(3, 14, 3000)
    assert all(x.df.equals(y.df) and x.spikes == y.spikes for x, y in zip(a, b))
    kinds = {(r.kind, r.shape) for r in a}
    assert {
        ("control", "warmup"),
        ("control", "wsd"),
        ("control", "hotswap_up"),
        ("control", "hotswap_down"),
        ("spikes", "power"),
        ("spikes", "plateau"),
    } <= kinds
    for r in a:
        for s in r.spikes:
            assert 4 <= s["height"] <= 12 and 1 <= s["width"] <= 50 and s["onset"] <= s["peak"]
        if r.kind == "control":
            assert not r.spikes
    assert sum(len(r.spikes) for r in a) >= 20


# --------------------------------------------------------------------------- online form


def _feed(det, df, start=0, stop=None):
    out = []
    has_g = "grad_norm" in df
    for rec in df.iloc[start:stop].itertuples(index=False):
        out.append(
            det.update(rec.step, rec.loss, rec.grad_norm if has_g else None, corpus=getattr(rec, "corpus", None))
        )
    return out


def _onsets(steps, flags):
    return [int(s) for s, f, p in zip(steps, flags, [False] + list(flags[:-1])) if f and not p]


def test_online_agrees_with_offline():
    runs = [r for r in B.synthetic_runs(11, 14, 3000) if r.kind == "spikes"]
    n_events = 0
    for run in runs:
        df = run.df
        warm = S.resolve_warmup(df) - int(df["step"].iloc[0])
        offline = S.detect(df)
        det = S.OnlineDetector(warmup=warm)
        flags = _feed(det, df)
        onsets = _onsets(df["step"], flags)
        starts = [e.start_step for e in offline]
        n_events += len(starts)
        for s in starts:  # every offline spike fires online at its start (or one record later)
            assert any(0 <= o - s <= 1 for o in onsets), (run.name, s, onsets)
        for o in onsets:  # and every online firing belongs to an offline spike
            assert any(e.start_step <= o <= e.end_step + 1 for e in offline), (run.name, o)
        online = det.events + ([] if not det.in_spike else [None])
        assert len(online) == len(offline)
        for a, b in zip(det.events, offline):
            assert (a["start_step"], a["peak_step"], a["end_step"]) == (b.start_step, b.peak_step, b.end_step)
    assert n_events >= 20


def test_online_state_round_trips_through_json():
    (run,) = [r for r in B.synthetic_runs(4, 14, 3000) if r.shape == "wsd" and r.kind == "spikes"]
    df = run.df
    assert "corpus" in df and run.spikes
    whole = S.OnlineDetector(warmup=200)
    ref = _feed(whole, df)
    for cut in (250, 1777, run.spikes[0]["onset"] + 1):  # the last cut lands inside a spike
        first = S.OnlineDetector(warmup=200)
        a = _feed(first, df, 0, cut)
        state = json.loads(json.dumps(first.state_dict()))
        resumed = S.OnlineDetector(warmup=200)
        resumed.load_state_dict(state)
        b = _feed(resumed, df, cut)
        assert a + b == ref
        assert resumed.events == whole.events and resumed.level_shifts == whole.level_shifts
    with pytest.raises(ValueError, match="saved with parameters"):
        S.OnlineDetector(warmup=200, z_enter=6.0).load_state_dict(state)


@pytest.mark.parametrize("method", ["olmo2", "zclip"])
def test_online_alternatives_round_trip(method):
    df = _noisy(n=1500, spikes=((1200, 0.3),))
    whole = S.OnlineDetector(method)
    ref = _feed(whole, df)
    assert any(ref[1199:1201])
    first = S.OnlineDetector(method)
    a = _feed(first, df, 0, 700)
    resumed = S.OnlineDetector(method)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert a + _feed(resumed, df, 700) == ref


def test_online_nan_and_hotswap():
    det = S.OnlineDetector()
    for s in range(300):
        assert det.update(s, 2.0 + 0.01 * math.sin(s), corpus="a") is False
    assert det.update(300, float("nan")) is True
    assert det.update(301, 2.6, corpus="b") is False  # a hot-swap restarts the windows: no reference yet
    assert det.update(302, 2.6, corpus="b") is False


# --------------------------------------------------------------------------- the spikes stage


def _study_run(d, seed, spike_at=None, level_shift=0.0):
    """A two-phase trainer-style run: log.jsonl (global steps) + run.json, phase 2 starts at step 201."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True)
    recs = []
    for k in range(1, 401):
        phase = "phase1" if k <= 200 else "phase2"
        lvl = 4.0 * (1 + k / 50) ** -0.3 + (level_shift if k > 200 else 0.0)
        loss = lvl * math.exp(0.01 * rng.normal()) * (1.5 if spike_at and spike_at <= k < spike_at + 3 else 1.0)
        recs.append(
            {
                "step": k,
                "phase": phase,
                "loss": loss,
                "lr": 1e-3 if k > 10 else 1e-4 * k,
                "grad_norm": 1.0 + 0.05 * rng.normal(),
                "update_cos": 0.1,
                "corpus": "t",
                "skipped": False,
            }
        )
    (d / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (d / "run.json").write_text(
        json.dumps(
            {
                "name": d.name,
                "kind": "x",
                "checkpoints": [{"step": 200}, {"step": 400}],
                "phases": [
                    {"name": "phase1", "start_step": 1, "steps": 200},
                    {"name": "phase2", "start_step": 201, "steps": 200},
                ],
            }
        )
    )


def test_spikes_stage_on_a_small_study(tmp_path, monkeypatch):
    from pathlib import Path

    from warmstart.config import load_params

    root = Path(__file__).resolve().parents[1]
    _study_run(tmp_path / "data/logs/scratch", 0, spike_at=300, level_shift=0.5)  # a phase jump and one spike
    _study_run(tmp_path / "data/logs/base", 1)
    monkeypatch.chdir(tmp_path)
    params = load_params(root / "params.yaml", overrides={"shared": {"data_dir": "data", "reports_dir": "reports"}})
    stage = S.run_stage(params, show=False)
    ev = stage["events"]
    assert list(ev["run"]) == ["scratch"] and ev["start_step"].iloc[0] == 300 and ev["end_step"].iloc[0] == 302
    assert stage["results"]["scratch"]["boundaries"] == [201]  # the phase boundary is known, not a spike
    assert "original: no run" in " ".join(stage["notes"])
    frag = json.loads((tmp_path / "reports/fragments/70_spikes.json").read_text())
    assert frag["numbers"]["spikes.scratch"] == 1 and frag["numbers"]["spikes.base"] == 0
    metrics = json.loads((tmp_path / "reports/spikes/spikes.json").read_text())
    assert metrics["total_spikes"] == 1 and (tmp_path / "reports/spikes/scratch.png").is_file()
    from warmstart.stages import spikes as spike_stage

    headline = spike_stage.run(params)  # the DVC stage: the same analysis, and a flat headline
    assert headline == json.loads((tmp_path / "reports/metrics/spikes.json").read_text())
    assert headline["total_spikes"] == 1 and headline["runs_with_spikes"] == 1 and headline["runs_analysed"] == 2
    # without the boundary the phase jump is a (persistent) event or a level shift: the boundary matters
    no_b = S.detect(S.load_log(tmp_path / "data/logs/scratch/log.jsonl"), **dict(params.spikes.params))
    assert [e.start_step for e in no_b] != [300] or no_b.level_shifts


def test_cli_reads_the_trainer_log_and_its_tensorboard(tmp_path, capsys):
    """The real trainer's two log formats (JSONL and TensorBoard), same records."""
    import sys as _sys
    from pathlib import Path

    _sys.path.insert(0, str(Path(__file__).parent))
    import test_train as T

    assets = T.assets.__wrapped__(type("F", (), {"mktemp": lambda self, n: (tmp_path / n).mkdir() or tmp_path / n})())
    from warmstart.train.loop import train

    train(T.make_cfg(assets, tmp_path / "run", steps=12, tensorboard=True, export_final=False))
    a = S.load_log(tmp_path / "run/log.jsonl")
    b = S.load_log(tmp_path / "run/tb")
    assert list(a["step"]) == list(b["step"]) == list(range(1, 13))
    assert np.allclose(a["loss"], b["loss"], rtol=1e-6) and np.allclose(a["grad_norm"], b["grad_norm"], rtol=1e-6)
    for src in ("run/log.jsonl", "run/tb"):
        assert S.main(["detect", str(tmp_path / src), "--json", "--warmup", "0"]) == 0
        assert json.loads(capsys.readouterr().out) == []


# --------------------------------------------------------------------------- package layout

_LAYERS = ["params", "onset", "logs", "core", "detectors", "online", "plots", "analysis", "bench", "cli", "api"]


def test_submodules_import_only_lower_layers():
    """No cycle: each submodule of ``warmstart.spikes`` imports only the ones listed before it, never the package."""
    import ast
    from pathlib import Path

    pkg = Path(S.__file__).parent
    assert sorted(p.stem for p in pkg.glob("*.py")) == sorted([*_LAYERS, "__init__", "__main__"])
    for i, name in enumerate(_LAYERS):
        used = set()
        for node in ast.walk(ast.parse((pkg / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("warmstart"):
                mods = [node.module] if node.module != "warmstart" else [f"warmstart.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            else:
                continue
            for m in mods:
                assert m != "warmstart.spikes", f"{name}.py imports the package itself"
                if m.startswith("warmstart.spikes."):
                    used.add(m.split(".")[2])
        assert used <= set(_LAYERS[:i]), f"{name}.py imports {sorted(used - set(_LAYERS[:i]))}"


def test_api_reexports_and_submodules_stay_light():
    """``api`` gathers the public names; importing the trainer's online detector loads no detector or plot code."""
    from warmstart.spikes import detectors, params

    for name in S.__all__:
        assert getattr(S, name) is not None, name
    assert S.detect is detectors.detect and S.RobustParams is params.RobustParams
    assert S.GOALS is B.GOALS and S.benchmark is B.benchmark and S.evaluate is B.evaluate
    code = (
        "import sys, warmstart.spikes.online; loaded = {m for m in sys.modules if m.startswith('warmstart.spikes.')}; "
        "assert loaded == {'warmstart.spikes.online', 'warmstart.spikes.core', 'warmstart.spikes.params'}, loaded; "
        "assert 'matplotlib' not in sys.modules and 'pandas' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_bench_runs_as_module(tmp_path):
    out_md = tmp_path / "bench.md"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "warmstart.spikes",
            "bench",
            "--n-runs",
            "14",
            "--n-steps",
            "1000",
            "--methods",
            "robust",
            "--out",
            str(out_md),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "| robust |" in out.stdout and "| olmo2 |" not in out.stdout
    assert out.stdout == out_md.read_text() + "\n"


def test_each_event_says_which_instability_signal_moved_first(tmp_path):
    """A loss spike at step 80 preceded by a log Z jump at step 76: the event's context names log_z_mean, 4 steps ahead."""
    import json as _json

    import numpy as np

    from warmstart.spikes.analysis import analyse_run

    rng = np.random.default_rng(0)
    recs = []
    for step in range(1, 121):
        loss = 3.0 + 0.01 * rng.standard_normal() + (2.0 if 80 <= step <= 82 else 0.0)
        log_z = 1.0 + 0.01 * rng.standard_normal() + (3.0 if step >= 76 else 0.0)
        recs.append(
            {
                "step": step,
                "loss": loss,
                "grad_norm": 1.0 + 0.01 * rng.standard_normal(),
                "lr": 1e-3,
                "log_z_mean": log_z,
                "log_z_max": log_z + 1,
                "attn_logit_max": [2.0, 2.0],
                "update_ratio": [1e-3, 1e-3],
            }
        )
    (tmp_path / "log.jsonl").write_text("\n".join(_json.dumps(r) for r in recs) + "\n")
    res = analyse_run(tmp_path, "robust", 0, {"level_window": 10, "min_level": 5, "window": 100, "min_scale": 20})
    starts = [e.start_step for e in res["events"]]
    assert 80 in starts
    ctx = res["context"][starts.index(80)]
    assert ctx["first_signal"] == "log_z_mean" and ctx["signal_lead_steps"] == 4 and ctx["signal_before_loss"]
    (tmp_path / "log.jsonl").write_text(
        "\n".join(_json.dumps({k: r[k] for k in ("step", "loss", "grad_norm", "lr")}) for r in recs) + "\n"
    )
    assert all(
        c is None
        for c in analyse_run(
            tmp_path, "robust", 0, {"level_window": 10, "min_level": 5, "window": 100, "min_scale": 20}
        )["context"]
    )
