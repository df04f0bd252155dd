"""One optimizer step of :class:`~warmstart.train.loop.Trainer`: the methods of :class:`StepMixin`.

The step's global batch size (ramp-up aware), its micro-batches' forward/backward, gradient clipping, then the
optimizer step or, when the loss or gradient norm is not finite, the skipped step; the update cosine and the
instability signals when they are due. What one step is: :mod:`warmstart.train.loop`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings

import torch

from warmstart.data.packing import PackedBatch
from warmstart.train.objectives import hybrid_batch, model_inputs
from warmstart.train.schedules import ramp_batch_rows
from warmstart.train.signals import probe_mask


class StepMixin:
    """The step methods of :class:`~warmstart.train.loop.Trainer`; they use the state its ``__init__`` sets up."""

    def batch_rows(self) -> int:
        """Global rows of the next step (ramp-up aware); a multiple of micro_batch x world."""
        c, unit = self.cfg, self.cfg.micro_batch * self.acc.num_processes
        final = unit * c.grad_accum
        if c.batch_ramp is None:
            return final
        r = c.batch_ramp
        rows = ramp_batch_rows(self.samples, r.start, r.increment, r.samples, final)
        if r.start % unit or r.increment % unit:
            raise ValueError(f"batch_ramp start/increment must be multiples of micro_batch x processes = {unit}")
        return rows

    def _model_inputs(
        self, batch: PackedBatch, labels: torch.Tensor, masked: torch.Tensor, inputs: torch.Tensor
    ) -> dict:
        attn = self.unwrapped.config._attn_implementation
        return model_inputs(attn, batch, labels, masked, inputs, self.cfg.doc_mask, self.acc.device)

    def train_step(self) -> dict:
        cfg, acc = self.cfg, self.acc
        k = self.step + 1
        rows = self.batch_rows()
        world, mb = acc.num_processes, cfg.micro_batch
        accum = rows // (mb * world)
        mine = (
            None if world == 1 else {(a * world + acc.process_index) * mb + i for a in range(accum) for i in range(mb)}
        )
        batch = self.data.next_rows(rows, k, read=mine)  # a rank reads only its own rows
        draw = k + self.skipped_batches  # 1-based draws from the stream, discarded ones included
        if draw in cfg.inject_bad_batches:
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + draw)
            batch = dataclasses.replace(
                batch, input_ids=torch.randint(0, len(self.tokenizer), batch.input_ids.shape, generator=g)
            )
        inputs, labels, masked = hybrid_batch(
            batch.input_ids, batch.doc_ids, k, cfg.seed, cfg.masked_share, cfg.mask_prob, cfg.mask_span, self.mask_id
        )
        self.model.train()
        loss_sum = torch.zeros((), device=acc.device)
        sig = self.signals is not None and self.signals.active(k)
        part_sums: dict[str, torch.Tensor] = {}  # ce_loss / kd_loss when the loss is more than the plain CE
        for a in range(accum):
            lo = (a * world + acc.process_index) * mb
            sl = slice(lo, lo + mb)
            kw = self._model_inputs(batch.select(sl), labels[sl], masked[sl], inputs[sl])
            ctx = acc.no_sync(self.model) if a < accum - 1 else contextlib.nullcontext()
            with ctx:
                with self.signals.capture() if sig and a == 0 and acc.process_index == 0 else contextlib.nullcontext():
                    # with role weights the objective computes the weighted loss from the logits: the model's own
                    # loss over the labels would be a second cross-entropy over the vocabulary, thrown away
                    out = self.model(**kw) if batch.roles is None else self.model(**_without(kw, "labels"))
                roles = None if batch.roles is None else batch.roles[sl].to(acc.device)
                loss, parts = self.objective(out, kw, roles)
                lse = parts.pop("lse", None)
                if sig:
                    self.signals.add_logits(out.logits, kw["labels"], lse)
                del out
                if k in cfg.inject_nan_steps and a == 0:
                    loss = loss * float("nan")
                acc.backward(loss / accum)
            loss_sum += loss.detach()
            for name, v in parts.items():
                part_sums[name] = part_sums.get(name, 0) + v
        loss_val = acc.reduce(loss_sum / accum, "mean").item()
        parts = {name: acc.reduce(v / accum, "mean").item() for name, v in part_sums.items()}
        grad_norm = acc.clip_grad_norm_(self.params, cfg.max_grad_norm or float("inf"))
        grad_norm = float(grad_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        bad = not (math.isfinite(loss_val) and math.isfinite(grad_norm))
        cos = None
        if bad:
            self.optimizer.zero_grad(set_to_none=True)
            self.bad_streak += 1
            self.skipped.append(k)
            self.prev_update = None
        else:
            snap = cfg.update_cos and (self._is_log(k) or self._is_log(k + 1))
            before = [p.detach().clone() for p in self.params] if snap else None
            if sig:
                self.signals.snapshot()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.bad_streak = 0
            if snap:
                upd = [p.detach().float() - b.float() for p, b in zip(self.params, before)]
                if self.prev_update is not None and self._is_log(k):
                    cos = _cosine(upd, self.prev_update)
                self.prev_update = upd if self._is_log(k + 1) else None
            else:
                self.prev_update = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()" after a skipped first step
            self.scheduler.step()
        if sig:  # the global batch's first row (process 0's first micro-batch) was probed
            mask = probe_mask(batch.doc_ids[0], masked[0], cfg.doc_mask)
            parts |= self.signals.finish(mask, updated=not bad, probed=acc.process_index == 0)
        self.step = k
        self.samples += rows
        self.tokens += rows * cfg.seq_len
        self.bytes += batch.bytes
        return {
            "step": k,
            "loss": loss_val if math.isfinite(loss_val) else None,
            "lr": lr,
            "grad_norm": grad_norm if math.isfinite(grad_norm) else None,
            "update_cos": cos,
            "skipped": bad,
            "corpus": self.data.corpus_at(k),
            "batch_rows": rows,
            "masked_rows": int(masked.sum()),
        } | {name: v if not isinstance(v, float) or math.isfinite(v) else None for name, v in parts.items()}


def _cosine(a: list[torch.Tensor], b: list[torch.Tensor]) -> float | None:
    if a and _is_dtensor(a[0]):  # FSDP2 shards: sums over the local shards, then over the processes
        parts = torch.stack(
            [
                sum((x.to_local().double() * y.to_local().double()).sum() for x, y in zip(a, b)),
                sum(x.to_local().double().square().sum() for x in a),
                sum(y.to_local().double().square().sum() for y in b),
            ]
        )
        torch.distributed.all_reduce(parts)
        dot, na, nb = float(parts[0]), math.sqrt(float(parts[1])), math.sqrt(float(parts[2]))
    else:
        dot = sum(float((x.double() * y.double()).sum()) for x, y in zip(a, b))
        na = math.sqrt(sum(float(x.double().square().sum()) for x in a))
        nb = math.sqrt(sum(float(y.double().square().sum()) for y in b))
    return dot / (na * nb) if na > 0 and nb > 0 else None


def _is_dtensor(t: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def _without(kw: dict, key: str) -> dict:
    return {k: v for k, v in kw.items() if k != key}
