"""Context extension (warmstart.context): closed-form frequencies per method, the traps, a fresh-process
round trip, the retrieval tasks and their scoring, bits per byte by length/position, the testbed smoke run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from warmstart.context import rope_scaling as M
from warmstart.context import tasks as T
from warmstart.context import traps
from warmstart.context.measure import bpb_by_length, bpb_by_position
from warmstart.context.testbed import run_testbed, score_items, summarise
from warmstart.context.testbed_config import TestbedConfig
from warmstart.evaluate.intervals import wilson_or_unit_interval as wilson
from warmstart.model import build_model

L, S = 64, 4.0
SHAPES = {"hd32": dict(heads=2, rope_theta=10000.0), "hd16": dict(heads=4, rope_theta=500000.0)}


def tiny(heads=2, rope_theta=10000.0, max_pos=L, vocab=len(T.VOCAB)):  # noqa: B008
    return build_model(
        vocab_size=vocab, hidden=64, layers=2, heads=heads, max_pos=max_pos, rope_theta=rope_theta, seed=1
    )


@pytest.fixture(scope="module")
def model():
    return tiny()


def rel(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)) / np.abs(np.asarray(b))))


# ---------------------------------------------------------------- methods and closed forms


def test_registry_names_and_table():
    assert tuple(M.METHODS) == (
        "none",
        "pi",
        "ntk",
        "ntk_margin",
        "dynamic",
        "ntk_parts",
        "yarn",
        "ntk_yarn",
        "llama3",
        "theta",
    )
    rows = M.method_table()
    assert [r["method"] for r in rows] == list(M.METHODS) and all(r["source"] and r["rope_type"] for r in rows)
    assert {r["rope_type"] for r in rows} <= {"default", "linear", "dynamic", "yarn", "llama3"}  # all native


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("method", list(M.METHODS))
def test_frequencies_equal_closed_form(method, shape):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    base = tiny(**SHAPES[shape])
    D, b = base.config.head_dim, SHAPES[shape]["rope_theta"]
    ext = M.extend(base, method, S, L)
    inv, scale = M.model_rope(ext)
    extra = {"seq_len": L} if method == "dynamic" else {}  # dynamic at construction: the original length
    cf, cf_scale = M.closed_form(method, D, b, S, L, **extra)
    assert rel(inv, cf) < 1e-6 and abs(scale - cf_scale) < 1e-6
    rt = ext.config.rope_parameters["rope_type"]
    if rt != "default":  # transformers' own implementation agrees with the closed form too
        t_inv, t_scale = ROPE_INIT_FUNCTIONS[rt](ext.config, "cpu", **({"seq_len": L} if rt == "dynamic" else {}))
        assert rel(t_inv.double(), cf) < 1e-6 and abs(t_scale - cf_scale) < 1e-6
    if method == "dynamic":  # after a forward at s*L the frequencies are dynamic's at s*L
        traps.logits(ext, traps.random_ids(ext, int(S * L)))
        assert rel(M.model_rope(ext)[0], M.closed_form(method, D, b, S, L)[0]) < 1e-6


def test_closed_forms_are_the_published_formulas():
    D, b, s = 32, 10000.0, 4.0
    theta = b ** (-np.arange(0, D, 2) / D)
    assert rel(M.closed_form("pi", D, b, s, L)[0], theta / s) < 1e-12
    assert rel(M.closed_form("ntk", D, b, s, L)[0], (b * s ** (D / (D - 2))) ** (-np.arange(0, D, 2) / D)) < 1e-12
    margin = M.closed_form("ntk_margin", D, b, s, L, margin=1.5)[0]
    assert rel(margin, (b * (1.5 * s) ** (D / (D - 2))) ** (-np.arange(0, D, 2) / D)) < 1e-12
    assert M.closed_form("yarn", D, b, s, L)[1] == pytest.approx(0.1 * math.log(4) + 1)
    assert M.closed_form("ntk_yarn", D, b, s, L)[1] == pytest.approx(0.1 * math.log(4) + 1)
    y = M.closed_form("yarn", D, b, s, 2048)[0]  # high frequencies kept, low ones divided by s
    assert y[0] == pytest.approx(theta[0]) and y[-1] == pytest.approx(theta[-1] / s)
    assert M.closed_form("theta", D, b, s, L)[0][1] == pytest.approx((40 * b) ** (-2 / D))
    assert M.closed_form("theta", D, 5e5, s, L, theta=2e7)[0][1] == pytest.approx(2e7 ** (-2 / D))  # Lucie


def test_rope_config_lengths(model):
    for m in M.METHODS:
        f = M.rope_config(m, model.config, S, L)
        rp = f["rope_parameters"]
        assert f["context_extension"] == {**f["context_extension"], "method": m, "trained_len": L, "target_len": 256}
        assert f["max_position_embeddings"] == (L if m == "dynamic" else 256)
        if m in ("yarn", "ntk_parts", "llama3"):
            assert rp["original_max_position_embeddings"] == L  # the trained length, not the new one
    assert M.rope_config("none", model.config, S, L)["rope_parameters"] == {
        "rope_type": "default",
        "rope_theta": 10000.0,
    }
    assert model.config.rope_parameters == {"rope_type": "default", "rope_theta": 10000.0}  # untouched


# ---------------------------------------------------------------- traps


def test_trap_config_edit_alone_changes_nothing(model):
    ids = traps.random_ids(model, L)
    for m in ("pi", "ntk", "yarn"):
        gap = traps.config_edit_gap(model, m, S, L, ids)
        assert gap["config_edit_only"] == 0.0 and gap["extend"] > 1e-4, (m, gap)
    new = M.extend(model, "yarn", S, L)
    assert new is not model and model.config.rope_parameters == {"rope_type": "default", "rope_theta": 10000.0}
    assert rel(M.model_rope(model)[0], M.closed_form("none", 32, 10000.0, S, L)[0]) < 1e-6  # the input is untouched


def test_trap_original_max_position_embeddings_must_be_trained_length(model):
    for m in ("yarn", "ntk_parts", "llama3"):
        assert traps.missing_original_gap(model, m, S, L) > 1e-3, m


def test_trap_dynamic_reads_max_position_embeddings_and_is_not_static_ntk(model):
    d = traps.dynamic_bases(model, S, L)
    assert d["change_if_original_max_pos_changed"] == 0.0 and d["change_if_max_pos_changed"] > 0.1
    D = model.config.head_dim
    assert d["dynamic_base_at_sL"] == pytest.approx(10000 * (S * S - S + 1) ** (D / (D - 2)), rel=1e-4)
    assert d["dynamic_base_at_sL"] > 3 * d["ntk_base"]
    assert d["dynamic_factor1_base_at_sL"] == pytest.approx(d["ntk_base"], rel=1e-4)


def test_trap_linear_and_yarn_change_the_model_at_trained_length(model):
    ids = traps.random_ids(model, L, seed=3)
    for m in ("pi", "yarn", "ntk_parts", "llama3", "ntk"):
        assert traps.trained_length_gap(model, m, S, L, ids) > 1e-4, m
    assert traps.trained_length_gap(model, "dynamic", S, L, ids) == 0.0


def test_trap_dynamic_kv_cache_differs_beyond_trained_length(model):
    beyond = traps.random_ids(model, int(S * L), seed=4)
    dyn = M.extend(model, "dynamic", S, L)
    gap = traps.cache_gap(dyn, beyond, L, chunk=32)
    assert gap > 1e-4  # the measured number (about 4e-3 on this random model)
    assert traps.cache_gap(dyn, beyond[:, :L], L // 2, chunk=8) < 1e-5  # within L: no difference
    for m in ("none", "yarn"):
        assert traps.cache_gap(M.extend(model, m, S, L), beyond, L, chunk=32) < 1e-5
    assert traps.dynamic_history_gap(dyn, beyond[:, : 2 * L], beyond) > 1e-4  # frequencies only grow


def test_trap_report_is_json(model):
    rep = traps.trap_report(model, L, S, chunk=64)
    json.dumps(rep)
    assert rep["cache_gap"]["dynamic_beyond_L"] > 1e-4 and rep["config_edit"]["yarn"]["config_edit_only"] == 0


# ---------------------------------------------------------------- bad input


def test_bad_input_is_a_clear_error(model, tmp_path):
    with pytest.raises(ValueError, match="factor"):
        M.extend(model, "yarn", 1.0, L)
    with pytest.raises(ValueError, match="factor"):
        M.rope_config("pi", model.config, 0.5, L)
    with pytest.raises(ValueError, match=r"method: unknown 'rope2'; known methods: none, pi, ntk"):
        M.extend(model, "rope2", S, L)
    with pytest.raises(ValueError, match="trained_len"):
        M.extend(model, "yarn", S, 2 * L)
    with pytest.raises(ValueError, match="opts"):
        M.extend(model, "pi", S, L, margin=2)
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=40, n_positions=64))
    with pytest.raises(ValueError, match="no rotary embeddings"):
        M.extend(gpt2, "yarn", S, L)
    src = tmp_path / "src"
    model.save_pretrained(src)
    for bad in (
        dict(method="nope", factor=S),
        dict(method="yarn", factor=1),
        dict(method="yarn", factor=S, trained_len=999),
    ):
        kw = {"trained_len": L, **bad}
        with pytest.raises(ValueError):
            M.extend_dir(src, tmp_path / "dst", **kw)
        assert not (tmp_path / "dst").exists()  # nothing written
    scaled = M.extend(model, "pi", S, L)
    with pytest.raises(ValueError, match="rope_type"):
        M.extend(scaled, "yarn", S, L)


# ---------------------------------------------------------------- round trip in a fresh process

_LOAD = textwrap.dedent("""
    import sys, numpy as np, torch
    from transformers import AutoModelForCausalLM
    ids = torch.from_numpy(np.load(sys.argv[1]))
    out = {}
    for d in sys.argv[3:]:
        m = AutoModelForCausalLM.from_pretrained(d)  # plain: no warmstart, no custom code
        with torch.no_grad():
            out[d] = m(input_ids=ids, use_cache=False).logits.numpy()
    np.savez(sys.argv[2], **{str(i): out[d] for i, d in enumerate(sys.argv[3:])})
""")


def test_round_trip_in_a_fresh_process(model, tmp_path):
    src = tmp_path / "src"
    model.save_pretrained(src)
    ids = traps.random_ids(model, int(S * L), batch=2, seed=7)
    np.save(tmp_path / "ids.npy", ids.numpy())
    dirs, expected = [], []
    for m in M.METHODS:
        d = M.extend_dir(src, tmp_path / m, m, S, L)
        assert (d / "model.safetensors").is_file() and not list(d.glob("*.bin"))
        dirs.append(str(d))
        expected.append(traps.logits(M.extend(model, m, S, L), ids).numpy())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error"}
    r = subprocess.run(
        [sys.executable, "-c", _LOAD, str(tmp_path / "ids.npy"), str(tmp_path / "out.npz"), *dirs],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    got = np.load(tmp_path / "out.npz")
    for i, m in enumerate(M.METHODS):
        assert np.abs(got[str(i)] - expected[i]).max() < 1e-5, m
    cfg = json.loads((tmp_path / "yarn" / "config.json").read_text())
    assert (
        cfg["rope_parameters"]["original_max_position_embeddings"] == L and cfg["context_extension"]["method"] == "yarn"
    )


# ---------------------------------------------------------------- tasks, tokenizer, scoring


def test_tasks_are_deterministic_and_well_formed(tmp_path):
    for task in T.TASKS:
        a, b = T.make_items(task, 96, 40, seed=3), T.make_items(task, 96, 40, seed=3)
        assert a == b and a != T.make_items(task, 96, 40, seed=4)
        for it in a:
            assert it.length == 96 and len(it.ids()) == 96 and T.answer_count(it) == 1
        counts = np.bincount([T.depth_bucket(it.depth, 4) for it in a], minlength=4)
        assert counts.tolist() == [10, 10, 10, 10]  # depths spread evenly
    it = T.make_items("passkey", 32, 1, seed=0)[0]
    assert T.as_needle(it.answer) == it.prompt[it.prompt.index(T.KEY_MARK) + 1 :][: len(it.answer)]
    tok_dir = T.save_tokenizer(tmp_path / "tok")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    assert len(tok) == len(T.VOCAB) <= 40 and tok.eos_token_id == T.TOKEN_ID["<eos>"]
    assert tok(it.text, add_special_tokens=False)["input_ids"] == it.ids(eos=False)
    with pytest.raises(ValueError, match="shorter than a kv item needs"):
        T.make_items("kv", 12, 1, seed=0)
    with pytest.raises(ValueError, match="task"):
        T.make_items("mqar", 64, 1, seed=0)


class _Oracle(torch.nn.Module):
    """Predicts each next token exactly (from the input itself), except where ``wrong`` says otherwise."""

    def __init__(self, wrong_at: int | None = None):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.wrong_at = wrong_at

    def forward(self, input_ids, use_cache=False, logits_to_keep=0):
        nxt = torch.cat([input_ids[:, 1:], input_ids[:, :1]], dim=1)
        if self.wrong_at is not None:
            nxt[:, self.wrong_at] = (nxt[:, self.wrong_at] + 1) % len(T.VOCAB)
        logits = torch.nn.functional.one_hot(nxt, len(T.VOCAB)).float()
        return type("Out", (), {"logits": logits[:, -logits_to_keep:] if logits_to_keep else logits})()


def test_scoring_is_exact_match_of_every_answer_token():
    items = T.make_items("passkey", 40, 8, seed=0) + T.make_items("kv", 40, 8, seed=0)
    assert all(score_items(_Oracle(), items, batch_size=5))
    assert not any(score_items(_Oracle(wrong_at=-3), items))  # the last answer token wrong: no match
    assert all(score_items(_Oracle(wrong_at=-1), items))  # the EOS prediction does not count
    pk = items[:8]
    first = -(pk[0].n_answer + 2)  # the position predicting the first answer token
    assert not any(score_items(_Oracle(wrong_at=first), pk))
    assert all(score_items(_Oracle(wrong_at=first - 1), pk))  # the query mark is prompt, not answer
    s = summarise(pk, [True] * 4 + [False] * 4, buckets=2)
    assert s["acc"] == 0.5 and [c["acc"] for c in s["depth"]] == [1.0, 0.0] and s["lo"] < 0.5 < s["hi"]


def test_wilson_interval():
    assert wilson(0, 400)[0] == 0.0 and wilson(0, 400)[1] == pytest.approx(0.00951, abs=1e-4)
    lo, hi = wilson(200, 400)
    assert lo == pytest.approx(0.4512, abs=1e-3) and hi == pytest.approx(0.5488, abs=1e-3)
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson(5, 4)


# ---------------------------------------------------------------- bits per byte by length and position


def test_bits_per_byte_by_length_and_position(model, tmp_path):
    from warmstart.bpb import bits_per_byte

    tok = T.make_tokenizer()
    rng = np.random.default_rng(0)
    docs = [" ".join(T.VOCAB[i] for i in rng.integers(3, len(T.VOCAB), size=n)) for n in (100, 50, 200, 90)]
    one = [" ".join(docs[0].split()[:32])]
    ours = bpb_by_length(model, tok, one, [32], n_windows=1)[32]
    assert ours == pytest.approx(bits_per_byte(model, tok, one, seq_len=32)["bits_per_byte"], rel=1e-6)
    by_len = bpb_by_length(model, tok, docs, [16, 32, 64], n_windows=3)
    assert set(by_len) == {16, 32, 64} and all(0 < v < 10 for v in by_len.values())
    pos = bpb_by_position(model, tok, docs, 64, buckets=4, n_windows=3)
    assert [p["start"] for p in pos] == [1, 17, 33, 49] and sum(p["tokens"] for p in pos) == 3 * 64 - 2  # 2 EOS targets
    mean = sum(p["bits_per_byte"] * p["bytes"] for p in pos) / sum(p["bytes"] for p in pos)
    assert mean == pytest.approx(by_len[64], rel=1e-6)
    with pytest.raises(ValueError, match="texts"):
        bpb_by_length(model, tok, docs[:1], [64], n_windows=4)
    with pytest.raises(ValueError, match="lengths"):
        bpb_by_length(model, tok, docs, [24, 64])


# ---------------------------------------------------------------- the testbed


def test_testbed_config_validation():
    with pytest.raises(ValueError, match="known methods"):
        TestbedConfig(finetune_methods=["yarn", "rope2"])
    with pytest.raises(ValueError, match="factor"):
        TestbedConfig(factor=1.0)
    with pytest.raises(ValueError, match="extra"):
        TestbedConfig(stepz=3)
    with pytest.raises(ValueError, match="shorter than"):
        TestbedConfig(trained_len=32, eval_factors=[0.5])
    cfg = TestbedConfig()
    assert cfg.items >= 400 and cfg.lengths() == [cfg.trained_len, 2 * cfg.trained_len, 4 * cfg.trained_len]
    assert set(cfg.finetune_methods) < set(cfg.methods) == set(M.METHODS)


def test_testbed_smoke(tmp_path):
    cfg = TestbedConfig.smoke()
    res = run_testbed(cfg, tmp_path / "tb")
    assert json.loads((tmp_path / "tb" / "testbed.json").read_text())["lengths"] == [64, 128, 256]
    assert set(res["zero_shot"]) == set(cfg.methods) and set(res["finetuned"]) == set(cfg.finetune_methods)
    cell = res["zero_shot"]["yarn"]["kv"]["256"]
    assert cell["n"] == cfg.items and 0 <= cell["lo"] <= cell["acc"] <= cell["hi"] <= 1
    assert len(cell["depth"]) == cfg.depth_buckets and sum(c["n"] for c in cell["depth"]) == cfg.items
    assert len(res["loss"]["base"]) >= 2 and res["loss"]["finetune/yarn"]
    assert {"train", "zero_shot", "finetune", "total"} <= set(res["seconds"])
    ft = json.loads(Path(tmp_path / "tb/runs/ft-yarn/extended/config.json").read_text())
    assert ft["rope_parameters"]["rope_type"] == "yarn" and ft["context_extension"]["trained_len"] == 64


def test_testbed_result_does_not_depend_on_workers(tmp_path):
    # the jobs run with the same threads, files and seeds in this process or in spawned workers
    cfg = dict(methods=["none", "yarn"], finetune_methods=["yarn"])
    one = run_testbed(TestbedConfig.smoke(workers=1, **cfg), tmp_path / "one")
    two = run_testbed(TestbedConfig.smoke(workers=2, **cfg), tmp_path / "two")
    assert list(two["zero_shot"]) == ["none", "yarn"] and list(two["finetuned"]) == ["yarn"]
    assert one["zero_shot"] == two["zero_shot"] and one["finetuned"] == two["finetuned"] and one["loss"] == two["loss"]


def test_alfred_claims_verdicts():
    from warmstart.context.testbed import alfred_claims

    def cell(acc, half=0.02):
        return {"acc": acc, "lo": acc - half, "hi": acc + half}

    def res(zs, ft):
        return {
            "zero_shot": {m: {"passkey": {"512": cell(a)}} for m, a in zs.items()},
            "finetuned": {m: {"passkey": {"512": cell(a)}} for m, a in ft.items()},
        }

    r = alfred_claims(
        res({"yarn": 0.9, "ntk": 0.5, "pi": 0.6}, {"yarn": 0.9, "ntk_margin": 0.99, "ntk_yarn": 0.95}), "passkey", "512"
    )
    assert r["yarn_best_zero_shot"]["verdict"] == "reproduced" and r["yarn_best_zero_shot"]["runner_up"] == "pi"
    assert r["ntk_family_ge_yarn_finetuned"]["verdict"] == "reproduced"
    assert r["ntk_family_ge_yarn_finetuned"]["best_ntk_family"] == "ntk_margin"
    r = alfred_claims(res({"yarn": 0.5, "ntk": 0.8}, {"yarn": 0.97, "ntk": 0.96}), "passkey", "512")
    assert (
        r["yarn_best_zero_shot"]["verdict"] == "refuted"
        and r["ntk_family_ge_yarn_finetuned"]["verdict"] == "unresolved"
    )


def test_real_scale_plan_for_a_4k_to_16k_mistral_and_its_cpu_dry_run(tmp_path):
    """The 4K -> 16K plan of a Mistral-Nemo-shaped config (rope, run config, memory, time), and the same path run
    for two steps at the extended length on a tiny Mistral on CPU."""
    from warmstart.context.plan import describe, dry_run, plan

    cfg = {
        "model_type": "mistral",
        "vocab_size": 131072,
        "hidden_size": 5120,
        "num_hidden_layers": 40,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "intermediate_size": 14336,
        "max_position_embeddings": 4096,
        "rope_theta": 1000000.0,
    }
    p = plan(cfg, "yarn", 4, 4096, processes=8, micro_batch=1, steps=1000)
    assert p["length"] == 16384 and p["rope_parameters"]["original_max_position_embeddings"] == 4096
    assert p["rope_parameters"]["attention_factor"] == pytest.approx(0.1 * math.log(4) + 1)
    assert p["run_config"]["seq_len"] == 16384 and p["run_config"]["attn_implementation"] == "flash_attention_2"
    mem = p["memory_per_device"]
    assert mem["params_grads_adam_gib"] == pytest.approx(
        16 * 12_247_782_400 / 8 / 1024**3, rel=1e-6
    )  # Mistral-Nemo 12.2B
    assert mem["total_with_recomputation_gib"] < mem["total_gib"] and "GiB" in describe(p)
    # 12.2B at 16K tokens does not fit an 80 GiB H100 without activation recomputation; with it, it does
    assert not mem["fits"] and mem["fits_with_recomputation"] and p["run_config"]["activation_checkpointing"] is True
    assert "fits (the run config sets activation_checkpointing: true)" in describe(p)
    small = plan(cfg, "yarn", 1.25, 4096, processes=8, micro_batch=1, gpu="H200")
    assert small["memory_per_device"]["fits"] and small["run_config"]["activation_checkpointing"] is False
    assert p["time"]["seconds_per_step"] == pytest.approx(
        16384 * 8 * p["time"]["flops_per_token"] / (0.35 * 989e12 * 8)
    )
    with pytest.raises(ValueError, match="gpu"):
        plan(cfg, "yarn", 4, 4096, gpu="TPU")
    with pytest.raises(ValueError, match="factor"):
        plan(cfg, "yarn", 1, 4096)
    r = dry_run("mistral", "yarn", 4, 16, tmp_path, activation_checkpointing=True)
    assert r["steps"] == 2 and math.isfinite(r["final_loss"]) and r["plan"]["length"] == 64
    assert json.loads((tmp_path / "run/train_config.json").read_text())["activation_checkpointing"] is True


def test_testbed_seeds_fingerprint_and_mismatch(tmp_path):
    """The record of the testbed across seeds is tied to the testbed configuration: the seed and the worker count
    (which the result does not depend on) are left out of the fingerprint, anything else is in it."""
    import json
    from pathlib import Path

    from warmstart.config import load_params
    from warmstart.context.testbed_seeds import fingerprint, seeds_for, testbed_config

    fp = fingerprint(TestbedConfig())
    assert fp == fingerprint(TestbedConfig(seed=5, workers=1)) and len(fp) == 16
    # the code is in it too: the testbed's whole import closure, the trainer included
    import warmstart
    from warmstart.closure import import_closure

    lib = Path(warmstart.__file__).resolve().parents[1]
    assert {"warmstart.train.loop", "warmstart.context.rope_scaling", "warmstart.context.tasks"} <= import_closure(
        "warmstart.context.testbed", lib
    )
    assert fp != fingerprint(TestbedConfig(train_steps=1201)) and fp != fingerprint(TestbedConfig(threads=2))
    root = Path(__file__).resolve().parents[1]
    params = load_params(
        root / "params.yaml", {"shared": {"reports_dir": str(tmp_path)}, "context": {"testbed": {"items": 50}}}
    )
    assert testbed_config(params, 3).seed == 3 and testbed_config(params, 3).items == 50
    rec, why = seeds_for(params)
    assert rec is None and "testbed_seeds.json is absent (make testbed-seeds measures it)" in why
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/testbed_seeds.json").write_text(json.dumps({"fingerprint": fp}))
    rec, why = seeds_for(params)
    assert rec is None and f"measured for another configuration or code (fingerprint {fp}" in why
    good = {
        "fingerprint": fingerprint(TestbedConfig(items=50)),
        "per_seed": {"1337": {"zero_shot_at_factor_L": {"yarn": 0.5}}},
    }
    (tmp_path / "metrics/testbed_seeds.json").write_text(json.dumps(good))
    assert seeds_for(params) == (good, None)  # no stage result to compare with
    (tmp_path / "context").mkdir()
    (tmp_path / "context/testbed.json").write_text(json.dumps({"summary": {"zero_shot_at_factor_L": {"yarn": 0.6}}}))
    rec, why = seeds_for(params)
    assert rec is None and "its seed-1337 row differs from the context_testbed stage's result" in why
    (tmp_path / "context/testbed.json").write_text(json.dumps({"summary": {"zero_shot_at_factor_L": {"yarn": 0.5}}}))
    assert seeds_for(params) == (good, None)
    # the targets are measured at factor x L: a testbed that does not score there is refused before any training
    from warmstart.context.testbed_seeds import measure

    bad = load_params(
        root / "params.yaml",
        {
            "shared": {"reports_dir": str(tmp_path), "data_dir": str(tmp_path / "data")},
            "context": {"testbed": {"eval_factors": [1.0, 2.0]}},
        },
    )
    with pytest.raises(ValueError, match=r"eval_factors \[1.0, 2.0\] must include factor 4.0"):
        measure(bad, [1, 2])
    with pytest.raises(ValueError, match=r"--seeds: give distinct seeds"):
        measure(params, [1, 1])
    assert not (tmp_path / "data").exists()


def test_long_documents_join_each_documents_paragraphs_in_order(tmp_path):
    """The fine-tune's long documents: a document's paragraphs joined by a blank line, documents in order of
    first appearance, even where the split interleaves them (the handbook's pages do); a record without
    ``doc`` is its own document."""
    from warmstart.config import load_params
    from warmstart.context.finetune import texts_by_document

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml", {"shared": {"data_dir": str(tmp_path)}})
    d = tmp_path / "corpus" / params.shared.target_lang
    d.mkdir(parents=True)
    recs = [
        {"id": "1", "doc": "a", "text": "A1"},
        {"id": "2", "doc": "a", "text": "A2"},
        {"id": "3", "doc": "b", "text": "B1"},
        {"id": "4", "text": "loose"},
        {"id": "5", "doc": "a", "text": "A3"},
        {"id": "6", "doc": "c", "text": "C1"},
        {"id": "7", "doc": "b", "text": "B2"},
    ]
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert list(texts_by_document(params, "train")) == ["A1\n\nA2\n\nA3", "B1\n\nB2", "loose", "C1"]


def test_the_fine_tune_reads_the_documents_view_of_its_tokenizer(tmp_path):
    """``long_documents`` finds the ``train-documents`` shards written by the extended model's tokenizer and
    refuses, naming ``tokenize.documents``, when the tokenize stage wrote none for it."""
    from conftest import byte_bpe
    from warmstart.config import load_params
    from warmstart.context.finetune import long_documents
    from warmstart.data.shards import tokenize_files
    from warmstart.data.tokenize import token_dir

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml", {"shared": {"data_dir": str(tmp_path)}})
    src = tmp_path / "train.jsonl"
    texts = [f"dokument {i} har noen ord om modeller og data" for i in range(40)]
    src.write_text(
        "".join(json.dumps({"id": str(i), "doc": f"d{i // 4}", "text": t}) + "\n" for i, t in enumerate(texts))
    )
    target, other = byte_bpe(texts, 300), byte_bpe(texts[:10], 280)
    d = token_dir(params, "target", "target", "train-documents")
    tokenize_files([str(src)], d, target, documents=True)
    assert long_documents(params, target) == d
    with pytest.raises(FileNotFoundError, match=r"add nb-NO \(or 'target'\) to tokenize.documents"):
        long_documents(params, other)
