"""The evaluate stage on handmade inputs: exact cloze items, hand-computed bits per byte, probes, the stage."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import SPECIALS, TINY_LLAMA, byte_bpe, model_for
from conftest import WORDS_EN as EN
from conftest import WORDS_NB as NB
from warmstart.bpb import bits_per_byte
from warmstart.evaluate.probes import (
    EvalError,
    build_cloze_items,
    cloze_accuracy,
    mask_positions,
    masked_token_accuracy,
    split_paragraph,
    translation_pairs,
    translation_prompt,
)
from warmstart.evaluate.runs import load_run, select_checkpoints
from warmstart.evaluate.tables import bytes_to_reach, speedup
from warmstart.model import save_model


def make_tokenizer(texts, vocab_size=300, mask=True):
    """A byte-level BPE; with vocab_size = 256 + specials it has no merges (one token per byte)."""
    return byte_bpe(texts, vocab_size, SPECIALS if mask else SPECIALS[:4])


def tiny_model(tok, seed=0):
    return model_for(tok, **TINY_LLAMA, max_pos=256, seed=seed)


def sentences(words, n, seed):
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(12, 30))) for _ in range(n)]


# ---------------------------------------------------------------- cloze items


def test_split_paragraph_whole_words():
    assert split_paragraph("aa bb cc dd ee", 5, 5) == ("aa bb", "cc dd")
    assert split_paragraph("aa  bb\ncc dd ee", 6, 2) == ("aa bb", "cc")  # whitespace normalised first
    assert split_paragraph("aa bb", 5, 5) is None  # nothing left for the ending
    assert split_paragraph("aaaaaaa bb", 5, 5) is None  # first word longer than the context


CORPUS = [
    {"id": "a1", "doc": "A", "text": "one two three four five six"},
    {"id": "a2", "doc": "A", "text": "short"},  # not eligible: no ending
    {"id": "b1", "doc": "B", "text": "alpha beta gamma delta epsilon"},
    {"id": "c1", "doc": "C", "text": "red green blue cyan magenta"},
    {"id": "d1", "doc": "D", "text": "north south east west up down"},
]


def test_cloze_items_exact_on_handmade_corpus():
    items = build_cloze_items(CORPUS, n_items=10, context_chars=9, ending_chars=11, seed=0)
    # 4 documents, one eligible paragraph each: the 3 distractors are forced (the other documents' endings,
    # in corpus order) and the true ending sits at index % 4.
    endings = ["three four", "beta gamma", "blue cyan", "south east"]
    assert items == [
        {"id": "a1", "doc": "A", "context": "one two", "endings": endings, "label": 0},
        {"id": "b1", "doc": "B", "context": "alpha", "endings": endings, "label": 1},
        {"id": "c1", "doc": "C", "context": "red green", "endings": endings, "label": 2},
        {"id": "d1", "doc": "D", "context": "north", "endings": endings, "label": 3},
    ]
    assert [it["endings"][it["label"]] for it in items] == endings


def test_cloze_items_sampled_are_seeded_and_distractors_from_other_documents():
    recs = [
        {"id": f"{d}{i}", "doc": d, "text": f"{d} {i} " + " ".join(EN[(i + j) % len(EN)] for j in range(12))}
        for d in "ABCDEF"
        for i in range(5)
    ]
    a = build_cloze_items(recs, n_items=7, context_chars=20, ending_chars=20, seed=3)
    assert a == build_cloze_items(recs, n_items=7, context_chars=20, ending_chars=20, seed=3)
    assert a != build_cloze_items(recs, n_items=7, context_chars=20, ending_chars=20, seed=4)
    assert len(a) == 7 and [it["label"] for it in a] == [0, 1, 2, 3, 0, 1, 2]
    by_ending = {split_paragraph(r["text"], 20, 20)[1]: r["doc"] for r in recs}
    for it in a:
        assert len(set(it["endings"])) == 4
        others = [e for k, e in enumerate(it["endings"]) if k != it["label"]]
        assert all(by_ending[e] != it["doc"] for e in others)


def test_cloze_items_bad_input_messages():
    with pytest.raises(EvalError, match="at least 2 documents"):
        build_cloze_items([r for r in CORPUS if r["doc"] == "A"], 5, 9, 11, 0)
    with pytest.raises(EvalError, match="no paragraph is long enough"):
        build_cloze_items(CORPUS, 5, context_chars=2, ending_chars=11, seed=0)
    with pytest.raises(EvalError, match="only 2 distinct endings"):
        build_cloze_items(CORPUS[:4], 5, 9, 11, 0)
    with pytest.raises(EvalError, match="needs 'doc' and 'text'"):
        build_cloze_items([{"text": "a b c"}], 5, 9, 11, 0)
    with pytest.raises(EvalError, match="n_items must be >= 1"):
        build_cloze_items(CORPUS, 0, 9, 11, 0)


# ---------------------------------------------------------------- bits per byte by hand


def test_bits_per_byte_uniform_model_equals_log2_vocab():
    """No merges: one token per UTF-8 byte; zero LM head: uniform logits. bpb = log2(V) exactly."""
    texts = ["abc", "hé"]  # 3 + 3 bytes ("é" is two bytes)
    tok = make_tokenizer(["abc hé"], vocab_size=256 + 5)
    assert len(tok) == 261 and tok("hé", add_special_tokens=False)["input_ids"].__len__() == 3
    model = tiny_model(tok)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    r = bits_per_byte(model, tok, texts, seq_len=8, batch_size=2)
    assert r["bytes"] == 6 and r["tokens"] == 6
    assert r["bits_per_byte"] == pytest.approx(math.log2(261), rel=1e-6)


def test_bits_per_byte_equals_hand_sum_of_log_probs():
    tok = make_tokenizer(sentences(EN, 50, 0))
    model = tiny_model(tok, seed=1).eval()
    text = "the cat sat on a mat"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    x = torch.tensor([[tok.eos_token_id, *ids]])
    with torch.no_grad():
        logp = torch.log_softmax(model(x).logits[0].double(), -1)
    nats = -sum(float(logp[i, t]) for i, t in enumerate(ids))
    hand = nats / math.log(2) / len(text.encode())
    assert bits_per_byte(model, tok, [text], seq_len=64)["bits_per_byte"] == pytest.approx(hand, rel=1e-5)


def test_bits_per_byte_keeps_each_texts_loss_and_the_same_total():
    """Per-text NLL sums to the total, which is summed exactly as cross_entropy(reduction="sum") per batch."""
    import torch.nn.functional as F

    tok = make_tokenizer(sentences(EN, 50, 0))
    model = tiny_model(tok, seed=1).eval()
    texts = sentences(EN, 7, 3) + [""] + sentences(NB, 3, 4)
    r = bits_per_byte(model, tok, texts, seq_len=16, batch_size=3)
    assert len(r["doc_nll_nats"]) == len(r["doc_bytes"]) == 10  # the empty text is not a document
    assert r["doc_bytes"] == [len(t.encode()) for t in texts if t]
    assert sum(r["doc_nll_nats"]) == pytest.approx(r["nll_nats"], rel=1e-6)
    assert r["bits_per_byte"] == pytest.approx(sum(r["doc_nll_nats"]) / math.log(2) / sum(r["doc_bytes"]), rel=1e-6)
    # each text alone gives its own entry
    alone = bits_per_byte(model, tok, [texts[2]], seq_len=16)
    assert alone["doc_nll_nats"][0] == pytest.approx(r["doc_nll_nats"][2], rel=1e-5)
    # the total is bit-for-bit what the previous implementation (cross_entropy, sum per batch) summed
    from warmstart.bpb import _windows

    windows, _ = _windows(texts, tok, 16)
    windows.sort(key=lambda w: len(w[0]))
    total = 0.0
    with torch.no_grad():
        for b in range(0, len(windows), 3):
            chunk = windows[b : b + 3]
            width = max(len(w[0]) for w in chunk)
            inp, tgt = torch.zeros(len(chunk), width, dtype=torch.long), torch.full((len(chunk), width), -100)
            att = torch.zeros(len(chunk), width, dtype=torch.long)
            for i, (x, y, _) in enumerate(chunk):
                inp[i, : len(x)], tgt[i, : len(y)], att[i, : len(x)] = torch.tensor(x), torch.tensor(y), 1
            logits = model(input_ids=inp, attention_mask=att).logits.float()
            total += float(F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), ignore_index=-100, reduction="sum"))
    assert r["nll_nats"] == total


# ---------------------------------------------------------------- cloze through lm-eval


def test_cloze_accuracy_through_lm_eval_matches_direct_scoring():
    tok = make_tokenizer(sentences(EN, 50, 0) + sentences(NB, 50, 1))
    model = tiny_model(tok, seed=2).eval()
    recs = [{"id": f"{d}{i}", "doc": d, "text": t} for d in "ABCD" for i, t in enumerate(sentences(EN, 3, ord(d)))]
    items = build_cloze_items(recs, n_items=8, context_chars=40, ending_chars=25, seed=0)
    got = cloze_accuracy(model, tok, items, batch_size=4)

    def ll(ctx, cont):  # lm-eval's encoding: whole string, then split at the context's length
        c = tok(ctx, add_special_tokens=False)["input_ids"]
        w = tok(ctx + cont, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([w])).logits[0].double(), -1)
        return sum(float(logp[i - 1, w[i]]) for i in range(len(c), len(w)))

    acc = acc_norm = 0
    for it in items:
        lls = [ll("</s>" + it["context"], " " + e) for e in it["endings"]]
        acc += max(range(4), key=lambda k: lls[k]) == it["label"]
        acc_norm += max(range(4), key=lambda k: lls[k] / len(it["endings"][k])) == it["label"]
    assert got["items"] == 8
    assert got["acc"] == pytest.approx(acc / 8) and got["acc_norm"] == pytest.approx(acc_norm / 8)


def test_cloze_accuracy_needs_items():
    with pytest.raises(EvalError, match="at least one item"):
        cloze_accuracy(None, None, [])


# ---------------------------------------------------------------- translation


def test_translation_prompt_is_normistrals():
    assert translation_prompt("Hello there", "en-US", "nb-NO") == "Engelsk: Hello there\nBokmål:"
    assert translation_prompt("Hi", "en-US", "cs-CZ") == "Angličtina: Hi\nČeština:"
    assert translation_prompt("Hi", "en-US", "xx-YY") == "English: Hi\nxx-YY:"


def test_translation_pairs_align_by_doc_page_and_count():
    src = [
        {"doc": "d1", "page": "p1", "text": "One."},
        {"doc": "d1", "page": "p1", "text": "Two  words."},
        {"doc": "d1", "page": "p2", "text": "Three."},
        {"doc": "d1", "page": "p2", "text": "Four."},
        {"doc": "d2", "page": "p1", "text": "A very long source paragraph indeed."},
        {"doc": "d3", "page": "p1", "text": "Same."},
        {"doc": "d3", "page": "p1", "text": "Six."},
    ]
    tgt = [
        {"doc": "d1", "page": "p1", "text": "En."},
        {"doc": "d1", "page": "p1", "text": "To ord."},
        {"doc": "d1", "page": "p2", "text": "Tre."},  # p2 lost a paragraph in the target: skipped
        {"doc": "d2", "page": "p1", "text": "Lang."},
        {"doc": "d3", "page": "p1", "text": "Same."},
        {"doc": "d3", "page": "p1", "text": "Seks."},
    ]
    got = translation_pairs(src, tgt, n=10, max_chars=20)
    assert [(p["doc"], p["page"], p["source"], p["reference"]) for p in got] == [
        ("d1", "p1", "One.", "En."),
        ("d1", "p1", "Two words.", "To ord."),
        ("d3", "p1", "Six.", "Seks."),
    ]  # (d2: too long; d3 "Same.": untranslated, skipped)
    assert len(translation_pairs(src, tgt, n=1, max_chars=20)) == 1
    with pytest.raises(EvalError, match="n must be >= 0"):
        translation_pairs(src, tgt, n=-1, max_chars=20)


# ---------------------------------------------------------------- masked probe


def test_mask_positions_never_mask_the_context_token():
    for seed in range(20):
        pos = mask_positions(10, 0.15, seed)
        assert pos and 0 not in pos and all(1 <= p < 10 for p in pos)
    assert mask_positions(1, 0.5, 0) == []
    assert mask_positions(5, 0.15, 7) == mask_positions(5, 0.15, 7)


def test_masked_probe_matches_bidirectional_hand_computation():
    tok = make_tokenizer(sentences(EN, 50, 0))
    model = tiny_model(tok, seed=3).eval()
    texts = ["the cat sat on a mat", "a dog ran far away from home"]
    got = masked_token_accuracy(model, tok, texts, n_items=2, seq_len=64, mask_prob=0.3, seed=5)
    correct = total = 0
    for k, t in enumerate(texts):
        ids = [tok.eos_token_id, *tok(t, add_special_tokens=False)["input_ids"]]
        pos = mask_positions(len(ids), 0.3, 5 + k)
        x = torch.tensor([[tok.mask_token_id if i in pos else v for i, v in enumerate(ids)]])
        full = torch.ones(1, 1, len(ids), len(ids), dtype=torch.bool)  # every token sees every token
        with torch.no_grad():
            logits = model(input_ids=x, attention_mask=full).logits[0]
        correct += sum(int(logits[p - 1].argmax()) == ids[p] for p in pos)
        total += len(pos)
    from warmstart.evaluate.intervals import wilson

    assert got == {
        "masked_acc": correct / total,
        "masked_tokens": total,
        "items": 2,
        "masked_acc_ci": list(wilson(correct, total)),
    }


def test_masked_probe_needs_a_mask_token():
    tok = make_tokenizer(sentences(EN, 20, 0), mask=False)
    with pytest.raises(EvalError, match="mask token"):
        masked_token_accuracy(tiny_model(tok), tok, ["the cat"], 1, 16)


# ---------------------------------------------------------------- speed-up


def test_speedup_exact():
    scratch = pd.DataFrame({"bytes": [0, 100, 200], "bpb": [8.0, 6.0, 4.0]})
    run = pd.DataFrame({"bytes": [0, 50, 100], "bpb": [5.0, 4.5, 3.0]})
    assert bytes_to_reach(run, 4.0) == pytest.approx(50 + 0.5 / 1.5 * 50)
    assert speedup(run, scratch) == pytest.approx(3.0)
    assert speedup(pd.DataFrame({"bytes": [0, 10], "bpb": [3.5, 3.0]}), scratch) == math.inf
    assert speedup(pd.DataFrame({"bytes": [0, 10], "bpb": [9.0, 5.0]}), scratch) is None
    assert speedup(scratch, scratch) == pytest.approx(1.0)


# ---------------------------------------------------------------- the stage on a tiny study


def make_study(tmp: Path, with_masked: bool = False) -> dict:
    """A tiny study under ``tmp``: corpus test splits, two runs with checkpoints and logs, swap metrics.

    Returns the params overrides that point the stage at it.
    """
    from warmstart.io import write_json, write_jsonl

    data, reports = tmp / "data", tmp / "reports"
    docs = {"en-US": EN, "nb-NO": NB}
    for lang, words in docs.items():
        recs = []
        for d in range(4):
            for pg in range(2):
                for i, t in enumerate(sentences(words, 2, 100 * d + 10 * pg)):
                    recs.append(
                        {"id": f"{d}-{pg}-{i}", "doc": f"ch{d}", "page": f"p{pg}", "lang": lang, "kind": "p", "text": t}
                    )
        write_jsonl(data / "corpus" / lang / "test.jsonl", recs)
    tok = make_tokenizer(sentences(EN, 80, 0) + sentences(NB, 80, 1))
    tok.save_pretrained(tmp / "tok")
    for name, method in (("scratch", None), ("random", "random")):
        rd, rec = data / "runs" / name, data / "logs" / name
        ckpts = []
        for k, step in enumerate((0, 4, 8)):
            path = rd / "checkpoints" / f"step{step:07d}"
            save_model(tiny_model(tok, seed=10 * k + (method is None)), tok, path)
            ckpts.append(
                {
                    "step": step,
                    "phase": "init" if step == 0 else ("phase1" if step <= 4 else "phase2"),
                    "tokens": step * 64,
                    "bytes": step * 250 + (0 if method else 0),
                    "path": str(path),
                }
            )
        log = [
            {
                "step": s,
                "phase": "phase1" if s <= 4 else "phase2",
                "tokens": s * 64,
                "bytes": s * 250,
                "loss": 6.0 - 0.3 * s + (0.1 if method else 0),
                "corpus": "a" if s < 6 else "b",
                "mfu": 0.01,
            }
            for s in range(1, 9)
        ]
        write_jsonl(rec / "log.jsonl", log)
        write_json(
            rec / "run.json",
            {
                "name": name,
                "kind": "swap" if method else "scratch",
                "method": method,
                "tokenizer": str(tmp / "tok"),
                "init": ckpts[0]["path"],
                "checkpoints": ckpts,
                "final": ckpts[-1]["path"],
                "log": str(rec / "log.jsonl"),
                "masked_share": 0.1 if (with_masked and method) else 0.0,
                "seq_len": 32,
                "params_count": 30000,
                "flops_per_token": 180000,
                "seconds": 12.5,
                "mean_mfu": 0.0123,
                "mean_tokens_per_s": 1000.0,
            },
        )
    write_json(
        reports / "vocab_swap" / "random.json",
        {"method": "random", "aligned": 0, "decomposed": 0, "random": 300, "new_vocab": 300, "bpb_step0": {}},
    )
    return {
        "shared": {"data_dir": str(data), "reports_dir": str(reports)},
        "vocab_swap": {"methods": ["random"]},
        # the arm: untrained here; the replay and annealing arms (their init, focus, is not a method here) dropped
        "study": {"arms": {"fvt-hybrid": {"init": "random"}, "replay-5": None, "replay-25": None, "anneal": None}},
        "pretrain": {"seq_len": 32},
        "evaluate": {
            "eval_bytes": 1000,
            "cloze_items": 6,
            "cloze_context_chars": 40,
            "cloze_ending_chars": 30,
            "translation_pairs": 3,
            "translation_max_new_tokens": 4,
            "translation_max_chars": 400,
            "masked_items": 3,
            "batch_size": 8,
        },
    }


def test_run_json_errors_name_the_problem(tmp_path):
    with pytest.raises(EvalError, match="no run.json"):
        load_run(tmp_path)
    (tmp_path / "run.json").write_text(
        json.dumps({"name": "x", "kind": "scratch", "tokenizer": "t", "final": "f", "checkpoints": []})
    )
    with pytest.raises(EvalError, match="'checkpoints' is empty"):
        load_run(tmp_path)
    with pytest.raises(EvalError, match="'tagged' or 'final'"):
        select_checkpoints({"checkpoints": [{"step": 0}]}, "every")


def test_stage_on_a_tiny_study(tmp_path, root):
    from warmstart.config import load_params
    from warmstart.evaluate.runs import best_run
    from warmstart.fragments import read_fragments
    from warmstart.stages import evaluate as stage

    params = load_params(root / "params.yaml", overrides=make_study(tmp_path, with_masked=True))
    headline = stage.run(params, progress=False)
    ev = json.loads((tmp_path / "reports/evaluate/eval.json").read_text())
    assert set(ev["runs"]) == {"scratch", "random"} and ev["best"] == best_run(ev)
    fin = ev["runs"]["random"]
    for key in ("bpb_target", "bpb_source", "cloze_acc_target", "cloze_acc_norm_source", "chrf", "masked_acc"):
        assert key in fin, key
    assert (
        "masked_acc" not in ev["runs"]["scratch"]
    )  # the probe runs on hybrid-objective runs and their arms' references only
    assert 0 <= fin["cloze_acc_target"] <= 1 and ev["cloze_items"] == {"target": 6, "source": 6}
    ck = pd.read_csv(tmp_path / "reports/evaluate/checkpoints.csv")
    assert len(ck) == 6 and list(ck[ck.run == "random"]["step"]) == [0, 4, 8]
    assert ev["runs"]["scratch"]["speedup_vs_scratch"] == pytest.approx(1.0)
    (frag,) = read_fragments(tmp_path / "reports")
    assert frag["stage"] == "evaluate" and frag["order"] == 60 and len(frag["figures"]) == 3
    assert [Path(f["path"]).name for f in frag["figures"]] == ["bpb_curves.png", "bpb_heatmap.png", "loss.png"]
    assert [t["caption"].split(":")[0] for t in frag["tables"]][:2] == ["Initialisation methods", "Final checkpoints"]
    per_ck = next(t for t in frag["tables"] if t["caption"].startswith("Bits per byte at every"))
    assert per_ck["appendix"] is True and len(per_ck["rows"]) == 6
    from warmstart.report.labels import looks_raw

    for t in frag["tables"]:  # human column labels, and no MFU without a stated peak
        assert not [c for c in t["columns"] if looks_raw(c)], t["columns"]
        assert not any("MFU" in c or "mfu" in c for c in t["columns"]), t["columns"]
    # intervals: bootstrap over the held-out texts for bits per byte and speed-up, Wilson for the probes
    for name in ("scratch", "random"):
        d = ev["runs"][name]
        for key in ("bpb_target", "bpb_source", "cloze_acc_target"):
            lo, hi = d[f"{key}_ci"]
            assert lo <= d[key] <= hi, (name, key)
    assert ev["chance"] == {"cloze": 0.25} and ev["intervals"]["level"] == 0.95
    assert ev["intervals"]["texts"]["target"] == len(
        json.loads((tmp_path / "reports/evaluate/doc_nll.json").read_text())["bytes"]["target"]
    )
    low = ev["best"]
    other = "random" if low == "scratch" else "scratch"
    cmp_ = ev["vs_lowest"]
    assert cmp_["reference"] == low and set(cmp_["runs"]) == {other}
    assert cmp_["runs"][other]["diff"] == pytest.approx(
        ev["runs"][other]["bpb_target"] - ev["runs"][low]["bpb_target"], abs=1e-6
    )
    doc = json.loads((tmp_path / "reports/evaluate/doc_nll.json").read_text())
    assert len(doc["checkpoints"]) == 6 and doc["unit"] == "paragraph"
    row = next(r for r in doc["checkpoints"] if r["run"] == "random" and r["step"] == 8)
    assert sum(row["target"]) / math.log(2) / sum(doc["bytes"]["target"]) == pytest.approx(fin["bpb_target"], rel=1e-6)
    assert frag["numbers"]["bpb_target.random"] == pytest.approx(fin["bpb_target"])
    assert len(pd.read_csv(tmp_path / "reports/evaluate/translations.csv")) == 2 * 3
    assert headline == json.loads((tmp_path / "reports/metrics/evaluate.json").read_text())
    assert headline["best_run"] == ev["best"] and headline["final_bpb_random"] == pytest.approx(fin["bpb_target"])
    assert set(headline) == {"final_bpb_scratch", "final_bpb_random", "best_run", "best_speedup_vs_scratch"}


def test_swap_study_numbers_and_goals():
    from warmstart.evaluate.tables import swap_study

    init = pd.DataFrame(
        [
            {"run": "scratch", "aligned": None, "bpb_step0": 8.0, "bpb_final": 3.0, "speedup": 1.0},
            {"run": "original", "aligned": None, "bpb_step0": 6.0, "bpb_final": 2.9, "speedup": 1.5},
            {"run": "random", "aligned": 0, "bpb_step0": 7.0, "bpb_final": 2.8, "speedup": 2.0},
            {"run": "fvt", "aligned": 500, "bpb_step0": 5.0, "bpb_final": 2.5, "speedup": 4.0},
            {"run": "focus", "aligned": 500, "bpb_step0": 7.5, "bpb_final": 2.6, "speedup": float("nan")},
        ]
    )
    s = swap_study(init)
    assert s["best_swapped"] == "fvt" and s["best_speedup"] == 4.0  # original is not a swapped run
    assert s["goals"] == {
        "fvt_step0_below_random": True,
        "focus_step0_below_random": False,
        "best_speedup_at_least_3": True,
        "tokdistil_step0_below_start": None,  # no tokdistil run
    }
    assert s["runs"]["focus"]["speedup"] is None  # NaN (never reached scratch's final bpb) -> null in JSON
    assert swap_study(init[init["run"] == "scratch"])["goals"]["fvt_step0_below_random"] is None
    # the tokdistil goal follows the paired step-0 interval against its start (the first tokdistil pair)
    below = {"tokdistil vs focus": {"run": "tokdistil", "reference": "focus", "diff": -0.05, "ci": [-0.07, -0.03]}}
    assert swap_study(init, below)["goals"]["tokdistil_step0_below_start"] is True
    below["tokdistil vs focus"]["ci"] = [-0.07, 0.01]
    assert swap_study(init, below)["goals"]["tokdistil_step0_below_start"] is False


def test_step0_pairs_name_the_start_and_the_best_heuristic():
    from warmstart.evaluate.runs import step0_pairs

    init = pd.DataFrame(
        [
            {"run": "scratch", "bpb_step0": 8.0},
            {"run": "fvt", "bpb_step0": 3.1},
            {"run": "focus", "bpb_step0": 3.0},
            {"run": "omp", "bpb_step0": 2.9},
            {"run": "hf-default", "bpb_step0": 3.05},
            {"run": "tokdistil", "bpb_step0": 2.95},
        ]
    )
    methods = ["fvt", "focus", "omp", "hf-default", "tokdistil"]
    assert step0_pairs(methods, "focus", init) == [("tokdistil", "focus"), ("tokdistil", "omp"), ("hf-default", "omp")]
    assert step0_pairs(methods, "omp", init) == [("tokdistil", "omp"), ("hf-default", "omp")]
    assert step0_pairs(["fvt", "focus"], "focus", init) == []


def _seed_rows(runs=("scratch", "random"), steps=(0, 4, 8), seeds=(1, 2)) -> list[dict]:
    # bpb = 3 - 0.1 step + 0.01 seed (+0.5 for scratch); source = target + 1
    return [
        {
            "run": r,
            "seed": s,
            "step": st,
            "bytes": 100 * st + s,
            "bpb_target": 3 - 0.1 * st + 0.01 * s + 0.5 * (r == "scratch"),
            "bpb_source": 4 - 0.1 * st + 0.01 * s + 0.5 * (r == "scratch"),
        }
        for r in runs
        for s in seeds
        for st in steps
    ]


def test_seed_summary_means_and_stds_exactly():
    from warmstart.evaluate.tables import covers, fmt_mean_sd, seed_summary

    df = pd.DataFrame(_seed_rows())
    s = seed_summary(df).set_index(["run", "step"])
    r = s.loc[("random", 8)]
    assert r["n"] == 2 and r["bytes"] == pytest.approx(801.5)
    assert r["bpb_target"] == pytest.approx(3 - 0.8 + 0.015) and r["bpb_target_std"] == pytest.approx(
        0.01 / math.sqrt(2)
    )
    assert s.loc[("scratch", 0)]["bpb_source"] == pytest.approx(4.515)
    ck = pd.DataFrame({"run": ["random", "random"], "step": [0, 8]})
    assert covers(df, ck) and not covers(df[df.step != 8], ck) and not covers(None, ck)
    assert fmt_mean_sd(1.84321, 0.00234) == "1.843 ± 0.002" and fmt_mean_sd(float("nan"), 0.1) == "–"
    assert fmt_mean_sd(1.5, float("nan")) == "1.500"


def test_stage_shows_mean_and_spread_when_seeds_were_measured(tmp_path, root):
    from warmstart.config import load_params
    from warmstart.evaluate.seed_spread import run_fingerprints
    from warmstart.fragments import read_fragments
    from warmstart.io import write_json
    from warmstart.stages import evaluate as stage

    params = load_params(root / "params.yaml", overrides=make_study(tmp_path))
    rows = _seed_rows()
    write_json(
        tmp_path / "reports/metrics/seed_spread.json",
        {
            "metric": "final target bits per byte",
            "seeds": [1, 2],
            "fingerprints": run_fingerprints(params),
            "checkpoints": rows,
            "runs": {
                r: {"mean": 1.0, "std": 0.01, "min": 0.99, "max": 1.01, "n": 2, "values": [0.99, 1.01]}
                for r in ("scratch", "random")
            },
        },
    )
    stage.run(params, progress=False)
    (frag,) = read_fragments(tmp_path / "reports")
    final = next(t for t in frag["tables"] if t["caption"].startswith("Final checkpoints: held-out"))
    assert final["columns"][2].endswith("mean ± std over 2 seeds") and "seeds 1, 2" in final["caption"]
    row = next(r for r in final["rows"] if r[0] == "random")
    assert row[2] == "2.215 ± 0.007" and row[4] == "3.215 ± 0.007"  # step 8: 3 - 0.8 + 0.015, std 0.01/sqrt(2)
    per_ck = next(t for t in frag["tables"] if t["caption"].startswith("Bits per byte at every"))
    assert [r[5] for r in per_ck["rows"] if r[0] == "scratch"] == ["3.515 ± 0.007", "3.115 ± 0.007", "2.715 ± 0.007"]
    assert (
        "Mean over 2 seeds" in frag["figures"][0]["caption"]
        and "each cell also prints" in frag["figures"][1]["caption"]
    )
    # the spread of another configuration of an evaluated run: one seed, no extra columns
    spread = json.loads((tmp_path / "reports/metrics/seed_spread.json").read_text())
    write_json(
        tmp_path / "reports/metrics/seed_spread.json",
        spread | {"fingerprints": spread["fingerprints"] | {"random": "0" * 16}},
    )
    stage.run(params, progress=False)
    (frag,) = read_fragments(tmp_path / "reports")
    final = next(t for t in frag["tables"] if t["caption"].startswith("Final checkpoints: held-out"))
    assert len(final["columns"]) == 3 and "One seed" in frag["figures"][0]["caption"]
