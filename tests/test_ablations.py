"""Loss-spike ablations (warmstart.stability.ablations) at a size that runs in seconds."""

from __future__ import annotations

import json

from warmstart.stability import ablations as A

SPEC = dict(hidden=16, layers=1, heads=2, kv_heads=1, intermediate=32, max_pos=32, seed=0)
TOY = dict(seq_len=32, micro_batch=4, every=10, spec=SPEC)  # every toy run's size


def _run_ablations(tmp_path, lrs, steps, **kw):
    """The ablations at toy size into ``tmp_path / "abl"``, from a base trained 20 steps, without progress lines."""
    return A.run_ablations(tmp_path / "abl", lrs=lrs, steps=steps, base_steps=20, **TOY, log=lambda m: None, **kw)


def test_toy_corpora_are_deterministic_and_disjoint():
    a, b = A.toy_corpora(0, n_docs=20), A.toy_corpora(0, n_docs=20)
    assert a == b and len(a["source"]) == len(a["target"]) == 20
    assert not set(" ".join(a["source"]).split()) & set(" ".join(a["target"]).split())


def test_ablations_end_to_end_and_resume_variants(tmp_path):
    res = _run_ablations(tmp_path, [1e-3, 3e-1], 40)
    assert [(r["init"], r["lr"]) for r in res["sweep"]] == [
        ("warm", 1e-3),
        ("scratch", 1e-3),
        ("warm", 0.3),
        ("scratch", 0.3),
    ]
    assert all(len(r["loss"]) == 40 and r["eval_loss"] > 0 for r in res["sweep"])
    paths = A.write_outputs(res, tmp_path / "abl", tmp_path / "reports")
    frag = json.loads(paths["fragment"].read_text())
    assert frag["stage"] == "ablations" and frag["order"] == 75 and paths["figure"].is_file()
    assert json.loads((tmp_path / "abl/ablations.json").read_text())["config"]["lrs"] == [1e-3, 0.3]
    # the resume variants, whether or not a run spiked: kept = an exact replay, reset / new data differ
    run = tmp_path / "abl/runs/warm-lr0.3"
    cfg = A._cfg(
        tmp_path / "x",
        {
            "files": {"target": [str(tmp_path / "abl/assets/target.jsonl")]},
            "tokenizer": str(tmp_path / "abl/assets/tok"),
        },
        "target",
        40,
        0.3,
        seed=0,
        model_path=str(tmp_path / "abl/runs/base/final"),
        **TOY,
    )
    orig = A.analyse_run(run)["loss"]
    out = {}
    for name, reset, skip in (("kept", False, 0), ("reset", True, 0), ("new", False, 40)):
        A._resume(run / "checkpoints/step0000020", tmp_path / name, cfg, reset, skip)
        out[name] = A.analyse_run(tmp_path / name)["loss"]
    assert out["kept"] == orig[20:]  # the resumed logs start after the checkpoint
    assert len(out["reset"]) == len(out["new"]) == 20 and out["reset"] != orig[20:] and out["new"] != orig[20:]


def test_induced_spike_drives_the_resume_ablation(tmp_path):
    """No natural spike at toy scale: corrupting batches 80..84 of a warm run makes one. Resumed from the
    checkpoint before it, the spike recurs with the optimizer kept (an exact replay) or reset (same data),
    and not when the resumed run skips past the corrupted stretch."""
    res = _run_ablations(tmp_path, [3e-3], 120, induce_spike=80)
    r = res["resume"]
    assert r["induced"] == {"inject_bad_batches": [80, 81, 82, 83, 84]} and r["run"] == "warm-lr0.003-induced"
    assert (r["first_spike"], r["from_step"]) == (80, 70)
    got = {v["variant"]: (v["spikes_after"], v["same_first_spike"], v["identical_to_original"]) for v in r["variants"]}
    assert got == {"kept": (1, True, True), "reset": (1, True, False), "kept, new data": (0, False, False)}
