"""Distributed setup of a training run: the ``Accelerator`` and the ``accelerate launch`` command.

Multi-GPU, FSDP2 and multi-node runs are ``accelerate launch`` with one of the
configs in ``configs/accelerate/``; nothing here launches processes itself.
"""

from __future__ import annotations

import os
import sys

import torch


def make_accelerator(mixed_precision: str):
    """The run's ``Accelerator``; the distributed setup comes from ``accelerate launch`` (its config or flags).

    accelerate 1.x never selects FSDP on a machine without CUDA: its state
    only turns MULTI_GPU-like setups into FSDP, so under an FSDP config a CPU
    run silently becomes DDP (MULTI_CPU). FSDP2 itself (``fully_shard``) runs
    on CPU over gloo, and so do accelerate's FSDP2 prepare, state-dict and
    save/load paths; here such a run is switched to FSDP with the plugin
    that accelerate built from the launcher's ``FSDP_*`` environment.
    """
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    acc = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=mixed_precision)
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if fsdp and acc.distributed_type == DistributedType.MULTI_CPU:
        plugin = FullyShardedDataParallelPlugin()
        if mixed_precision != "no":
            plugin.set_mixed_precision(mixed_precision)
        for shared in (PartialState._shared_state, AcceleratorState._shared_state):
            shared["distributed_type"] = DistributedType.FSDP
        AcceleratorState._shared_state["fsdp_plugin"] = plugin
    return acc


def launch_command(
    config_path: str | os.PathLike,
    num_processes: int,
    port: int | None = None,
    resume: bool = False,
    accelerate_config: str | os.PathLike | None = None,
) -> list[str]:
    """``accelerate launch`` of this module on ``num_processes`` processes of one machine.

    ``--multi_gpu`` is right on CPU too: accelerate 1.x's ``--cpu`` starts a
    single process (its multi-CPU mode needs MPI), while ``--multi_gpu`` on a
    machine without CUDA goes through torchrun and accelerate selects
    MULTI_CPU with gloo. Precision and compilation come from the run config,
    not from the launcher. With ``accelerate_config`` (one of
    ``configs/accelerate/*.yaml``: FSDP2, several machines) the topology comes
    from that file, and ``num_processes`` overrides its count.
    """
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes)]
    if accelerate_config is not None:
        cmd += ["--config_file", str(accelerate_config)]
    else:
        cmd += ["--num_machines", "1", "--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if port is not None:
        cmd += ["--main_process_port", str(port)]
    return cmd + ["-m", "warmstart.train", "--config", str(config_path)] + (["--resume"] if resume else [])
