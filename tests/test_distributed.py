"""The distributed path: the shipped accelerate configs, and FSDP2 on CPU (two gloo processes).

Every ``configs/accelerate/*.yaml`` is read by accelerate's own config
loader and launcher argument handling, and the FSDP plugin accelerate builds
from the launcher's environment is checked (version, sharding, state-dict
type, and auto-wrap of exactly the decoder layers of a tiny Llama and a tiny
Mistral).

The ``slow`` test runs the trainer under FSDP2 (``fully_shard``) with two
CPU processes through ``accelerate launch`` and the shipped CPU config:
three steps, a sharded checkpoint, a resume to six steps, compared with one
unsharded process. accelerate 1.15 does not select FSDP on a machine
without CUDA (under an FSDP config it builds DDP); ``warmstart.train.distributed.make_accelerator``
switches such a run to FSDP, and the test checks that the parameters were
really sharded (the checkpoint holds accelerate's sharded states and no
``optimizer.pt``).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

from test_train import _env, _free_port, assets, make_cfg, read_log, weights  # noqa: F401  (assets: a fixture)
from warmstart.model import ModelSpec
from warmstart.train.checkpoint import SHARDED_DIR, export_checkpoint, list_checkpoints, read_trainer_state
from warmstart.train.distributed import launch_command
from warmstart.train.loop import train

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs/accelerate").glob("*.yaml"))
# what each shipped config is for: distributed type, processes in all, machines, precision
INTENDED = {
    "single_gpu.yaml": ("NO", 1, 1, "bf16"),
    "fsdp2_8gpu.yaml": ("FSDP", 8, 1, "bf16"),
    "multinode_fsdp2.yaml": ("FSDP", 16, 2, "bf16"),
    "cpu_fsdp2_test.yaml": ("FSDP", 2, 1, "no"),
}
TINY = dict(hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64, max_pos=64, vocab_size=300, seed=0)


def _launcher(path: Path):
    """accelerate launch's own reading of a config file: its args, and the environment of the processes."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env, prepare_simple_launcher_cmd_env

    args = launch_command_parser().parse_args(
        ["--config_file", str(path), "-m", "warmstart.train", "--config", "run.yaml"]
    )
    args, _, _ = _validate_launch_command(args)
    if args.use_fsdp or args.multi_gpu:
        return args, prepare_multi_gpu_env(args)
    return args, prepare_simple_launcher_cmd_env(args)[1]


def test_every_shipped_config_is_covered():
    assert sorted(p.name for p in CONFIGS) == sorted(INTENDED)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_accelerate_config_parses_as_intended(path, monkeypatch):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from torch.distributed.fsdp import CPUOffloadPolicy, StateDictType

    dist, procs, machines, precision = INTENDED[path.name]
    cfg = load_config_from_file(str(path))
    assert (cfg.distributed_type, cfg.num_processes, cfg.num_machines) == (DistributedType(dist), procs, machines)
    assert cfg.mixed_precision == precision and cfg.use_cpu is False  # use_cpu would start one process only
    args, env = _launcher(path)
    assert (args.num_processes, args.num_machines, args.machine_rank) == (procs, machines, 0)
    assert env["ACCELERATE_MIXED_PRECISION"] == precision
    if machines > 1:  # the placeholders every machine sets for itself
        assert args.main_process_ip and args.main_process_port
    if dist != "FSDP":
        assert cfg.fsdp_config == {} and "ACCELERATE_USE_FSDP" not in env
        return
    assert args.use_fsdp and env["ACCELERATE_USE_FSDP"] == "true"
    for key, value in env.items():  # the plugin as accelerate builds it inside each process
        if key.startswith("FSDP_"):
            monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True  # FSDP2, full shard
    assert plugin.state_dict_type == StateDictType.SHARDED_STATE_DICT
    assert not isinstance(plugin.cpu_offload, CPUOffloadPolicy)  # parameters stay on the device
    for arch, layer in (("llama", "LlamaDecoderLayer"), ("mistral", "MistralDecoderLayer")):
        model = ModelSpec(arch=arch, **TINY).build()
        policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
        wrapped = [m for m in model.modules() if policy(m)]
        assert wrapped == list(model.model.layers) and {type(m).__name__ for m in wrapped} == {layer}


@pytest.mark.slow
def test_fsdp2_two_cpu_processes_resume_from_shards_matches_one(assets, tmp_path):  # noqa: F811
    """FSDP2 over gloo, 2 processes x micro_batch 2, steps 1-3 then a resume from the sharded checkpoint to step 6,
    against 1 unsharded process x micro_batch 4 for 6 steps (the same global batches).

    Tolerance: final weights within 1e-5 (max abs), losses within 1e-5, gradient norms within 1e-5 relative
    (observed: 4e-7 on the weights, ~5e-7 on the losses; only the reduction order differs). masked_share is
    0: with masked rows the loss is a mean per micro-batch, so it depends on how the batch is split.
    """
    kw = dict(lr_schedule="constant", warmup_steps=1, checkpoint_every=3, doc_mask=True)
    one = train(make_cfg(assets, tmp_path / "one", steps=6, **kw))
    acc_cfg = ROOT / "configs/accelerate/cpu_fsdp2_test.yaml"
    for steps, resume in ((3, False), (6, True)):
        run_cfg = tmp_path / f"fsdp{steps}.yaml"
        run_cfg.write_text(yaml.safe_dump(make_cfg(assets, tmp_path / "fsdp", micro_batch=2, steps=steps, **kw)))
        cmd = launch_command(run_cfg, 2, port=_free_port(), resume=resume, accelerate_config=acc_cfg)
        r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        if not resume:  # the sharded checkpoint the second launch resumes from
            (ckpt,) = list_checkpoints(tmp_path / "fsdp/checkpoints")
            assert ckpt.name == "step0000003" and read_trainer_state(ckpt)["world_size"] == 2
            shards = ckpt / SHARDED_DIR
            assert {p.name for p in shards.glob("*_0")} == {"pytorch_model_fsdp_0", "optimizer_0"}
            assert len(list((shards / "pytorch_model_fsdp_0").glob("*.distcp"))) == 2  # one file per rank
            assert not (ckpt / "optimizer.pt").exists()
            # conversion: the shards merged offline are exactly the full HF weights gathered beside them
            from accelerate.utils import merge_fsdp_weights

            with tempfile.TemporaryDirectory() as merged:
                merge_fsdp_weights(str(shards / "pytorch_model_fsdp_0"), merged, safe_serialization=True)
                full, ours = weights(merged), weights(ckpt)
                assert full.keys() == ours.keys() and all(torch.equal(full[k], ours[k]) for k in full)
    # the export is a plain HF model dir with full weights
    from transformers import AutoModelForCausalLM

    final = tmp_path / "fsdp/final"
    exported = export_checkpoint(tmp_path / "fsdp/checkpoints/step0000006", tmp_path / "exported")
    assert sorted(p.name for p in exported.iterdir()) == sorted(p.name for p in final.iterdir())
    model = AutoModelForCausalLM.from_pretrained(final)
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.architectures == ["LlamaForCausalLM"]
    a, b = weights(one.export_dir), weights(final)
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert diff <= 1e-5, diff
    at3 = weights(tmp_path / "one/checkpoints/step0000003")
    assert max(float((a[k] - at3[k]).abs().max()) for k in a) > 1e-3  # the resumed steps did move the weights
    la, lb = read_log(tmp_path / "one"), read_log(tmp_path / "fsdp")
    assert [r["step"] for r in lb] == list(range(1, 7)) and [r["tokens"] for r in lb] == [r["tokens"] for r in la]
    for ra, rb in zip(la, lb):
        assert abs(ra["loss"] - rb["loss"]) <= 1e-5, (ra["step"], ra["loss"], rb["loss"])
        assert abs(ra["grad_norm"] - rb["grad_norm"]) <= 1e-5 * ra["grad_norm"]
        assert rb["data_state"] == ra["data_state"]
    # the 2-process run stopped after step 3 and resumed is bit for bit the 2-process run that never stopped (each
    # rank reads only its own rows of the global batch; the stream's position is three integers per corpus)
    run_cfg = tmp_path / "straight.yaml"
    run_cfg.write_text(yaml.safe_dump(make_cfg(assets, tmp_path / "straight", micro_batch=2, steps=6, **kw)))
    cmd = launch_command(run_cfg, 2, port=_free_port(), accelerate_config=acc_cfg)
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    c = weights(tmp_path / "straight/final")
    assert c.keys() == b.keys() and all(torch.equal(c[k], b[k]) for k in c)
    assert [x["loss"] for x in read_log(tmp_path / "straight")] == [x["loss"] for x in lb]
