"""The long-context text suite (warmstart.context.retrieval): builders at any length, determinism, one answer per
prompt, errors on short lengths, greedy exact-match scoring on hand-made generations, the aggregates."""

from __future__ import annotations

import json
import random

import pytest

from conftest import byte_bpe, model_for
from warmstart.context.retrieval import (
    TASKS,
    alfred_normalised_mean,
    build_suite,
    exact_match,
    min_lengths,
    score_generations,
    score_suite,
)

WORDS = (
    "system package kernel network file server user debian install archive mirror service daemon "
    "configure boot module printer mail shell backup security firewall update release source binary "
    "library editor desktop window process memory device driver partition volume account group"
).split()


def _texts(n: int = 40, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        sents = []
        for _ in range(rng.randint(4, 9)):
            w = [rng.choice(WORDS) for _ in range(rng.randint(6, 16))]
            sents.append(" ".join(w).capitalize() + rng.choice(".!?"))
        docs.append(" ".join(sents))
    return docs


@pytest.fixture(scope="module")
def tok():
    return byte_bpe(_texts(80, 1), 1000, ["<pad>", "</s>", "<unk>"])


def test_suite_fills_the_length_deterministically(tok):
    texts = _texts()
    for length in (768, 1536):
        suite = build_suite(texts, tok, length, 6, seed=1)
        assert suite == build_suite(texts, tok, length, 6, seed=1)
        assert suite != build_suite(texts, tok, length, 6, seed=2)
        assert [it["task"] for it in suite] == [t for t in TASKS for _ in range(6)]
        for it in suite:
            n = len(tok(it["prompt"], add_special_tokens=False)["input_ids"])
            a = len(tok(it["answer"], add_special_tokens=False)["input_ids"])
            assert n == it["prompt_tokens"] and n + a + 4 <= length  # room for the answer in the length
            assert n + a > 0.6 * length, (it["task"], n)  # filled, not just fitting
            assert it["prompt"].count(it["answer"]) == 1, it["task"]  # the answer occurs exactly once
            assert 0 < it["chance"] <= 0.5 and it["length"] == length
        depths = sorted(it["depth"] for it in suite if it["task"] == "line")
        assert all(i / 6 <= d < (i + 1) / 6 for i, d in enumerate(depths))  # spread evenly
    longer = build_suite(texts, tok, 1536, 2, seed=1, tasks=["line"])
    assert max(it["units"] for it in longer) > max(it["units"] for it in build_suite(texts, tok, 768, 2, 1, ["line"]))


def test_bad_input(tok):
    need = min_lengths(_texts(), tok)
    assert set(need) == set(TASKS) and all(n > 16 for n in need.values())
    with pytest.raises(ValueError, match="length: .* too few for a kv_uuid item"):
        build_suite(_texts(), tok, need["kv_uuid"] - 1, 1, tasks=["kv_uuid"])
    assert build_suite(_texts(), tok, need["kv_uuid"] + 8, 1, tasks=["kv_uuid"])[0]["units"] == 2  # one draw's need
    short = min(need.values())
    with pytest.warns(UserWarning, match="left out"):
        kept = build_suite(_texts(), tok, short, 1, on_short="skip")
    assert {it["task"] for it in kept} == {t for t, n in need.items() if n <= short}
    with pytest.raises(ValueError, match="tasks"):
        build_suite(_texts(), tok, 512, 1, tasks=["summary"])
    with pytest.raises(ValueError, match="texts"):
        build_suite(["too short."], tok, 512, 1)


def test_exact_match_on_hand_made_generations():
    assert exact_match(" 71432. Remember it.", "71432")
    assert exact_match("71432", "71432")
    assert not exact_match(" 714321", "71432") and not exact_match(" 7143", "71432") and not exact_match("", "71432")
    assert exact_match('"6f1c-aa"}', "6f1c-aa") and exact_match(" <24169>", "24169")
    assert exact_match(" Rsnapshot Difficult.\nUSER:", "Rsnapshot Difficult")
    assert not exact_match(" Rsnapshot", "Rsnapshot Difficult") and not exact_match(" 24169-b", "24169")
    assert not exact_match(" the pass key is 71432", "71432")  # must come first


def test_scores_of_hand_made_generations(tok):
    suite = build_suite(_texts(), tok, 768, 4, seed=0)
    right = [f" {it['answer']}." for it in suite]
    res = score_generations(suite, right)
    assert (
        all(t["acc"] == 1.0 and t["normalised"] == 1.0 for t in res["tasks"].values()) and res["normalised_mean"] == 1.0
    )
    half = [g if i % 2 else " no" for i, g in enumerate(right)]
    res = score_generations(suite, half)
    for task, t in res["tasks"].items():
        chance = sum(it["chance"] for it in suite if it["task"] == task) / 4
        assert t["acc"] == 0.5 and t["chance"] == pytest.approx(chance)
        assert t["normalised"] == pytest.approx((0.5 - chance) / (1 - chance)) and t["lo"] < 0.5 < t["hi"]
    with pytest.raises(ValueError):
        score_generations(suite, right[:-1])


def test_score_suite_runs_greedy_generation(tok):
    suite = build_suite(_texts(), tok, 768, 2, seed=0, tasks=["passkey", "line"])
    model = model_for(tok, hidden=32, layers=1, heads=2, max_pos=768)
    res = score_suite(model, tok, suite, batch_size=3)
    json.dumps(res)
    assert set(res["tasks"]) == {"passkey", "line"} and len(res["items"]) == 4
    assert all(t["n"] == 2 for t in res["tasks"].values()) and res["normalised_mean"] <= 1


def test_alfred_normalised_mean():
    table = {"ntk": {"kv@2k": 0.8, "kv@8k": 0.2, "line@8k": 0.0}, "yarn": {"kv@2k": 0.4, "kv@8k": 0.4, "line@8k": 0.0}}
    out = alfred_normalised_mean(table)
    assert out["ntk"] == pytest.approx((1.0 + 0.5) / 2) and out["yarn"] == pytest.approx((0.5 + 1.0) / 2)
