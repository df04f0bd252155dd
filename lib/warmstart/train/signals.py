"""Instability signals of a training run (Wortsman et al. 2023, arXiv 2309.14322), logged every ``signals_every`` steps.

Three measurements, each cheap enough to take every few steps (the trainer
benchmark's ``--signals`` mode measures the overhead):

* ``attn_logit_max``: per decoder layer, the largest attention logit
  ``q_i . k_j / sqrt(d)`` (the layer's own ``scaling``) over all heads and all
  (query, key) pairs the model lets attend (causal; documents and
  bidirectional masked rows as in :func:`warmstart.kernels.masks.document_attention_mask`),
  on **one row**: the first row of the step's global batch (held by
  process 0, so the value does not depend on the number of processes). The attention implementation is not touched:
  forward hooks capture the query and key as they enter rotary embedding
  (the output of ``q_norm``/``k_norm`` where the architecture has qk-norm,
  Qwen3 and OLMo 2, else of ``q_proj``/``k_proj``), a pre-hook on the attention
  module captures its ``position_embeddings`` (cos, sin), and the model's own
  ``apply_rotary_pos_emb`` (from the attention class's module) is applied.
  Computed in fp32 from the captured activations (bf16 under autocast).
* ``log_z_mean`` / ``log_z_max``: the log-partition ``log Z = logsumexp(logits)``
  of the output logits at the label positions (position ``i`` where token
  ``i + 1`` is a label, as the loss counts them) over the whole step (all
  micro-batches and processes). Null when the logits are not materialised
  (``fused_kernels``: the fused linear-cross-entropy never forms them).
* ``update_ratio``: per decoder layer, ``||W_after - W_before|| / ||W_before||``
  over the layer's trainable parameters (Frobenius norm over all of them
  together), for this step's optimizer update; null on a skipped step.

Non-finite values are written as null (like ``loss``).
"""

from __future__ import annotations

import contextlib
import math
import re
import sys
from collections.abc import Iterator
from typing import Any

import torch

LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.")


# ---------------------------------------------------------------- pure functions


def label_positions(labels: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` bool: position ``i`` predicts a label at ``i + 1`` (transformers' shift; the last position never)."""
    valid = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    valid[:, :-1] = labels[:, 1:] != -100
    return valid


def log_partition(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``log Z`` (fp32 logsumexp over the vocabulary) at the label positions, flattened (differentiable)."""
    return torch.logsumexp(logits[label_positions(labels)].float(), dim=-1)


def max_attention_logit(
    q: torch.Tensor, k: torch.Tensor, scaling: float, allowed: torch.Tensor | None = None, block: int = 1 << 24
) -> float:
    """``max q_i . k_j * scaling`` over heads and allowed pairs; ``q [H, T, d]``, ``k [KV, T, d]`` (GQA: H % KV == 0).

    ``allowed [T, T]`` (query, key) defaults to causal. Heads are taken in
    chunks of at most ``block`` logits, so memory stays bounded for long rows.
    """
    H, T, _ = q.shape
    k = k.float().repeat_interleave(H // k.shape[0], dim=0)
    q = q.float()
    if allowed is None:
        allowed = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    best = -math.inf
    step = max(1, block // (T * T))
    for h in range(0, H, step):
        s = torch.matmul(q[h : h + step], k[h : h + step].transpose(-1, -2)) * scaling
        best = _nanmax(best, float(s.masked_fill(~allowed, -math.inf).amax()))
    return best


def probe_mask(doc_ids: torch.Tensor, masked: torch.Tensor, doc_mask: bool) -> torch.Tensor:
    """``[T, T]`` (query, key) pairs the model attends in one row (``doc_ids [T]``, ``masked`` its hybrid flag)."""
    from warmstart.kernels.masks import document_attention_mask

    return document_attention_mask(doc_ids[None], masked.reshape(1), causal_across=not doc_mask)[0, 0]


def layer_index(name: str) -> int | None:
    m = LAYER_RE.search(name)
    return int(m.group(1)) if m else None


def _nanmax(a: float, b: float) -> float:
    return math.nan if math.isnan(a) or math.isnan(b) else max(a, b)


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _all_reduce(t: torch.Tensor, op: str) -> torch.Tensor:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t  # FSDP2 shards (DTensor): this process's part


# ---------------------------------------------------------------- the trainer's collector


class Signals:
    """Collects the signals of one step: ``capture()`` around one forward, ``add_logits`` per micro-batch,
    ``snapshot()`` before and ``finish()`` after the optimizer step."""

    def __init__(self, model: torch.nn.Module, every: int):
        self.every = every
        self.attn = [m for m in model.modules() if hasattr(m, "q_proj") and hasattr(m, "k_proj")]
        if not self.attn:
            raise ValueError(f"signals_every: no attention module with q_proj/k_proj in {type(model).__name__}")
        self.layers: dict[int, list[torch.nn.Parameter]] = {}
        for name, p in model.named_parameters():
            i = layer_index(name)
            if i is not None and p.requires_grad:
                self.layers.setdefault(i, []).append(p)
        self.n_layers = len(self.attn)
        self._reset()

    def _reset(self) -> None:
        self.qk: dict[int, dict[str, Any]] = {}
        self.z_sum = self.z_count = 0.0
        self.z_max = -math.inf
        self.z_seen = False
        self.before: dict[int, list[torch.Tensor]] | None = None

    def active(self, step: int) -> bool:
        return step % self.every == 0

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        """Hooks on every attention module for one forward: the first row's q, k (pre-RoPE) and cos/sin."""
        handles = []

        def keep(i: int, key: str):
            def hook(_mod, _args, out):
                self.qk.setdefault(i, {})[key] = out[:1].detach()

            return hook

        def keep_rope(i: int):
            def pre(_mod, args, kwargs):
                pe = kwargs.get("position_embeddings", args[1] if len(args) > 1 else None)
                if pe is not None:
                    self.qk.setdefault(i, {})["rope"] = tuple(x[:1].detach() for x in pe)

            return pre

        try:
            for i, a in enumerate(self.attn):
                handles.append(a.register_forward_pre_hook(keep_rope(i), with_kwargs=True))
                handles.append(getattr(a, "q_norm", a.q_proj).register_forward_hook(keep(i, "q")))
                handles.append(getattr(a, "k_norm", a.k_proj).register_forward_hook(keep(i, "k")))
            yield
        finally:
            for h in handles:
                h.remove()

    def add_logits(
        self, logits: torch.Tensor | None, labels: torch.Tensor, lse: torch.Tensor | None = None, chunk: int = 1 << 24
    ) -> None:
        """Accumulate ``log Z`` of one micro-batch (``lse``: already computed by the z-loss, reused)."""
        if lse is None:
            if logits is None:
                return
            flat, valid = logits.reshape(-1, logits.shape[-1]), label_positions(labels).reshape(-1)
            n = max(1, chunk // flat.shape[-1])  # positions per chunk: bounded fp32 copies (bf16 logits)
            with torch.no_grad():
                lse = torch.cat([torch.logsumexp(flat[i : i + n].float(), -1) for i in range(0, flat.shape[0], n)])[
                    valid
                ]
        lse = lse.detach().float()
        if lse.numel():
            self.z_seen = True
            self.z_sum += float(lse.double().sum())
            self.z_count += lse.numel()
            self.z_max = _nanmax(self.z_max, float(lse.max()))

    def snapshot(self) -> None:
        """Copy each layer's trainable parameters before the optimizer step."""
        self.before = {i: [p.detach().clone() for p in ps] for i, ps in self.layers.items()}

    def attention_maxima(self, allowed: torch.Tensor | None) -> list[float]:
        out = []
        for i, a in enumerate(self.attn):
            c = self.qk.get(i, {})
            if not {"q", "k", "rope"} <= set(c):
                raise RuntimeError(
                    f"signals: layer {i} ({type(a).__name__}) did not expose q, k and position_embeddings"
                )
            d = a.head_dim
            T = c["q"].shape[1]
            q = c["q"].float().reshape(1, T, -1, d).transpose(1, 2)
            k = c["k"].float().reshape(1, T, -1, d).transpose(1, 2)
            cos, sin = (x.float() for x in c["rope"])
            rope = sys.modules[type(a).__module__].apply_rotary_pos_emb
            q, k = rope(q, k, cos, sin)
            out.append(max_attention_logit(q[0], k[0], a.scaling, allowed))
        return out

    def finish(self, allowed: torch.Tensor | None, updated: bool, probed: bool = True) -> dict[str, Any]:
        """The step's signal fields (reduced over processes; ``probed``: this process captured the probe row),
        and a reset for the next signal step."""
        att = torch.tensor(
            self.attention_maxima(allowed) if probed else [-math.inf] * self.n_layers, dtype=torch.float64
        )
        dev = next(iter(self.layers.values()))[0].device if self.layers else att.device
        att = _all_reduce(att.nan_to_num(nan=math.inf).to(dev), "max").cpu()
        z = _all_reduce(
            torch.tensor([self.z_sum, self.z_count, float(self.z_seen)], dtype=torch.float64, device=dev), "sum"
        )
        zmax = _all_reduce(torch.tensor([self.z_max], dtype=torch.float64, device=dev).nan_to_num(nan=math.inf), "max")
        rec: dict[str, Any] = {
            "attn_logit_max": [_finite(float(x)) for x in att],
            "log_z_mean": _finite(float(z[0] / z[1])) if z[2] > 0 and z[1] > 0 else None,
            "log_z_max": _finite(float(zmax[0])) if z[2] > 0 else None,
            "update_ratio": self.update_ratios(dev) if updated and self.before is not None else None,
        }
        self._reset()
        return rec

    def update_ratios(self, dev: torch.device) -> list[float | None]:
        sq = torch.zeros(2 * self.n_layers, dtype=torch.float64, device=dev)
        with torch.no_grad():
            for i, ps in self.layers.items():
                for p, b in zip(ps, self.before[i]):
                    pl, bl = _local(p).double(), _local(b).double()
                    sq[2 * i] += (pl - bl).square().sum()
                    sq[2 * i + 1] += bl.square().sum()
        sq = _all_reduce(sq, "sum").cpu()
        return [
            _finite(math.sqrt(float(sq[2 * i])) / math.sqrt(float(sq[2 * i + 1])))
            if i in self.layers and sq[2 * i + 1] > 0
            else None
            for i in range(self.n_layers)
        ]
