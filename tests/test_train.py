"""The training engine on a tiny Llama (hidden 32, 2 layers, vocab 300, seq 32), CPU only.

Fast tests run in-process; ``slow`` ones start real processes: crash safety
(SIGKILL twice, one kill inside a checkpoint write, then resume: bit-identical
weights) and DDP with two CPU processes through ``accelerate launch``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import TINY_LLAMA, byte_bpe
from conftest import WORDS_EN as WORDS_A
from conftest import WORDS_NB as WORDS_B
from warmstart.kernels.masks import document_attention_mask
from warmstart.model import ModelSpec, load_model
from warmstart.train.checkpoint import export_checkpoint, latest_checkpoint, list_checkpoints
from warmstart.train.config import LOG_FIELDS, TrainConfig
from warmstart.train.distributed import launch_command
from warmstart.train.loop import Trainer, train
from warmstart.train.objectives import hybrid_batch
from warmstart.train.schedules import lr_multiplier, ramp_batch_rows

SPEC = dict(hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64, max_pos=64, seed=0)


def _texts(words, n, seed):
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 40))) for _ in range(n)]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A 300-token byte-level BPE tokenizer (with <mask>) and two small jsonl corpora."""
    root = tmp_path_factory.mktemp("assets")
    a, b = _texts(WORDS_A, 200, 0), _texts(WORDS_B, 100, 1)
    byte_bpe(a + b, 300).save_pretrained(root / "tok")
    for name, texts in (("a", a), ("b", b)):
        with open(root / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps({"text": t}) + "\n" for t in texts)
    return root


def make_cfg(assets, out_dir, **kw) -> dict:
    cfg = dict(
        model=SPEC,
        tokenizer_path=str(assets / "tok"),
        train_files={"a": [str(assets / "a.jsonl")]},
        seq_len=32,
        micro_batch=4,
        steps=8,
        lr=1e-3,
        warmup_steps=2,
        out_dir=str(out_dir),
        log_every=1,
        progress=False,
        tensorboard=False,
        peak_flops=1e11,
        seed=0,
    )
    cfg.update(kw)
    return cfg


def read_log(out_dir) -> list[dict]:
    return [json.loads(line) for line in Path(out_dir, "log.jsonl").read_text().splitlines()]


def weights(model_dir) -> dict[str, torch.Tensor]:
    return load_file(Path(model_dir) / "model.safetensors")


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


# ---------------------------------------------------------------- pure functions


def test_lr_schedules_exact_values():
    cos = dict(steps=110, schedule="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert [lr_multiplier(s, **cos) for s in (1, 5, 10)] == [0.1, 0.5, 1.0]
    assert lr_multiplier(60, **cos) == pytest.approx(0.55, abs=1e-15)  # half way: 0.1 + 0.9 * 0.5
    assert lr_multiplier(110, **cos) == pytest.approx(0.1, abs=1e-15)  # last step at the floor (CSMPT alpha)
    wsd = dict(steps=100, schedule="wsd", warmup_steps=10, decay_steps=20, min_lr_ratio=0.1)
    assert [lr_multiplier(s, **wsd) for s in (5, 11, 80, 90, 100)] == [0.5, 1.0, 1.0, 0.55, 0.1]
    assert [lr_multiplier(s, 100, "constant", 4) for s in (1, 4, 50, 100)] == [0.25, 1.0, 1.0, 1.0]


def test_batch_ramp_exact_counts():
    lucie = dict(start=256, increment=64, ramp_samples=10_000_000, final=1024)  # 12 increments of 833,333.3 samples
    assert ramp_batch_rows(0, **lucie) == 256
    assert ramp_batch_rows(833_333, **lucie) == 256
    assert ramp_batch_rows(833_334, **lucie) == 320
    assert ramp_batch_rows(9_999_999, **lucie) == 960
    assert ramp_batch_rows(10_000_000, **lucie) == 1024
    assert ramp_batch_rows(10**9, **lucie) == 1024


def test_hybrid_batch_masks_only_inside_documents():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 300, (16, 32), generator=g)
    doc = torch.tensor([0] * 7 + [1] * 10 + [2] * 15).repeat(16, 1)
    inputs, labels, masked = hybrid_batch(ids, doc, step=3, seed=0, share=0.5, mask_prob=0.3, span=3, mask_id=4)
    assert 0 < int(masked.sum()) < 16
    m = inputs == 4
    first = torch.zeros(32, dtype=torch.bool)
    first[[0, 7, 17]] = True
    for r in range(16):
        if masked[r]:
            assert m[r].any() and not (m[r] & first).any()
            # loss positions are exactly the masked ones, with the original tokens as targets
            assert torch.equal(labels[r] != -100, m[r]) and torch.equal(labels[r][m[r]], ids[r][m[r]])
        else:
            assert not m[r].any() and torch.equal(labels[r], ids[r])
    # deterministic in (seed, step); share 0 is plain causal LM
    again = hybrid_batch(ids, doc, step=3, seed=0, share=0.5, mask_prob=0.3, span=3, mask_id=4)
    assert all(torch.equal(x, y) for x, y in zip((inputs, labels, masked), again))
    i0, l0, m0 = hybrid_batch(ids, doc, step=3, seed=0, share=0.0, mask_prob=0.3, span=3, mask_id=None)
    assert torch.equal(i0, ids) and torch.equal(l0, ids) and not m0.any()


# ---------------------------------------------------------------- in-process runs


def test_run_log_checkpoints_export(assets, tmp_path):
    cfg = make_cfg(assets, tmp_path / "run", steps=6, checkpoint_every=2, keep_last=2, tag_steps=[2], tensorboard=True)
    res = train(cfg)
    log = read_log(tmp_path / "run")
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert all(set(LOG_FIELDS) <= set(r) for r in log)
    assert [r["tokens"] for r in log] == [k * 4 * 32 for k in range(1, 7)] and [r["samples"] for r in log] == [
        4 * k for k in range(1, 7)
    ]
    assert all(b > a for a, b in zip([0] + [r["bytes"] for r in log], [r["bytes"] for r in log]))
    assert all(r["loss"] > 0 and r["grad_norm"] > 0 and not r["skipped"] and r["corpus"] == "a" for r in log)
    assert log[0]["update_cos"] is None and all(-1 <= r["update_cos"] <= 1 for r in log[1:])
    assert log[-1]["data_state"]["rows"] == 24 and log[-1]["peak_mem_bytes"] > 0 and log[-1]["mfu"] > 0
    assert [r["lr"] for r in log] == [1e-3 * lr_multiplier(k, 6, "cosine", 2, 0, 0.1) for k in range(1, 7)]
    # keep_last=2 plus the tagged step 2
    assert [p.name for p in list_checkpoints(tmp_path / "run/checkpoints")] == [
        "step0000002",
        "step0000004",
        "step0000006",
    ]
    assert res.last_checkpoint.name == "step0000006" and res.step == 6
    assert list((tmp_path / "run/tb").iterdir())
    # the final export (and any checkpoint) is a plain HF model dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(res.export_dir)
    assert len(AutoTokenizer.from_pretrained(res.export_dir)) == 300
    assert_same_weights(res.export_dir, res.last_checkpoint)
    out = export_checkpoint(tmp_path / "run/checkpoints/step0000002", tmp_path / "exp2")
    assert not [p for p in out.iterdir() if p.suffix == ".pt" or p.name == "trainer_state.json"]  # HF files only
    assert load_model(out).config.vocab_size == model.config.vocab_size == 300
    with pytest.raises(FileExistsError):
        train(cfg)  # an out_dir with checkpoints needs resume=True
    from warmstart.train.__main__ import main

    assert main(["--export", str(tmp_path / "run/checkpoints/step0000004"), "--out", str(tmp_path / "exp4")]) == 0
    assert_same_weights(tmp_path / "exp4", tmp_path / "run/checkpoints/step0000004")


def test_benchmark_overhead_report(assets, tmp_path):
    """The report's contract only: timings on a shared CPU say nothing (speed ratios belong in benchmarks)."""
    from warmstart.train.bench import benchmark_overhead

    cfg = TrainConfig(**make_cfg(assets, tmp_path / "b"))
    for steps, warmup in ((8, 8), (10, 4)):  # steps must be a larger multiple of warmup
        with pytest.raises(ValueError, match="multiple of warmup"):
            benchmark_overhead(cfg, steps=steps, warmup=warmup)
    out = benchmark_overhead(cfg, steps=8, warmup=4)
    assert out["ratio"] == out["trainer_tokens_per_s"] / out["bare_tokens_per_s"]
    assert (out["steps"], out["warmup"], out["device"], out["torch"]) == (8, 4, "cpu", torch.__version__)
    assert not (tmp_path / "b").exists()  # both runs go to a temp dir, not to the config's out_dir


def test_resume_in_process_is_exact(assets, tmp_path):
    """Constant LR so a 4-step run resumed to 8 steps equals a straight 8-step run (no crash involved)."""
    kw = dict(lr_schedule="constant", checkpoint_every=4, masked_share=0.3, doc_mask=True)
    train(make_cfg(assets, tmp_path / "ref", **kw))
    train(make_cfg(assets, tmp_path / "res", **kw, steps=4))
    train(make_cfg(assets, tmp_path / "res", **kw), resume=True)
    assert_same_weights(tmp_path / "ref/final", tmp_path / "res/final")
    keys = ("step", "loss", "lr", "grad_norm", "tokens", "bytes", "data_state", "masked_rows")
    assert [[r[k] for k in keys] for r in read_log(tmp_path / "res")] == [
        [r[k] for k in keys] for r in read_log(tmp_path / "ref")
    ]


def test_batch_ramp_in_trainer(assets, tmp_path):
    # micro_batch 2 x grad_accum 4 = 8 rows at the end; ramp from 2 by 2 over 12 samples (3 increments of 4 samples)
    cfg = make_cfg(
        assets,
        tmp_path / "r",
        micro_batch=2,
        grad_accum=4,
        steps=6,
        batch_ramp={"start": 2, "increment": 2, "samples": 12},
    )
    train(cfg)
    log = read_log(tmp_path / "r")
    assert [r["batch_rows"] for r in log] == [2, 2, 4, 6, 8, 8]
    assert [r["samples"] for r in log] == [2, 4, 8, 14, 22, 30]


@pytest.mark.parametrize("how", ["train_only", "freeze"])
def test_freeze_leaves_frozen_params_bit_identical(assets, tmp_path, how):
    kw = {"train_only": ["embed_tokens", "lm_head"]} if how == "train_only" else {"freeze": [r"layers\.0\."]}
    res = train(make_cfg(assets, tmp_path / how, steps=3, **kw))
    init = ModelSpec(**SPEC, vocab_size=300).build().state_dict()
    final = weights(res.export_dir)
    frozen = (
        [k for k in final if not ("embed_tokens" in k or "lm_head" in k)]
        if how == "train_only"
        else [k for k in final if ".layers.0." in k]
    )
    assert frozen
    for k in final:
        assert torch.equal(final[k], init[k]) == (k in frozen), k


def test_nan_loss_is_skipped_and_logged(assets, tmp_path):
    res = train(make_cfg(assets, tmp_path / "nan", steps=6, inject_nan_steps=[3]))
    log = read_log(tmp_path / "nan")
    bad = [r for r in log if r["skipped"]]
    assert [r["step"] for r in bad] == [3] and bad[0]["loss"] is None
    assert res.step == 6 and res.skipped_steps == [3] and res.rollbacks == 0
    assert all(r["loss"] is not None for r in log if r["step"] != 3)


def test_repeated_nan_rolls_back_to_last_checkpoint(assets, tmp_path):
    res = train(
        make_cfg(assets, tmp_path / "rb", steps=9, checkpoint_every=2, inject_nan_steps=[5, 6, 7], max_bad_steps=3)
    )
    log = read_log(tmp_path / "rb")
    assert [r["step"] for r in log if r["skipped"]] == [5, 6, 7]
    assert [r["rollback_to"] for r in log if r["rollback_to"]] == ["step0000006"]  # saved after the skipped step 6
    assert res.rollbacks == 1 and res.step == 9 and log[-1]["loss"] is not None


def test_trainer_doc_mask_and_masked_rows_attention(assets, tmp_path):
    """Through the trainer's own inputs: documents never see each other; masked rows are bidirectional inside one."""
    tr = Trainer(TrainConfig(**make_cfg(assets, tmp_path / "m", doc_mask=True, masked_share=0.5)))
    batch = tr.data.next_rows(32, step=1)
    inputs, labels, masked = hybrid_batch(batch.input_ids, batch.doc_ids, 1, 0, 0.5, 0.15, 3, tr.mask_id)
    tr.model.eval()
    for flag in (True, False):  # a masked row and a causal row, each holding at least two documents
        r = next(i for i in range(32) if bool(masked[i]) == flag and int(batch.doc_ids[i].max()) >= 1)
        sub = batch.select([r])
        kw = tr._model_inputs(sub, labels[[r]], masked[[r]], inputs[[r]])
        assert ("attention_mask" in kw) == flag and kw["use_cache"] is False
        if flag:
            assert torch.equal(kw["attention_mask"].cpu(), document_attention_mask(sub.doc_ids, True))
        first_doc = sub.doc_ids[0] == 0
        altered = dict(kw, input_ids=kw["input_ids"].clone())
        altered["input_ids"][0, first_doc] = 7
        with torch.no_grad():
            a, b = tr.model(**kw).logits[0], tr.model(**altered).logits[0]
        torch.testing.assert_close(a[~first_doc], b[~first_doc], rtol=0, atol=1e-6)  # other documents: unchanged
        assert not torch.allclose(a[first_doc], b[first_doc])
        # inside the last document: does its first position see its last token? only in masked rows
        last = torch.nonzero(sub.doc_ids[0] == sub.doc_ids[0].max())[:, 0]
        if len(last) >= 2:
            later = dict(kw, input_ids=kw["input_ids"].clone())
            later["input_ids"][0, last[-1]] = 8 if int(later["input_ids"][0, last[-1]]) != 8 else 9
            with torch.no_grad():
                changed = not torch.allclose(tr.model(**later).logits[0, last[0]], a[last[0]])
            assert changed == flag


def test_hot_swap_in_trainer(assets, tmp_path):
    cfg = make_cfg(
        assets,
        tmp_path / "hs",
        steps=5,
        train_files={"a": [str(assets / "a.jsonl")], "b": [str(assets / "b.jsonl")]},
        corpus_schedule=[(0, "a"), (3, "b")],
    )
    train(cfg)
    log = read_log(tmp_path / "hs")
    assert [r["corpus"] for r in log] == ["a", "a", "b", "b", "b"]
    assert log[-1]["data_state"]["streams"]["b"]["index"] > 0 and log[1]["data_state"]["streams"]["b"]["index"] == 0


def test_save_model_is_atomic_and_loadable(assets, tmp_path):
    from transformers import AutoTokenizer

    from warmstart.model import atomic_dir, build_model, save_model

    tok = AutoTokenizer.from_pretrained(assets / "tok")
    for seed in (0, 1):  # the second save replaces the first
        model = build_model("mistral", vocab_size=300, **TINY_LLAMA, max_pos=64, tie_embeddings=True, seed=seed)
        save_model(model, tok, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert type(loaded).__name__ == "MistralForCausalLM" and loaded.config.tie_word_embeddings
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp dirs left behind
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "m") as tmp:
        (tmp / "partial").write_text("x")
        raise RuntimeError("crash while writing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"] and not (tmp_path / "m/partial").exists()


def test_mistral_tied_wsd_run(assets, tmp_path):
    spec = dict(SPEC, arch="mistral", tie_embeddings=True)
    res = train(
        make_cfg(assets, tmp_path / "mi", model=spec, steps=3, max_grad_norm=None, lr_schedule="wsd", decay_steps=1)
    )
    assert res.step == 3 and type(load_model(res.export_dir)).__name__ == "MistralForCausalLM"
    assert [r["lr"] for r in read_log(tmp_path / "mi")] == [5e-4, 1e-3, 1e-4]


def test_lion_optimizer_runs(assets, tmp_path):
    res = train(make_cfg(assets, tmp_path / "lion", steps=3, optimizer="lion", lr=1e-4, weight_decay=0.0))
    assert res.step == 3 and all(r["loss"] is not None for r in read_log(tmp_path / "lion"))


def test_config_errors_name_the_key(assets, tmp_path):
    with pytest.raises(ValueError, match="seq_len"):
        TrainConfig(**make_cfg(assets, tmp_path, seq_len=1))
    with pytest.raises(ValueError, match="extra"):
        TrainConfig(**make_cfg(assets, tmp_path, bogus=1))
    with pytest.raises(ValueError, match="corpus_schedule or mix"):
        TrainConfig(**make_cfg(assets, tmp_path, train_files={"a": ["x"], "b": ["y"]}))


# ---------------------------------------------------------------- processes


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WARMSTART_TEST_", "ACCELERATE_"))}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", **extra)
    return env


def _train_cmd(cfg_path, resume=False):
    return [sys.executable, "-m", "warmstart.train", "--config", str(cfg_path)] + (["--resume"] if resume else [])


def _wait_for(pred, proc, timeout=120.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    return False


@pytest.mark.slow
def test_sigkill_twice_then_resume_is_bit_identical(assets, tmp_path):
    kw = dict(steps=16, checkpoint_every=4, keep_last=2, masked_share=0.3, doc_mask=True)
    for name in ("ref", "crash"):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(make_cfg(assets, tmp_path / name, **kw)))
    subprocess.run(_train_cmd(tmp_path / "ref.yaml"), env=_env(), check=True, capture_output=True)
    crash = tmp_path / "crash"

    # kill 1: between checkpoints (steps slowed down so the kill lands mid-run)
    p = subprocess.Popen(
        _train_cmd(tmp_path / "crash.yaml"),
        env=_env(WARMSTART_TEST_SLEEP_PER_STEP="0.1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log = crash / "log.jsonl"
    ok = _wait_for(lambda: log.exists() and any(json.loads(x)["step"] >= 6 for x in log.read_text().splitlines()), p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert ok, "first run never reached step 6"
    first = latest_checkpoint(crash / "checkpoints")
    assert first is not None and int(first.name[4:]) < 16

    # kill 2: inside a checkpoint write (the temp dir holds the weights, trainer_state.json not yet written)
    t_start = time.time()
    p = subprocess.Popen(
        _train_cmd(tmp_path / "crash.yaml", resume=True),
        env=_env(WARMSTART_TEST_SLEEP_IN_CHECKPOINT="5"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def tmp_ckpt():  # a temp checkpoint of *this* process (not a leftover of the first kill) with weights written
        found = []
        for d in (crash / "checkpoints").glob(".tmp-step*"):
            with contextlib.suppress(FileNotFoundError):
                if (d / "model.safetensors").stat().st_mtime > t_start:
                    found.append(d)
        return found

    ok = _wait_for(lambda: bool(tmp_ckpt()), p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert ok, "resumed run never started a checkpoint"
    broken = tmp_ckpt()[0]
    assert not (broken / "trainer_state.json").exists()
    assert latest_checkpoint(crash / "checkpoints") == first  # the half-written one is not "latest"

    # resume to the end: same weights, bit for bit, and the same log values
    subprocess.run(_train_cmd(tmp_path / "crash.yaml", resume=True), env=_env(), check=True, capture_output=True)
    assert not broken.exists()
    assert_same_weights(tmp_path / "ref/final", crash / "final")
    keys = ("step", "loss", "lr", "grad_norm", "tokens", "bytes", "data_state", "masked_rows")
    assert [[r[k] for k in keys] for r in read_log(crash)] == [[r[k] for k in keys] for r in read_log(tmp_path / "ref")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_vs_two_processes(assets, tmp_path, kw: dict) -> tuple[list[dict], list[dict]]:
    """The logs of one process at micro_batch 4 and of two (accelerate launch, gloo) at micro_batch 2.

    On failure the message keeps every rank's error lines, not only the stderr tail."""
    train(make_cfg(assets, tmp_path / "one", **kw))
    cfg = tmp_path / "two.yaml"
    cfg.write_text(yaml.safe_dump(make_cfg(assets, tmp_path / "two", micro_batch=2, **kw)))
    r = subprocess.run(
        launch_command(cfg, 2, port=_free_port()), env=_env(), capture_output=True, text=True, timeout=300
    )
    ranks = "\n".join(line for line in r.stderr.splitlines() if line.startswith("[rank") and "Error" in line)
    assert r.returncode == 0, ranks + "\n" + r.stderr[-3000:]
    return read_log(tmp_path / "one"), read_log(tmp_path / "two")


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one(assets, tmp_path):
    """accelerate launch, 2 processes x micro_batch 2 (gloo) vs 1 process x micro_batch 4: same global batch.

    accelerate 1.x's ``--cpu`` flag starts a single process (its multi-CPU
    mode needs MPI); ``--multi_gpu`` on a machine without CUDA goes through
    torchrun and accelerate selects MULTI_CPU with the gloo backend.

    Tolerance: |loss difference| <= 1e-4 at every step (observed ~1e-6: only
    the gradient all-reduce order differs).
    """
    kw = dict(steps=6, warmup_steps=1, doc_mask=True)
    one, two = _one_vs_two_processes(assets, tmp_path, kw)
    assert [x["step"] for x in two] == list(range(1, 7))
    assert [x["tokens"] for x in two] == [x["tokens"] for x in one] and [x["bytes"] for x in two] == [
        x["bytes"] for x in one
    ]
    for a, b in zip(one, two):
        assert abs(a["loss"] - b["loss"]) <= 1e-4, (a["step"], a["loss"], b["loss"])
        assert abs(a["grad_norm"] - b["grad_norm"]) <= 1e-3 * a["grad_norm"]
    assert one[-1]["loss"] < one[0]["loss"]


@pytest.mark.slow
def test_masked_share_learns_masked_prediction(assets, tmp_path):
    """Bidirectional probe: after 200 equal steps, a 50%-masked-share model predicts masked tokens of held-out text
    better (masked-token loss lower by > 0.1 nat; observed ~0.35) than a causal-only one."""
    from transformers import AutoTokenizer

    from warmstart.data.stream import build_stream

    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text("".join(json.dumps({"text": t}) + "\n" for t in _texts(WORDS_A, 40, seed=7)))
    probe = TrainConfig(**make_cfg(assets, tmp_path / "probe", train_files={"h": [str(held_out)]}, shuffle=False))
    batch = build_stream(probe, AutoTokenizer.from_pretrained(assets / "tok")).next_rows(32, step=1)
    inputs, labels, masked = hybrid_batch(batch.input_ids, batch.doc_ids, 1, 99, 1.0, 0.15, 3, mask_id=4)
    losses = {}
    for share in (0.0, 0.5):
        kw = dict(steps=200, lr=3e-3, warmup_steps=5, doc_mask=True, log_every=200, masked_share=share)
        model = load_model(train(make_cfg(assets, tmp_path / f"s{share}", **kw)).export_dir).eval()
        with torch.no_grad():
            out = model(
                input_ids=inputs,
                labels=labels,
                attention_mask=document_attention_mask(batch.doc_ids, masked),
                position_ids=batch.position_ids,
                use_cache=False,
            )
        losses[share] = float(out.loss)
    assert losses[0.5] < losses[0.0] - 0.1, losses


# ---------------------------------------------------------------- loss-spike mitigation (PaLM: roll back, skip batches)

SPIKE_DET = {"level_window": 10, "min_level": 5, "window": 100, "min_scale": 30, "z_pair": None}


def _spike_cfg(assets, out_dir, mitigate: bool, **kw) -> dict:
    """120 steps, batches 95-104 of the stream are random tokens (a corrupted stretch near the end)."""
    base = dict(
        micro_batch=8,
        steps=120,
        lr=2e-3,
        lr_schedule="constant",
        checkpoint_every=5,
        keep_last=3,
        inject_bad_batches=list(range(95, 105)),
    )
    if mitigate:
        base.update(spike_mitigation=True, spike_skip_batches=12, spike_detector=SPIKE_DET)
    return make_cfg(assets, out_dir, **base | kw)


def _eval_loss(assets, model_dir) -> float:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(assets / "tok")
    texts = [json.loads(line)["text"] for line in (assets / "a.jsonl").read_text().splitlines()[:32]]
    ids = [x[:32] for x in tok(texts)["input_ids"] if len(x) >= 32]
    model = load_model(model_dir).eval()
    with torch.no_grad():
        x = torch.tensor(ids)
        return float(model(input_ids=x, labels=x).loss)


def test_spike_mitigation_rolls_back_skips_and_ends_lower(assets, tmp_path):
    off = train(_spike_cfg(assets, tmp_path / "off", False))
    on = train(_spike_cfg(assets, tmp_path / "on", True))
    log_off, log_on = read_log(tmp_path / "off"), read_log(tmp_path / "on")
    # without mitigation the corrupted stretch is a 10-step spike
    assert min(r["loss"] for r in log_off if 95 <= r["step"] <= 104) > 2 * log_off[93]["loss"]
    # with it: the detector fires on the first bad batch, the run goes back to step 90 and skips 12 batches
    events = [r for r in log_on if r.get("spike_start")]
    assert [(r["step"], r["spike_start"], r["rollback_to"], r["skipped_batches"]) for r in events] == [
        (95, 95, "step0000090", 12)
    ]
    assert on.spike_rollbacks == 1 and on.skipped_batches == 12 and off.spike_rollbacks == 0
    assert [r["step"] for r in log_on] == list(range(1, 121))  # one record per step, the rollback step included
    assert [r["loss"] for r in log_on[:94]] == [r["loss"] for r in log_off[:94]]  # identical before the spike
    assert max(r["loss"] for r in log_on[95:]) < 1.3 * log_on[93]["loss"]  # no bad batch was trained on again
    # recovered, and better off at the end than the unmitigated run
    tail = lambda log: sum(r["loss"] for r in log[-10:]) / 10  # noqa: E731
    assert tail(log_on) < tail(log_off)
    assert _eval_loss(assets, on.export_dir) < _eval_loss(assets, off.export_dir)


def test_spike_mitigation_resume_is_exact(assets, tmp_path):
    """The detector state and the count of skipped batches are checkpointed: a resumed run equals a straight one."""
    train(_spike_cfg(assets, tmp_path / "ref", True, steps=110))
    train(_spike_cfg(assets, tmp_path / "res", True, steps=100))
    train(_spike_cfg(assets, tmp_path / "res", True, steps=110), resume=True)
    assert_same_weights(tmp_path / "ref/final", tmp_path / "res/final")
    keys = ("step", "loss", "grad_norm", "data_state", "rollback_to")
    assert [[r.get(k) for k in keys] for r in read_log(tmp_path / "res")] == [
        [r.get(k) for k in keys] for r in read_log(tmp_path / "ref")
    ]


def test_spike_mitigation_config_errors(assets, tmp_path):
    with pytest.raises(ValueError, match="checkpoint_every"):
        TrainConfig(**make_cfg(assets, tmp_path / "x", spike_mitigation=True))
    with pytest.raises(ValueError, match="spike_detector"):
        TrainConfig(
            **make_cfg(
                assets, tmp_path / "x", spike_mitigation=True, checkpoint_every=5, spike_detector={"z_enterr": 3}
            )
        )
    cfg = TrainConfig(**make_cfg(assets, tmp_path / "x"))
    assert not cfg.spike_mitigation and cfg.spike_skip_batches == 0  # off by default


def test_fused_kernels_flag_keeps_the_cpu_run_equivalent(assets, tmp_path):
    """`fused_kernels: true` on CPU goes through warmstart.kernels (chunked linear-CE fallback, no Triton):
    the losses match the plain run, and what was patched is recorded beside the run."""
    from warmstart.kernels import KernelNotApplied

    plain = train(make_cfg(assets, tmp_path / "plain", steps=4))
    with pytest.warns(KernelNotApplied) as caught:  # no Triton on CPU: said in the run log, never silent
        fused = train(make_cfg(assets, tmp_path / "fused", steps=4, fused_kernels=True, attn_implementation="auto"))
    assert {str(w.message).split()[1] for w in caught} == {"rms_norm", "swiglu", "rope"}
    a, b = read_log(plain.out_dir), read_log(fused.out_dir)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-4), (ra["step"], ra["loss"], rb["loss"])
    kernels = json.loads((fused.out_dir / "kernels.json").read_text())
    assert kernels["attention"] == "sdpa"  # CPU: FlexAttention has no CPU backward; dispatch picks SDPA
    assert kernels["fused_linear_cross_entropy"] == "torch-chunked"
    assert all(kernels[k].startswith("skipped: no Triton on this device") for k in ("rms_norm", "swiglu", "rope"))
    assert not (plain.out_dir / "kernels.json").exists()


@pytest.mark.slow
def test_ddp_signals_and_distillation_match_one_process(assets, tmp_path):
    """Signals, z-loss and a teacher under DDP (2 gloo processes x micro_batch 2 vs 1 x 4): the signals are
    reduced over processes (log Z over every row, the attention probe on the global batch's first row), so
    they equal the one-process values; the teacher runs beside each process's student."""
    from transformers import AutoTokenizer

    from warmstart.model import save_model

    save_model(
        ModelSpec(**SPEC, vocab_size=300).model_copy(update={"seed": 1}).build(),
        AutoTokenizer.from_pretrained(assets / "tok"),
        tmp_path / "teacher",
    )
    kw = dict(
        steps=4,
        warmup_steps=1,
        doc_mask=True,
        signals_every=2,
        z_loss=1e-3,
        teacher_path=str(tmp_path / "teacher"),
        kd_ce_share=0.5,
        kd_temperature=2.0,
    )
    one, two = _one_vs_two_processes(assets, tmp_path, kw)
    assert [x["step"] for x in two] == [1, 2, 3, 4]
    for a, b in zip(one, two):
        signals = a["step"] % 2 == 0
        assert all((key in a) == (key in b) == signals for key in ("log_z_mean", "attn_logit_max", "update_ratio"))
        for key in ("loss", "ce_loss", "kd_loss") + (("log_z_mean", "log_z_max") if signals else ()):
            assert abs(a[key] - b[key]) <= 1e-4, (key, a, b)
        for key in ("attn_logit_max", "update_ratio") if signals else ():
            assert b[key] == pytest.approx(a[key], rel=1e-4), (key, a, b)


def test_activation_checkpointing_recomputes_the_same_training(assets, tmp_path):
    # each decoder layer keeps its input and recomputes its activations in backward: the same updates
    plain = train(TrainConfig(**make_cfg(assets, tmp_path / "plain", steps=4)))
    ckpt = train(TrainConfig(**make_cfg(assets, tmp_path / "ckpt", steps=4, activation_checkpointing=True)))
    la, lb = read_log(tmp_path / "plain"), read_log(tmp_path / "ckpt")
    assert [r["loss"] for r in lb] == pytest.approx([r["loss"] for r in la], abs=1e-6)
    wa, wb = weights(plain.export_dir), weights(ckpt.export_dir)
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-6
    tr = Trainer(TrainConfig(**make_cfg(assets, tmp_path / "flag", steps=2, activation_checkpointing=True)))
    assert tr.unwrapped.is_activation_checkpointing and tr.unwrapped.config.use_cache is False
