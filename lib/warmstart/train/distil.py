"""Logit distillation (Minitron): the loss, and the frozen teacher the trainer runs beside the student.

Turned on by ``TrainConfig.teacher_path``; the trainer then minimises, per
micro-batch::

    loss = (1 - kd_ce_share) * T^2 * KL(p_teacher^T || p_student^T) + kd_ce_share * CE   (+ z-loss)

* Forward KL on the output logits at temperature ``T = kd_temperature``
  (``p^T = softmax(logits / T)``), averaged over the label positions (those
  the cross-entropy counts: position ``i`` where token ``i + 1`` is a label).
  The ``T^2`` factor (Hinton et al.) keeps the gradient scale independent of T.
* **Vocabulary.** Teacher and student must have the same tokenizer (the same
  ``get_vocab()``; otherwise an error naming both paths). Their embedding
  matrices may be padded differently: the teacher's distribution is taken
  over the ``V = len(tokenizer)`` real tokens only (its logits ``[:V]``, its
  padding rows dropped), the student's ``log_softmax`` over its **full**
  vocabulary, so probability the student puts on its padding rows counts as
  a mismatch (the KL is 0 only if the student gives the padding no mass).
  Both vocab sizes must be at least ``V``.
* **Top-k** (``kd_top_k = k``): the teacher keeps its ``k`` largest real-vocab
  logits, renormalised over those ``k`` (``softmax(top_k / T)``); the student's
  full-vocabulary ``log_softmax(logits / T)`` is read at the same ``k``
  indices. ``sum_k p_k (log p_k - log q_k)`` is still >= 0 (the student's mass
  at the k indices is at most 1) and 0 only when the student puts exactly
  ``p`` on the teacher's top-k and nothing elsewhere. Ties at the k-th
  logit are broken by ``torch.topk``. (The teacher's full logits are still
  computed by its forward; top-k saves the softmax over them, and would let
  stored teacher logits be k wide.)
* The teacher is loaded with :func:`warmstart.model.load_model` (safetensors),
  frozen (``requires_grad`` off), in eval mode, run under ``torch.no_grad``
  with the same autocast as the student, on the same device, with the
  student's attention implementation (so packed-document masks mean the same).
  It is never wrapped by accelerate (no DDP/FSDP: each process holds a full
  copy) and never written into checkpoints: a resumed run reloads it from
  ``teacher_path``.
* FLOPs: the teacher's forward is ``2 N + 4 L H Q T`` per token (a third of
  :func:`warmstart.flops.flops_per_token`), logged beside the student's as
  ``teacher_flops_per_token`` (trainer state) and ``mfu_with_teacher``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F

from warmstart.flops import flops_per_token
from warmstart.train.signals import label_positions


class _KL(torch.autograd.Function):
    """``sum_rows KL(p || softmax(s / T))`` with its gradient by hand: ``(softmax(s / T) - p) / T``.

    ``log_p`` is the teacher's (``[N, V]``, or ``[N, k]`` at the columns ``idx`` with top-k); the
    student's columns beyond them (padding, outside the top-k) get ``p = 0``. Autograd through
    ``log_softmax``, the product and the sum keeps several row-by-vocabulary tensors and walks them
    again backwards; this keeps ``log q`` only. ``python -m warmstart.train.distil bench`` times it against
    :func:`kd_kl_reference` (autograd through the formula) in one run.
    """

    @staticmethod
    def forward(
        ctx: Any, s: torch.Tensor, log_p: torch.Tensor, idx: torch.Tensor | None, temperature: float
    ) -> torch.Tensor:
        log_q = torch.log_softmax(s.float() / temperature, dim=-1)
        at = log_q.gather(-1, idx) if idx is not None else log_q[:, : log_p.shape[-1]]
        ctx.save_for_backward(log_q, log_p, idx)
        ctx.temperature, ctx.dtype = temperature, s.dtype
        return (log_p.exp() * (log_p - at)).sum()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        log_q, log_p, idx = ctx.saved_tensors
        g = log_q.exp_()
        if idx is not None:
            g.scatter_add_(-1, idx, log_p.exp().neg_())
        else:
            g[:, : log_p.shape[-1]].sub_(log_p.exp())
        return g.mul_(grad / ctx.temperature).to(ctx.dtype), None, None, None


def kd_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    vocab: int | None = None,
) -> torch.Tensor:
    """Mean over label positions of ``KL(p_teacher^T || p_student^T)`` (nats, no ``T^2``), fp32, see the module doc.

    ``student_logits [B, T, Vs]``, ``teacher_logits [B, T, Vt]``, ``labels [B, T]``
    (``-100`` = no label); ``vocab`` the real vocabulary size (default
    ``min(Vs, Vt)``). Gradients flow into the student logits only (by hand, :class:`_KL`).
    """
    pos = label_positions(labels)
    V = vocab if vocab is not None else min(student_logits.shape[-1], teacher_logits.shape[-1])
    if V > student_logits.shape[-1] or V > teacher_logits.shape[-1]:
        raise ValueError(
            f"kd_kl: vocab {V} exceeds the student's ({student_logits.shape[-1]}) or the teacher's "
            f"({teacher_logits.shape[-1]}) logits"
        )
    s = student_logits[pos]
    if s.shape[0] == 0:
        return student_logits.sum() * 0.0
    with torch.no_grad():
        t = teacher_logits[pos][..., :V].float() / temperature
        idx = None
        if top_k is not None and top_k < V:
            t, idx = t.topk(top_k, dim=-1)
        log_p = F.log_softmax(t, dim=-1)
    return _KL.apply(s, log_p, idx, temperature) / s.shape[0]


def kd_kl_reference(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    vocab: int | None = None,
) -> torch.Tensor:
    """:func:`kd_kl` by autograd through the module doc's formula: the reference its backward is tested
    and benchmarked against (same arguments, same value)."""
    pos = label_positions(labels)
    V = vocab if vocab is not None else min(student_logits.shape[-1], teacher_logits.shape[-1])
    log_q = F.log_softmax(student_logits[pos].float() / temperature, dim=-1)
    t = teacher_logits[pos][..., :V].detach().float() / temperature
    if top_k is not None and top_k < V:
        t, idx = t.topk(top_k, dim=-1)
        log_q = log_q.gather(-1, idx)
    else:
        log_q = log_q[..., :V]
    log_p = F.log_softmax(t, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def benchmark_kd(
    rows: int = 2048,
    vocab: int = 8192,
    pad: int = 64,
    rounds: int = 9,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Forward + backward of :func:`kd_kl` over :func:`kd_kl_reference` on the same random logits, alternating
    in one process (``rows`` positions, the default study's micro-batch of 16 x 128; ``vocab`` real tokens
    plus ``pad`` padding columns). The ratio is the median of the paired per-round ratios."""
    import statistics
    import time

    g = torch.Generator().manual_seed(seed)
    s0 = 3 * torch.randn(1, rows + 1, vocab + pad, generator=g)
    t = 3 * torch.randn(1, rows + 1, vocab + pad, generator=g)
    labels = torch.zeros(1, rows + 1, dtype=torch.long)
    fns = {"by_hand": kd_kl, "autograd": kd_kl_reference}
    grads, times = {}, {k: [] for k in fns}
    for r in range(rounds + 1):  # round 0 warms up
        for name in fns if r % 2 else reversed(list(fns)):
            x = s0.clone().requires_grad_()
            t0 = time.perf_counter()
            fns[name](x, t, labels, temperature, top_k, vocab).backward()
            if r:
                times[name].append(time.perf_counter() - t0)
            grads[name] = x.grad
    ratios = [a / b for a, b in zip(times["autograd"], times["by_hand"])]
    return {
        "rows": rows,
        "vocab": vocab,
        "pad": pad,
        "top_k": top_k,
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "seconds_by_hand": statistics.median(times["by_hand"]),
        "seconds_autograd": statistics.median(times["autograd"]),
        "speedup_median": statistics.median(ratios),
        "speedup_min": min(ratios),
        "speedup_max": max(ratios),
        "max_abs_grad_diff": float((grads["by_hand"] - grads["autograd"]).abs().max()),
        "device": "cpu",
        "torch": torch.__version__,
    }


def check_tokenizers(student_tok: Any, teacher_tok: Any, student_path: str, teacher_path: str) -> None:
    """The teacher's tokenizer must map every token to the same id as the student's."""
    a, b = student_tok.get_vocab(), teacher_tok.get_vocab()
    if a != b:
        diff = sorted(set(a.items()) ^ set(b.items()), key=str)[:3]
        raise ValueError(
            f"teacher_path: the teacher's tokenizer ({teacher_path}, {len(b)} tokens) differs from the student's "
            f"({student_path}, {len(a)} tokens); e.g. {diff}. Distillation needs the same vocabulary."
        )


def load_teacher(
    path: str | os.PathLike,
    student_tok: Any,
    student_tok_path: str,
    device: torch.device,
    attn_implementation: str | None,
    trust_remote_code: bool = False,
) -> torch.nn.Module:
    """The frozen teacher (eval mode, no gradients) on ``device``; checks its tokenizer and vocab size first."""
    from transformers import AutoTokenizer

    from warmstart.model import load_model

    try:
        teacher_tok = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise ValueError(
            f"teacher_path: no tokenizer in {path} to compare with the student's ({student_tok_path}): {e}"
        ) from None
    check_tokenizers(student_tok, teacher_tok, student_tok_path, str(path))
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar in the run's output
    try:
        with torch.random.fork_rng(devices=[]):  # loading must not move the run's random stream
            teacher = load_model(path, trust_remote_code=trust_remote_code)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if teacher.config.vocab_size < len(student_tok):
        raise ValueError(f"teacher_path: {path} has vocab_size {teacher.config.vocab_size} < {len(student_tok)} tokens")
    if attn_implementation:
        teacher.set_attn_implementation(attn_implementation)
    teacher.requires_grad_(False)
    return teacher.to(device).eval()


def teacher_flops_per_token(config: Any, seq_len: int) -> int:
    """The teacher's forward FLOPs per token, ``2 N + 4 L H Q T`` (one third of the training formula)."""
    return flops_per_token(config, seq_len) // 3


def main(argv: list[str] | None = None) -> int:
    """``python -m warmstart.train.distil bench [--rows 2048 --vocab 8192 --rounds 9 --top-k K]``: prints :func:`benchmark_kd`."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m warmstart.train.distil", description=main.__doc__)
    ap.add_argument("cmd", choices=["bench"])
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--top-k", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(benchmark_kd(args.rows, args.vocab, rounds=args.rounds, top_k=args.top_k), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
