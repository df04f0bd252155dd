"""The trainer's checkpoints: write, find, load, prune and export them.

A checkpoint (``<out_dir>/checkpoints/step0000500/``) is built in a temp dir
``.tmp-step0000500`` and renamed into place, so a crash never leaves a broken
checkpoint; ``latest`` is the highest-numbered complete dir (one with
``trainer_state.json``, which is written last). Each holds a Hugging Face
model (``config.json``, ``model.safetensors``, tokenizer), ``scheduler.pt``,
``rng_state_<rank>.pt`` (python, numpy, torch, cuda) and ``trainer_state.json``
(step, samples, tokens, bytes, data stream position, ...), plus the optimizer:

* one process or DDP: ``optimizer.pt``;
* FSDP (FSDP2) or DeepSpeed: the sharded model and optimizer states in
  accelerate's own format (``accelerate/``, written by
  ``Accelerator.save_state``; with ``fsdp_state_dict_type:
  SHARDED_STATE_DICT`` each rank writes its shards through
  ``torch.distributed.checkpoint``). The HF weights beside them are the full
  state dict gathered on the main process (``Accelerator.get_state_dict``),
  so every checkpoint is also a plain HF model dir.

Everything is loaded back with ``weights_only=True`` (accelerate's own loader
for ``accelerate/``).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from warmstart.io import atomic_dir

CKPT_RE = re.compile(r"^step(\d+)$")
TRAINER_FILES = ("optimizer.pt", "scheduler.pt", "trainer_state.json")
SHARDED_DIR = "accelerate"  # sharded model/optimizer states (FSDP, DeepSpeed), accelerate's format


def checkpoint_step(ckpt: str | os.PathLike) -> int:
    """The update count a checkpoint dir ``stepNNNNNNN`` was saved at."""
    return int(CKPT_RE.match(Path(ckpt).name).group(1))


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Complete checkpoint dirs under ``root``, oldest first (temp dirs are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if CKPT_RE.match(p.name) and (p / "trainer_state.json").is_file()]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    ckpts = list_checkpoints(root)
    return ckpts[-1] if ckpts else None


def checkpoint_before(root: str | os.PathLike, step: int) -> Path | None:
    """The latest complete checkpoint saved before update ``step``."""
    ckpts = [p for p in list_checkpoints(root) if checkpoint_step(p) < step]
    return ckpts[-1] if ckpts else None


def read_trainer_state(ckpt: str | os.PathLike) -> dict:
    return json.loads((Path(ckpt) / "trainer_state.json").read_text())


def export_checkpoint(ckpt_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Copy the Hugging Face part of a checkpoint (config, weights, tokenizer) to ``out_dir``, atomically.

    The weights are full ones for sharded runs too (gathered when the checkpoint was written);
    the sharded states (``accelerate/``), optimizer, scheduler, RNG and trainer state stay behind.
    """
    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / "config.json").is_file():
        raise FileNotFoundError(f"{ckpt_dir} is not a checkpoint (no config.json)")
    with atomic_dir(out_dir) as tmp:
        for f in ckpt_dir.iterdir():
            if f.is_file() and f.name not in TRAINER_FILES and not f.name.startswith("rng_state_"):
                shutil.copy2(f, tmp / f.name)
    return Path(out_dir)


def rng_state() -> dict:
    """This process's python, numpy, torch (and cuda) RNG states, as tensors and plain values (weights_only-safe)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def restore_rng(ckpt: Path, rank: int) -> None:
    """Put back the RNG state rank ``rank`` had when ``ckpt`` was written (if it wrote one)."""
    path = ckpt / f"rng_state_{rank}.pt"
    if path.exists():
        set_rng_state(torch.load(path, weights_only=True))


def pause_for_tests(var: str) -> None:
    """Test-only hooks (crash-safety tests): sleep ``$var`` seconds if set."""
    if os.environ.get(var):
        time.sleep(float(os.environ[var]))


def load_weights(model: torch.nn.Module, ckpt: Path) -> None:
    """Load a checkpoint's safetensors weights (one file or an index of shards) into an unwrapped HF model."""
    from safetensors.torch import load_file

    index = ckpt / "model.safetensors.index.json"
    files = (
        sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    )
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(ckpt / f))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or {}) if model.config.tie_word_embeddings else set()
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"checkpoint {ckpt} does not match the model: missing {missing}, unexpected {unexpected}")


def is_sharded(acc: Any) -> bool:
    """Whether the model and optimizer states are sharded across processes (FSDP, DeepSpeed)."""
    return acc.distributed_type.value in ("FSDP", "DEEPSPEED")


def remove_partial_checkpoints(root: Path) -> None:
    """Delete the leftovers of a crash mid-checkpoint: temp dirs being written, old copies being replaced."""
    for junk in [*root.glob(".tmp-*"), *root.glob(".old-*")]:
        shutil.rmtree(junk, ignore_errors=True)


def prune_checkpoints(root: Path, keep_last: int) -> None:
    """Delete all but the ``keep_last`` latest untagged checkpoints."""
    plain = [p for p in list_checkpoints(root) if not read_trainer_state(p)["tagged"]]
    for p in plain[:-keep_last]:
        shutil.rmtree(p, ignore_errors=True)


def save_checkpoint(
    acc: Any,
    model: torch.nn.Module,
    unwrapped: Any,
    optimizer: Any,
    scheduler: Any,
    tokenizer: Any,
    root: Path,
    step: int,
    state: dict,
    keep_last: int,
) -> Path:
    """Write checkpoint ``step`` under ``root`` (collective: every process calls it), then prune.

    ``model`` is the prepared (wrapped) model, ``unwrapped`` the HF model; ``state`` is the trainer's
    ``trainer_state.json`` content (used on the main process).
    """
    name = f"step{step:07d}"
    final, tmp = root / name, root / f".tmp-{name}"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    torch.save(rng_state(), tmp / f"rng_state_{acc.process_index}.pt")
    sharded = is_sharded(acc)
    state_dict = acc.get_state_dict(model) if sharded else None  # collective when sharded: full weights on main
    if sharded:  # each rank writes its model and optimizer shards
        acc.save_state(str(tmp / SHARDED_DIR))
    # every rank's files (its RNG state; with sharding its shards and accelerate's RNG file) are written before
    # the main process renames the directory below (without this barrier a slow rank wrote into a directory that
    # had just been renamed: seen under CPU contention in the two-process test)
    acc.wait_for_everyone()
    if acc.is_main_process:
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Writing model shards" bar at every checkpoint
        try:
            unwrapped.save_pretrained(tmp, state_dict=state_dict)
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        tokenizer.save_pretrained(tmp)
        pause_for_tests("WARMSTART_TEST_SLEEP_IN_CHECKPOINT")
        if not sharded:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        pause_for_tests("WARMSTART_TEST_SLEEP_IN_CHECKPOINT")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))  # written last
        old = final.with_name(f".old-{name}")
        if final.exists():  # the same step saved again: move the old copy aside, never delete it first
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        prune_checkpoints(root, keep_last)
    acc.wait_for_everyone()
    return final


def load_checkpoint(
    acc: Any, unwrapped: Any, optimizer: Any, scheduler: Any, ckpt: Path, keep_rng: bool = False
) -> dict:
    """Restore weights, optimizer and scheduler from ``ckpt``; returns its trainer state.

    Sharded checkpoints go through ``Accelerator.load_state`` (collective), which also restores
    accelerate's RNG snapshot; with ``keep_rng`` the RNG stays as it was (as for unsharded ones).
    This process's own RNG file is restored by :func:`restore_rng`.
    """
    if (ckpt / SHARDED_DIR).is_dir():
        before = rng_state() if keep_rng else None
        acc.load_state(str(ckpt / SHARDED_DIR))
        if before is not None:
            set_rng_state(before)
    else:
        load_weights(unwrapped, ckpt)
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))
    return read_trainer_state(ckpt)
