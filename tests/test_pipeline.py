"""Smoke run of the DVC pipeline on the smoke profile, in a throwaway copy.

This is how notebooks are tested: papermill runs each one through `dvc repro`
exactly as `make repro` does, on a profile small enough for CI.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from smoke import SMOKE_COMPRESS, SMOKE_CONTEXT, run_checked, smoke_copy

pytestmark = pytest.mark.slow
ARMS = ["fvt-hybrid", "replay-5", "replay-25", "anneal"]  # params.yaml's study.arms


@pytest.fixture(scope="module")
def smoke_project(tmp_path_factory):
    dst, env = smoke_copy(tmp_path_factory)
    t0 = time.time()
    log = run_checked(["dvc", "repro"], dst, env)
    return dst, env, log, time.time() - t0


def test_repro_writes_every_stage_output(smoke_project):
    dst, _, log, seconds = smoke_project
    print(f"smoke dvc repro: {seconds:.1f} s")
    for lang in ("en-US", "nb-NO"):
        for split in ("train", "val", "test"):
            assert (dst / "data/corpus" / lang / f"{split}.jsonl").stat().st_size > 0
    corpus = json.loads((dst / "reports/corpus/corpus.json").read_text())
    hb = corpus["sources"]["handbook"]
    assert hb["package"] == "debian-handbook" and len(hb["sha256"]) == 64 and hb["version"]
    assert corpus["split_documents"]["test"] and corpus["split_documents"]["val"]
    for executed_path in sorted((dst / "reports/notebooks").glob("*.ipynb")):
        executed = json.loads(executed_path.read_text())
        errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, executed_path.name
    from transformers import AutoTokenizer

    for side in ("source", "target"):
        tok = AutoTokenizer.from_pretrained(dst / "data/tokenizer" / side)
        assert len(tok) == 1024
        assert tok.decode(tok("Blåbærsyltetøy 2024")["input_ids"]) == "Blåbærsyltetøy 2024"
    fert = json.loads((dst / "reports/tokenizer/fertility.json").read_text())
    assert fert["ratio_tokens_per_word"]["nb-NO"] < 1.0
    head = json.loads((dst / "reports/metrics/tokenizer.json").read_text())
    assert head["fertility_ratio_nb-NO"] == fert["ratio_tokens_per_word"]["nb-NO"]
    for fig in ("corpus.png", "fertility.png", "base.png"):
        assert (dst / "reports/figures" / fig).stat().st_size > 10_000


def test_shard_stream_equals_the_in_memory_stream_on_the_handbook(smoke_project):
    """The trainer's rows from the tokenize stage's shards are the rows the old in-memory path gave: the target
    training split tokenized by the tokenizer's batch call, packed by the same PackedStream."""
    dst = smoke_project[0]
    from transformers import AutoTokenizer

    from warmstart.data.packing import CorpusStream, ListDocuments, MappedDocuments, PackedStream
    from warmstart.data.shards import TokenShards, fingerprint
    from warmstart.data.stream import read_documents

    tok = AutoTokenizer.from_pretrained(dst / "data/tokenizer/target")
    texts = read_documents([str(dst / "data/corpus/nb-NO/train.jsonl")])
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    old = ListDocuments(ids, tok.eos_token_id, [len(t.encode()) for t in texts])
    shards = TokenShards(dst / "data/tokens/target/nb-NO/train", fingerprint(tok), len(tok))
    assert shards.documents == len(texts) and shards.bytes == sum(old.doc_bytes)
    head = json.loads((dst / "reports/metrics/tokenize.json").read_text())
    assert head["tokens_target_nb-NO_train"] == shards.tokens == sum(map(len, ids))
    a, b = (
        CorpusStream({"target": PackedStream(d, 128, tok.eos_token_id, seed=1337)})
        for d in (old, MappedDocuments(shards, tok.eos_token_id))
    )
    for step in range(1, 200):
        x, y = a.next_rows(16, step), b.next_rows(16, step)
        assert torch.equal(x.input_ids, y.input_ids) and torch.equal(x.doc_ids, y.doc_ids) and x.bytes == y.bytes
    assert a.state_dict() == b.state_dict() and a.streams["target"].epoch >= 1


def test_every_study_run_and_model_loads(smoke_project):
    dst = smoke_project[0]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    methods = ["random", "exact", "fvt", "focus", "omp", "hf-default", "tokdistil"]
    for m in methods:
        swap = json.loads((dst / "reports/vocab_swap" / f"{m}.json").read_text())
        assert swap["padded_vocab"] % 64 == 0 and swap["new_vocab"] == 1024
        assert swap["bpb_step0"]["nb-NO"] > 0
    assert json.loads((dst / "reports/metrics/vocab_swap/exact.json").read_text())["aligned_rows"] > 0
    for run in ["scratch", "original", *methods, *ARMS]:
        info = json.loads((dst / "data/logs" / run / "run.json").read_text())
        steps = [c["step"] for c in info["checkpoints"]]
        assert steps[0] == 0 and steps == sorted(steps) and len(steps) >= 3, (run, steps)
        assert all(f"runs/{run}/" in c["path"] for c in info["checkpoints"][1:])  # checkpoints stay in data/runs
        log = [json.loads(x) for x in (dst / "data/logs" / run / "log.jsonl").read_text().splitlines()]
        assert [r["phase"] for r in log][0] == "phase1" and log[-1]["phase"] == info["phases"][-1]["name"]
        assert [p["name"] for p in info["phases"]] == (
            ["phase1", "phase2", "anneal"] if run == "anneal" else ["phase1", "phase2"]
        )
        assert all(b["bytes"] >= a["bytes"] for a, b in zip(log, log[1:])), f"{run}: bytes seen must grow"
    base = AutoModelForCausalLM.from_pretrained(dst / "data/models/base")
    fvt = AutoModelForCausalLM.from_pretrained(dst / "data/runs/fvt/phase2/final")
    tok = AutoTokenizer.from_pretrained(dst / "data/tokenizer/target")
    assert fvt.config.vocab_size % 64 == 0 and base.config.vocab_size == 1024
    prompt = tok("Debian er", return_tensors="pt")
    out = fvt.generate(**prompt, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert out.shape == (1, prompt["input_ids"].shape[1] + 5) and int(out.max()) < len(tok)  # no padding rows


def test_metrics_are_small_flat_headlines(smoke_project):
    """`dvc metrics show` is a summary: every metrics file is flat, at most 12 keys (evaluate.json: one per study
    run, the best run and its speed-up), and the details are outputs."""
    dst, env, _, _ = smoke_project
    shown = json.loads(run_checked(["dvc", "metrics", "show", "--json"], dst, env))
    files = {f: d["data"] for ws in shown.values() for f, d in ws["data"].items()}
    names = {Path(f).relative_to("reports/metrics").as_posix() for f in files}
    methods = ["random", "exact", "fvt", "focus", "omp", "hf-default", "tokdistil"]
    assert names == {
        "corpus.json",
        "tokenizer.json",
        "tokenize.json",
        "base.json",
        "evaluate.json",
        "spikes.json",
        "stability.json",
        "context.json",
        "compress.json",
        "chat.json",
        *[f"vocab_swap/{m}.json" for m in methods],
        "replay.json",
        *[f"pretrain/{r}.json" for r in ["scratch", "original", *methods, *ARMS]],
        *[f"context/{m}.json" for m in SMOKE_CONTEXT],
        *[f"compress/{v}.json" for v in SMOKE_COMPRESS],
    }
    for f, data in files.items():
        cap = 2 + len(["scratch", "original", *methods, *ARMS]) if f.endswith("/evaluate.json") else 12
        assert 0 < len(data) <= cap and all(not isinstance(v, (dict, list)) for v in data.values()), f
    ev = json.loads((dst / "reports/evaluate/eval.json").read_text())
    head = json.loads((dst / "reports/metrics/evaluate.json").read_text())
    assert head["best_run"] == ev["best"] and head["final_bpb_fvt"] == ev["runs"]["fvt"]["bpb_target"]


def test_report_pdf_and_model_card(smoke_project):
    dst = smoke_project[0]
    pdf = dst / "reports/report.pdf"
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    frags = [json.loads(p.read_text()) for p in sorted((dst / "reports/fragments").glob("*.json"))]
    assert {f["stage"] for f in frags} >= {"corpus", "tokenizer", "base", "evaluate", "spikes"}
    flat = " ".join(text.split())
    from warmstart.report.build import fmt
    from warmstart.report.labels import Labels, looks_raw

    assert {f["stage"] for f in frags} >= {"stability", "context", "compress", "chat"}
    for f in frags:
        assert " ".join(f["title"].split()) in flat, f"section {f['title']!r} missing from the PDF"
        labels = Labels("en-US", "nb-NO", f.get("labels"))
        for key, value in f["numbers"].items():  # each stage's headline numbers, labelled, as the report formats them
            if isinstance(value, (dict, list)):
                continue
            label = labels.number(key)
            assert not looks_raw(label), f"{f['stage']}: {key} has no human label"
            assert " ".join(f"{label} {fmt(value)}".split()) in flat, (
                f"{f['stage']}: {label} = {fmt(value)} missing from the PDF"
            )
    fert = json.loads((dst / "reports/tokenizer/fertility.json").read_text())
    assert fmt(fert["ratio_tokens_per_word"]["nb-NO"]) in flat  # a details JSON value, through its fragment
    study = json.loads((dst / "reports/evaluate/swap_study.json").read_text())
    runs = {"scratch", "original", "random", "exact", "fvt", "focus", "omp", "hf-default", "tokdistil", *ARMS}
    assert set(study["runs"]) == runs
    assert set(study["goals"]) == {
        "fvt_step0_below_random",
        "focus_step0_below_random",
        "best_speedup_at_least_3",
        "tokdistil_step0_below_start",
    }
    # tokdistil against its start (focus) and the best heuristic, hf-default against the best, at step 0
    pairs = evaluation_step0 = json.loads((dst / "reports/evaluate/eval.json").read_text())["step0_pairs"]
    assert {(d["run"], d["reference"]) for d in pairs.values()} >= {("tokdistil", "focus")}
    assert {d["run"] for d in pairs.values()} == {"tokdistil", "hf-default"}
    for d in evaluation_step0.values():
        assert d["ci"][0] <= d["diff"] <= d["ci"][1]
    assert study["goals"]["tokdistil_step0_below_start"] == (pairs["tokdistil vs focus"]["ci"][1] < 0)
    evaluation = json.loads((dst / "reports/evaluate/eval.json").read_text())
    assert evaluation["best"] in runs
    # the hybrid-objective arm against fvt: a paired difference and both runs' masked-token accuracy
    arm = evaluation["arms"]["fvt-hybrid"]
    assert arm["reference"] == "fvt" and arm["target"]["ci"][0] <= arm["target"]["diff"] <= arm["target"]["ci"][1]
    assert {"masked_acc", "masked_acc_ci"} <= set(evaluation["runs"]["fvt-hybrid"]) and "masked_acc" in evaluation[
        "runs"
    ]["fvt"]
    assert "masked_acc" not in evaluation["runs"]["omp"]  # the probe answers the arm's question only
    hybrid = json.loads((dst / "data/logs/fvt-hybrid/run.json").read_text())
    assert (
        hybrid["masked_share"] == 0.1
        and hybrid["overrides"] == {"masked_share": 0.1}
        and hybrid["init"].endswith("swap-fvt")
    )
    # forgetting of every run; the replay arms against focus (same target rows); the annealing arm
    replay = json.loads((dst / "reports/evaluate/replay.json").read_text())
    assert set(replay["forgetting"]["runs"]) == runs and set(replay["arms"]) == {"replay-5", "replay-25"}
    assert set(replay["anneal"]) == {"anneal"} and replay["choice"]["why"]
    for name, e in replay["arms"].items():
        f = replay["forgetting"]["runs"][name]
        assert e["reference"] == "focus" and e["forgetting"] == pytest.approx(f["forgetting"]["diff"])
        assert f["swap"]["diff"] + f["training"]["diff"] == pytest.approx(f["forgetting"]["diff"])
        assert e["source_share"]["phases"] == {"phase2": {"replay-5": 0.05, "replay-25": 0.25}[name]}
    head = json.loads((dst / "reports/metrics/replay.json").read_text())
    assert head["replay_choice"] == (replay["choice"]["arm"] or "none")
    log = [json.loads(x) for x in (dst / "data/logs/anneal/log.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in log][-1] == "anneal" and log[-1]["lr"] < log[0]["lr"]
    assert "Forgetting" in flat and "Source replay" in flat
    card = (dst / "reports/model_card/README.md").read_text()
    assert card.startswith("---") and "AutoModelForCausalLM" in card
    assert "Norwegian Bokmål (nb-NO)" in card and "Norwegian Bokmål" in flat and "Czech" not in flat
    for f in frags:  # every stage recorded its own provenance
        assert f["provenance"]["commit"] and f["provenance"]["packages"]["transformers"], f["stage"]


def test_summary_page_numbers_equal_the_metrics_files(smoke_project):
    """Page 1 (the findings) prints numbers read from the records, and they are the records' values."""
    dst = smoke_project[0]
    from warmstart.config import load_params
    from warmstart.fragments import read_fragments
    from warmstart.report.evidence import format_value, resolve
    from warmstart.report.findings import study_summary

    params = load_params(
        dst / "params.yaml", overrides={"shared": {"reports_dir": str(dst / "reports"), "data_dir": str(dst / "data")}}
    )
    summary = study_summary(params, read_fragments(dst / "reports"))
    page1 = subprocess.run(
        ["pdftotext", "-f", "1", "-l", "1", str(dst / "reports/report.pdf"), "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    page1 = " ".join(page1.split())
    n = 0
    for finding, num in summary.numbers():
        assert resolve(dst / "reports", num.source, num.key) == num.value, (num.source, num.key)
        assert format_value(num.value, num.spec) == num.text and num.text in finding.text
        n += 1
    assert n >= 10
    shown = [num.text for _, num in summary.numbers() if num.text in page1]
    assert len(shown) >= n // 2, f"only {len(shown)} of the summary's {n} numbers are on page 1"
    arm = next(f for f in summary.results if f.heading == "Arm: fvt-hybrid")
    assert "fvt trained with masked_share 0.1" in arm.text and "masked-token accuracy" in arm.text
    # the committed seed spread is the default study's: on the smoke profile it must not be used
    assert not summary.ranking["seed_measured"]
    assert any(
        lim.startswith("Seeds: one seed per run and no run-to-run spread for this configuration")
        for lim in summary.limitations
    )


def test_derived_stages_products(smoke_project):
    """The context-extended and the pruned models load with plain transformers; their stages' records agree."""
    dst = smoke_project[0]
    from transformers import AutoModelForCausalLM

    ctx = json.loads((dst / "reports/metrics/context.json").read_text())
    for m in SMOKE_CONTEXT:
        info = json.loads((dst / "data/context/logs" / m / "run.json").read_text())
        model = AutoModelForCausalLM.from_pretrained(dst / info["final"])
        rope = model.config.rope_parameters
        if m == "yarn":
            assert (
                rope["rope_type"] == "yarn" and rope["factor"] == 4 and rope["original_max_position_embeddings"] == 64
            )
            assert info["length"] == 256
        detail = json.loads((dst / "reports/context" / f"{m}.json").read_text())
        assert set(detail["after"]["bpb_by_length"]) == {"64", "128", "256"}
    assert "claim_yarn_best_zero_shot" in ctx or "testbed_best_zero_shot" in ctx
    comp = json.loads((dst / "reports/metrics/compress.json").read_text())
    masking = json.loads((dst / "reports/compress/prep.json").read_text())["masking"]
    assert [len(masking[u]["random"]) for u in ("neurons", "heads")] == [
        3,
        3,
    ]  # the smoke profile's compress.masking_draws
    for v in SMOKE_COMPRESS:
        rec = json.loads((dst / "data/compress/logs" / v / "run.json").read_text())
        model = AutoModelForCausalLM.from_pretrained(dst / rec["final"])
        assert (
            rec["params"]["non_embedding"]
            < json.loads((dst / "reports/compress/prep.json").read_text())["teacher_params"]["non_embedding"]
        )
        assert (
            comp[f"bpb_{v}"]
            == json.loads((dst / "reports/metrics/compress" / f"{v}.json").read_text())["final_bpb_nb-NO"]
        )
        assert (
            model.config.hidden_size < 64 or model.config.num_hidden_layers < 2 or model.config.intermediate_size < 176
        )
    stab = json.loads((dst / "reports/stability/stability.json").read_text())
    sweep = stab["sweep"]
    assert sweep and {r["init"] for r in sweep} == {"warm", "scratch"}
    assert all(r["init_loss"] == r["init_loss"] for r in sweep)  # no NaN at step 0
    assert json.loads((dst / "reports/metrics/stability.json").read_text())
    for card in ("context", "compress", "chat"):
        assert "AutoModelForCausalLM" in (dst / "reports/cards" / card / "MODEL_CARD.md").read_text()


def test_chat_stage_products(smoke_project):
    """The chat stage on the smoke profile: one run per prompt-loss weight, each with its log and a final model
    that reloads with its chat template; the headline agrees with the details; the card shows the format."""
    from transformers import AutoTokenizer

    dst = smoke_project[0]
    detail = json.loads((dst / "reports/chat/chat.json").read_text())
    head = json.loads((dst / "reports/metrics/chat.json").read_text())
    assert set(detail["runs"]) == {"chat-pw0", "chat-pw1"}  # the smoke profile's ablation: [1.0]
    main = detail["runs"][detail["main"]]
    assert head["adherence"] == main["adherence"]["acc"] and head["response_bpb"] == main["response"]["bpb"]
    assert main["adherence"]["n"] == detail["eval"]["turns"] > 0
    for name, r in detail["runs"].items():
        assert (dst / "data/chat/runs" / name / "log.jsonl").is_file()
        assert any((dst / "data/chat/runs" / name / "tb").iterdir())
        tok = AutoTokenizer.from_pretrained(dst / r["final"])
        assert "{% generation %}" in tok.chat_template and "<end_message>" in tok.extra_special_tokens
    stats = detail["shards"]["stats"]["short"]
    assert stats["items"] > 0 and stats["items"] + stats["dropped"] >= stats["truncated"]
    card = (dst / "reports/cards/chat/MODEL_CARD.md").read_text()
    assert "<start_user>" in card and "<end_message>" in card and "adherence" in card


def test_head_mask_bound_on_the_smoke_teacher(smoke_project, tmp_path, monkeypatch):
    """``python -m warmstart.prune bound`` scores every head mask of the masking check's shape on the study's
    teacher: the importance ranking's mask costs exactly what the masking check measured for it."""
    import math

    from warmstart.config import load_params
    from warmstart.prune.teacher import head_bound

    dst, env = smoke_project[:2]
    prep = json.loads((dst / "reports/compress/prep.json").read_text())["masking"]["heads"]
    monkeypatch.chdir(dst)
    res = head_bound(load_params("params.yaml"))
    cfg = json.loads((dst / res["teacher_dir"] / "config.json").read_text())
    k = res["heads_masked_per_layer"]
    assert k == prep["masked"]
    assert res["masks"] == math.comb(cfg["num_attention_heads"], k) ** cfg["num_hidden_layers"]
    assert res["ranked_increase"] == pytest.approx(prep["least_increase"], abs=1e-9)
    assert (
        res["best_increase"]
        <= min(res["ranked_increase"], *(r - prep["least"] + prep["least_increase"] for r in prep["random"])) + 1e-9
    )
    with pytest.raises(
        ValueError, match=r"prep.json is for teacher .* and masking fraction 0.25, the params now give .* and 0.5"
    ):
        head_bound(load_params("params.yaml", {"compress": {"masking_fraction": 0.5}}))
    out = tmp_path / "bound.md"
    log = run_checked([sys.executable, "-m", "warmstart.prune", "bound", "--report", str(out)], dst, env)
    assert f"All {res['masks']:,} masks" in out.read_text() and f"{res['best_ratio']:.2f}" in log


def test_second_repro_is_a_noop(smoke_project):
    dst, env, _, _ = smoke_project
    t0 = time.time()
    out = run_checked(["dvc", "repro"], dst, env)
    print(f"no-op dvc repro: {time.time() - t0:.1f} s")
    assert "didn't change, skipping" in out and "Running stage" not in out


def test_testbed_across_seeds_reaches_the_report(smoke_project):
    """``python -m warmstart.context seeds`` reuses the stage's testbed for the study seed and trains the others; the
    context section shows them once the record was measured for this configuration (the committed record is the
    default study's). Last in the module: it changes a dep of the ``context`` stage."""
    import yaml

    dst, env = smoke_project[:2]
    frag = dst / "reports/fragments/80_context.json"
    assert "The testbed across training seeds is not shown" in frag.read_text()
    seed = yaml.safe_load((dst / "params.yaml").read_text())["shared"]["seed"]
    cmd = [sys.executable, "-m", "warmstart.context", "seeds", "--seeds", str(seed), "7"]
    log = run_checked(cmd, dst, env)
    assert f"testbed seed {seed}: reused" in log and "testbed seed 7: training and scoring" in log
    rec = json.loads((dst / "reports/metrics/testbed_seeds.json").read_text())
    tb = json.loads((dst / "reports/context/testbed.json").read_text())["summary"]
    assert (
        rec["seeds"] == [seed, 7] and rec["per_seed"][str(seed)]["zero_shot_at_factor_L"] == tb["zero_shot_at_factor_L"]
    )
    for t, n in rec["targets_met"].items():
        assert n == sum(r["targets"][t] for r in rec["per_seed"].values())
    yarn = [r["zero_shot_at_factor_L"]["yarn"] for r in rec["per_seed"].values()]
    assert rec["across"]["zero_shot_at_factor_L"]["yarn"] == {"mean": sum(yarn) / 2, "min": min(yarn), "max": max(yarn)}
    assert "testbed seed 7: reused" in run_checked(cmd, dst, env)  # measured once per seed and configuration
    assert "Running stage 'context'" in run_checked(["dvc", "repro", "context"], dst, env)
    text = frag.read_text()
    assert f"once per seed (2 seeds: {seed}, 7;" in text and "not shown" not in text
