"""The trainer's hybrid masked-causal objective (NorMistral): which rows are masked, and what the model sees.

Each row of a global batch is a masked-next-token row with probability
``masked_share``, drawn from a generator seeded by ``(seed, step)``: exact on
resume and independent of the number of processes. Such a row gets spans of
input tokens replaced by the mask token, bidirectional attention inside each
packed document (blocked across documents), and labels only at the masked
positions. The loss goes through the same LM head with the usual next-token
shift (the output at ``i - 1`` predicts the masked token at ``i``, as in
NorMistral's card). Other rows are plain causal LM rows.

:func:`hybrid_batch` draws the rows and spans for one global batch;
:func:`model_inputs` turns a micro-batch of it into model kwargs (packed
``position_ids`` and the per-backend attention mask from
``warmstart.kernels.attention``).

:class:`Objective` is the loss of one micro-batch from the model's output:
the model's own cross-entropy (transformers computes it from ``labels``:
the mean over label positions) as it is by default, plus PaLM's z-loss
(``z_loss * mean(log Z^2)`` over the same positions, ``log Z`` the fp32
logsumexp of the output logits), or logit distillation from a teacher
(``warmstart.train.distil``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from warmstart.data.packing import PackedBatch
from warmstart.kernels.attention import attention_inputs


def resolve_mask_id(mask_token_id: int | None, tokenizer: Any, masked_share: float) -> int | None:
    """The mask token of the objective: the configured id, else the tokenizer's; required when ``masked_share > 0``."""
    mask_id = mask_token_id if mask_token_id is not None else tokenizer.mask_token_id
    if masked_share > 0 and mask_id is None:
        raise ValueError("masked_share > 0 needs mask_token_id or a tokenizer with a mask token")
    return mask_id


def hybrid_batch(
    input_ids: torch.Tensor,
    doc_ids: torch.Tensor,
    step: int,
    seed: int,
    share: float,
    mask_prob: float,
    span: int,
    mask_id: int | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs, labels and the per-row masked flag for one global batch.

    Causal rows: inputs unchanged, labels = inputs (transformers shifts).
    Masked rows: span starts drawn with probability ``mask_prob / span``,
    spans of ``span`` tokens that stay inside their document; the first
    token of each document piece is never masked (it has no earlier position
    in its document to be predicted from); at least one token per masked row
    is masked; labels are -100 except at masked positions.
    """
    n, T = input_ids.shape
    if share <= 0:
        return input_ids, input_ids, torch.zeros(n, dtype=torch.bool)
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    masked_rows = torch.rand(n, generator=g) < share
    if not masked_rows.any():
        return input_ids, input_ids, masked_rows
    if mask_id is None:
        raise ValueError("masked_share > 0 needs mask_token_id (or a tokenizer with a mask token)")
    starts = torch.rand(n, T, generator=g) < mask_prob / span
    first = torch.ones(n, T, dtype=torch.bool)
    first[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    m = starts.clone()
    for k in range(1, span):
        m[:, k:] |= starts[:, :-k] & (doc_ids[:, k:] == doc_ids[:, :-k])
    m &= ~first & masked_rows[:, None]
    score = torch.rand(n, T, generator=g).masked_fill(first, -1.0)
    need = masked_rows & ~m.any(1) & (~first).any(1)
    m[need, score[need].argmax(1)] = True
    inputs = torch.where(m, torch.full_like(input_ids, mask_id), input_ids)
    labels = torch.where(masked_rows[:, None] & ~m, torch.full_like(input_ids, -100), input_ids)
    return inputs, labels, masked_rows


def model_inputs(
    attn_implementation: str,
    batch: PackedBatch,
    labels: torch.Tensor,
    masked: torch.Tensor,
    inputs: torch.Tensor,
    doc_mask: bool,
    device: torch.device,
) -> dict:
    """Model kwargs of one micro-batch: inputs, labels, and the attention inputs its rows need."""
    # use_cache=False matters beyond memory: with a cache object transformers ignores packed position_ids.
    out = {"input_ids": inputs.to(device), "labels": labels.to(device), "use_cache": False}
    # packed position_ids when doc_mask; a 4D document/bidirectional mask (a BlockMask on warmstart_flex)
    out.update(attention_inputs(attn_implementation, batch.doc_ids, batch.position_ids, masked, doc_mask, device))
    return out


class Objective:
    """The loss of one micro-batch: ``out.loss`` untouched unless z-loss or a teacher is configured.

    Returns ``(loss, parts)``; ``parts`` holds detached tensors for the log:
    ``ce_loss`` (and ``kd_loss`` with a teacher) when the loss is not the plain
    cross-entropy, ``lse`` (the ``log Z`` values, reused by the signals) with z-loss.
    """

    def __init__(
        self,
        z_loss: float = 0.0,
        teacher: torch.nn.Module | None = None,
        temperature: float = 1.0,
        ce_share: float = 0.0,
        top_k: int | None = None,
        vocab: int | None = None,
        autocast: Callable[[], Any] | None = None,
        role_weights: dict[str, float] | None = None,
    ):
        self.z_loss, self.teacher, self.temperature, self.ce_share, self.top_k = (
            z_loss,
            teacher,
            temperature,
            ce_share,
            top_k,
        )
        self.vocab, self.autocast = vocab, autocast
        self.role_weights = None if role_weights is None else role_weight_table(role_weights)

    @property
    def plain(self) -> bool:
        return self.z_loss == 0 and self.teacher is None and self.role_weights is None

    def __call__(
        self, out: Any, kw: dict, roles: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.role_weights is not None:
            if roles is None:
                raise RuntimeError("role_weights are set but the batch carries no token roles")
            return weighted_ce(out.logits, kw["labels"], self.role_weights.to(out.logits.device)[roles.long()]), {}
        if self.plain:
            return out.loss, {}
        from warmstart.train.distil import kd_kl
        from warmstart.train.signals import log_partition

        if out.logits is None:
            raise RuntimeError("z_loss and distillation need the output logits (not with a fused linear-cross-entropy)")
        ce, labels = out.loss, kw["labels"]
        parts = {"ce_loss": ce.detach()}
        loss = ce
        if self.teacher is not None:
            with torch.no_grad(), self.autocast() if self.autocast else contextlib.nullcontext():
                t_logits = self.teacher(**{k: v for k, v in kw.items() if k != "labels"}).logits
            kl = kd_kl(out.logits, t_logits, labels, self.temperature, self.top_k, self.vocab)
            parts["kd_loss"] = kl.detach()
            kd = self.temperature**2 * kl
            loss = (
                kd
                if self.ce_share == 0
                else ce
                if self.ce_share == 1
                else (1 - self.ce_share) * kd + self.ce_share * ce
            )
        if self.z_loss > 0:
            lse = log_partition(out.logits, labels)
            if lse.numel():
                loss = loss + self.z_loss * lse.square().mean()
            parts["lse"] = lse.detach()
        return loss, parts


def role_weight_table(role_weights: dict[str, float]) -> torch.Tensor:
    """The loss weight of each role id (:data:`warmstart.data.packing.ROLES`): ``ignore`` 0, the others as
    given, 1 when not given."""
    from warmstart.data.packing import ROLES

    unknown = set(role_weights) - set(ROLES[1:])
    if unknown:
        raise ValueError(f"role_weights: unknown roles {sorted(unknown)}; known: {', '.join(ROLES[1:])}")
    return torch.tensor([0.0, *(float(role_weights.get(r, 1.0)) for r in ROLES[1:])])


def weighted_ce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum(w * ce) / sum(w)`` of next-token prediction: position ``t`` predicts ``labels[t + 1]`` with that
    label's weight ``weights[t + 1]`` (transformers' shift); labels of -100 weigh 0. A micro-batch whose weights
    are all 0 gives a zero loss that still depends on the logits (its gradient is zero, not missing)."""
    if logits is None:
        raise RuntimeError("role_weights need the output logits (not with a fused linear-cross-entropy)")
    lab, w = labels[:, 1:], weights[:, 1:].to(torch.float32) * (labels[:, 1:] != -100)
    ce = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), lab.flatten().clamp_min(0), reduction="none"
    ).view_as(lab)
    return (ce * w).sum() / w.sum().clamp_min(1e-12)
