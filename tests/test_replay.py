"""Forgetting, source replay and annealing in the evaluation (:mod:`warmstart.evaluate.replay`): exact values on
hand-made per-text losses, the choice rule, and which arms count as replay or annealing."""

from __future__ import annotations

import math

import pytest

from conftest import ROOT

LN2 = math.log(2)


def _doc_nll() -> dict:
    """Three source and three target texts of 100 bytes; losses in nats chosen so bits per byte are round."""
    b = [100, 100, 100]

    def nll(bpb: list[float]) -> list[float]:
        return [x * 100 * LN2 for x in bpb]

    rows = [
        {"run": "original", "step": 0, "bytes": 0, "source": nll([1.0, 1.2, 1.4]), "target": nll([4.0] * 3)},
        {"run": "original", "step": 10, "bytes": 9, "source": nll([1.5] * 3), "target": nll([2.0] * 3)},
        {"run": "focus", "step": 0, "bytes": 0, "source": nll([3.0, 3.2, 3.4]), "target": nll([3.0] * 3)},
        {"run": "focus", "step": 10, "bytes": 9, "source": nll([4.0, 4.2, 4.4]), "target": nll([1.8, 1.9, 2.0])},
        {"run": "replay", "step": 0, "bytes": 0, "source": nll([3.0, 3.2, 3.4]), "target": nll([3.0] * 3)},
        {"run": "replay", "step": 10, "bytes": 9, "source": nll([2.0, 2.2, 2.4]), "target": nll([1.8, 1.9, 2.0])},
    ]
    return {"bytes": {"source": b, "target": b}, "checkpoints": rows}


def test_forgetting_splits_into_the_swap_and_training_shares_exactly():
    from warmstart.evaluate.replay import forgetting

    f = forgetting(_doc_nll(), ["focus", "replay", "original"], n_boot=200)
    assert f["base_bpb"] == pytest.approx(1.2)
    focus = f["runs"]["focus"]
    assert focus["forgetting"]["diff"] == pytest.approx(3.0)  # 4.2 - 1.2
    assert focus["swap"]["diff"] == pytest.approx(2.0)  # 3.2 - 1.2
    assert focus["training"]["diff"] == pytest.approx(1.0)
    assert focus["swap"]["diff"] + focus["training"]["diff"] == pytest.approx(focus["forgetting"]["diff"])
    assert focus["forgetting"]["ci"][0] == pytest.approx(3.0) and focus["forgetting"]["distinguishable"]
    assert f["runs"]["original"]["swap"]["diff"] == 0.0  # the base model is original's step 0


def test_replay_effect_is_the_share_of_forgetting_removed_with_its_target_cost():
    from warmstart.evaluate.replay import replay_effects

    e = replay_effects(_doc_nll(), {"replay": "focus"}, n_boot=200)["replay"]
    assert e["forgetting"] == pytest.approx(1.0) and e["reference_forgetting"] == pytest.approx(3.0)
    assert e["reduction"] == pytest.approx(2 / 3)
    assert e["reduction_ci"] == pytest.approx([2 / 3, 2 / 3])  # every text removes the same share
    assert e["target_cost"]["diff"] == pytest.approx(0.0, abs=1e-12)


def test_no_base_run_means_no_forgetting():
    from warmstart.evaluate.replay import forgetting, replay_effects

    d = _doc_nll()
    d["checkpoints"] = [r for r in d["checkpoints"] if r["run"] != "original"]
    assert forgetting(d, ["focus"]) == {} and replay_effects(d, {"replay": "focus"}) == {}


@pytest.mark.parametrize(
    ("effects", "want", "meets"),
    [
        ({"a": (0.7, 0.005), "b": (0.9, 0.002)}, "a", True),  # both meet: the smaller share
        ({"a": (0.5, 0.005), "b": (0.6, 0.002)}, "b", False),  # none meets: most removed within the cost
        ({"a": (0.9, 0.02), "b": (0.95, 0.05)}, None, False),  # every cost too high
        ({"a": (0.9, 0.02), "b": (0.7, 0.009)}, "b", True),
    ],
)
def test_the_choice_is_the_smallest_share_that_meets_both_goals(effects, want, meets):
    from warmstart.evaluate.replay import choose

    eff = {a: {"reduction": r, "target_cost": {"diff": c / 2, "ci": [0.0, c]}} for a, (r, c) in effects.items()}
    got = choose(eff, {"a": 0.05, "b": 0.25})
    assert got["arm"] == want and got["meets_goal"] is meets and got["why"]


def test_the_study_arms_split_into_replay_and_annealing():
    from warmstart.config import load_params
    from warmstart.evaluate.replay import anneal_arms, replay_arms, source_share

    p = load_params(ROOT / "params.yaml")
    assert replay_arms(p) == {"replay-5": "focus", "replay-25": "focus"}
    assert anneal_arms(p) == {"anneal": "focus"}
    s = source_share(p, "replay-25")
    assert s["phases"] == {"phase2": 0.25} and s["overall"] == pytest.approx(160 * 0.25 / (40 + 160))


def test_replay_headline_fits_a_metrics_file_and_names_the_choice():
    from warmstart.evaluate.replay import choose, forgetting, headline, replay_effects

    d = _doc_nll()
    eff = replay_effects(d, {"replay": "focus"}, n_boot=200)
    rep = {
        "forgetting": forgetting(d, ["focus", "replay"], n_boot=200),
        "arms": {"replay": {**eff["replay"], "source_share": {"phases": {"phase2": 0.25}, "overall": 0.2}}},
        "choice": choose(eff, {"replay": 0.2}),
        "anneal": {},
    }
    h = headline(rep)
    assert h["replay_choice"] == "replay" and h["replay_goal_met"] is True
    assert h["forgetting_focus"] == pytest.approx(3.0) and h["replay_reduction_replay"] == pytest.approx(2 / 3)
    assert len(h) <= 12


def test_across_seeds_pairs_each_arm_with_its_reference_at_the_same_seed():
    from warmstart.evaluate.replay import across_seeds

    ck = []
    for seed, (t_ref, t_arm, s_ref, s_arm) in {1: (1.86, 1.855, 4.2, 3.0), 2: (1.87, 1.86, 4.3, 3.1)}.items():
        for run, t, so in (("focus", t_ref, s_ref), ("replay", t_arm, s_arm)):
            ck += [{"run": run, "seed": seed, "step": 0, "bpb_target": 3.0, "bpb_source": 3.2},
                   {"run": run, "seed": seed, "step": 160, "bpb_target": t, "bpb_source": so}]  # fmt: skip
    got = across_seeds({"seeds": [1, 2], "checkpoints": ck}, {"replay": "focus", "absent": "focus"})
    assert set(got) == {"replay"} and got["replay"]["seeds"] == [1, 2]
    assert got["replay"]["target"]["values"] == pytest.approx([-0.005, -0.01])
    assert got["replay"]["source"]["mean"] == pytest.approx(-1.2) and got["replay"]["source"]["std"] == pytest.approx(0)
    assert across_seeds(None, {"replay": "focus"}) == {}
