"""The checkpoint side of :class:`~warmstart.train.loop.Trainer`: the methods of :class:`CheckpointMixin`.

What ``trainer_state.json`` records, saving and restoring a checkpoint (the files themselves:
:mod:`warmstart.train.checkpoint`), the rollback after ``max_bad_steps`` non-finite steps in a row and PaLM's
rollback-and-skip after a detected spike.
"""

from __future__ import annotations

from pathlib import Path

from warmstart.train.checkpoint import (
    checkpoint_before,
    latest_checkpoint,
    load_checkpoint,
    read_trainer_state,
    restore_rng,
    save_checkpoint,
)


class CheckpointMixin:
    """The checkpoint methods of :class:`~warmstart.train.loop.Trainer`; they use the state its ``__init__`` sets up."""

    def trainer_state(self) -> dict:
        """What ``trainer_state.json`` records: counters, data position, detector."""
        return {
            "step": self.step,
            "samples": self.samples,
            "tokens": self.tokens,
            "bytes": self.bytes,
            "bad_streak": self.bad_streak,
            "skipped": self.skipped,
            "rollbacks": self.rollbacks,
            "data_state": self.data.state_dict(),
            "tagged": self._is_tagged(self.step),
            "world_size": self.acc.num_processes,
            "spike_rollbacks": self.spike_rollbacks,
            "skipped_batches": self.skipped_batches,
            "detector": self.detector.state_dict() if self.detector is not None else None,
        } | ({"teacher_flops_per_token": self.teacher_flops_per_token} if self.teacher is not None else {})

    def save_checkpoint(self) -> Path:
        return save_checkpoint(
            self.acc,
            self.model,
            self.unwrapped,
            self.optimizer,
            self.scheduler,
            self.tokenizer,
            self.ckpt_root,
            self.step,
            self.trainer_state(),
            self.cfg.keep_last,
        )

    def load_checkpoint(self, ckpt: Path, progress: bool = True) -> None:
        """Restore weights, optimizer and scheduler; with ``progress`` also counters, data position and RNG."""
        state = load_checkpoint(self.acc, self.unwrapped, self.optimizer, self.scheduler, ckpt, keep_rng=not progress)
        if not progress:
            return
        self.step, self.samples, self.tokens, self.bytes = (
            state["step"],
            state["samples"],
            state["tokens"],
            state["bytes"],
        )
        self.bad_streak, self.skipped, self.rollbacks = state["bad_streak"], state["skipped"], state["rollbacks"]
        self.spike_rollbacks, self.skipped_batches = state.get("spike_rollbacks", 0), state.get("skipped_batches", 0)
        if self.detector is not None and state.get("detector") is not None:
            self.detector.load_state_dict(state["detector"])
        self.data.load_state_dict(state["data_state"])
        restore_rng(ckpt, self.acc.process_index)

    def _rollback(self, ckpt: Path | None = None) -> Path:
        ckpt = ckpt or latest_checkpoint(self.ckpt_root)
        if ckpt is None:
            raise RuntimeError(f"{self.bad_streak} non-finite steps in a row and no checkpoint to roll back to")
        self.load_checkpoint(ckpt, progress=False)
        self.scheduler.last_epoch = self.step  # the LR schedule keeps following the step count
        for g, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            g["lr"] = base * self._lr_lambda(self.step)
        self.bad_streak, self.prev_update = 0, None
        self.rollbacks += 1
        return ckpt

    def _spike_rollback(self, start: int) -> Path | None:
        """PaLM's mitigation: back to the latest checkpoint before step ``start``, then discard batches.

        The data stream keeps going (the batches since the checkpoint are not replayed), the step
        count and LR schedule go on, and ``spike_skip_batches`` more batches are drawn and discarded.
        The detector goes back to its state at that checkpoint (it matches the restored weights).
        Without a checkpoint old enough only the batches are skipped.
        """
        ckpt = checkpoint_before(self.ckpt_root, start)
        if ckpt is not None:
            self._rollback(ckpt)
            det = read_trainer_state(ckpt).get("detector")
            if det is not None:
                self.detector.load_state_dict(det)
        for _ in range(self.cfg.spike_skip_batches):
            self.data.next_rows(self.batch_rows(), self.step + 1, read=())
            self.skipped_batches += 1
        self.spike_rollbacks += 1
        return ckpt
