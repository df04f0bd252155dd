"""Activation-based importance of neurons, heads, embedding channels and layers.

The recipe of Minitron (Muralidharan et al. 2024, "Compact Language Models via
Pruning and Knowledge Distillation", Sec. 2.2) as refined in Llama-3.1-Minitron
(Sreenivas et al. 2024): run a small calibration set forward (no gradients)
and score each prunable unit by the activations it produces.

* **MLP neuron** ``j`` of layer ``l``: the activation entering ``down_proj``
  (``act(gate) * up``), channel ``j``.
* **Attention head** ``h``: the activation entering ``o_proj`` (the head's
  attention output, ``head_dim`` wide), reduced to one number per token by
  its L2 norm over ``head_dim``.
* **Embedding channel** ``c``: the outputs of the RMSNorms over the hidden
  size (each layer's ``input_layernorm`` and ``post_attention_layernorm`` and
  the final ``norm``), channel ``c``; the per-norm scores are summed.
* **Layer** (depth; the paper's Block Importance): ``1 - cos(x_in, x_out)``
  between the layer's input and output hidden states, averaged over every
  token of every sample. A layer that changes the residual stream little
  scores low.

For the first three, per sample: ``seq_agg`` of ``|activation|`` over the
sequence (``mean``: the paper's choice; ``l2``; ``max``), then ``batch_agg``
over the samples (``l2``: the paper's best; ``mean``; ``max``). Aggregation
is streamed, so any number of calibration samples fits in memory; the
forward pass stops before the LM head (logits are never needed).

:func:`random_importance` gives the same structure with random scores: the
ablation showing that the ranking matters.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from warmstart.prune.arch import Dims, check_model, norms

SEQ_AGGS = ("mean", "l2", "max")
BATCH_AGGS = ("l2", "mean", "max")
AXES = ("neurons", "heads", "hidden", "layers")


@dataclass
class Importance:
    """Importance scores of one model (higher = more important).

    ``neurons``: ``[layers, intermediate]``; ``heads``: ``[layers, heads]``;
    ``hidden``: ``[hidden]``; ``layers``: ``[layers]`` (all float32, on CPU).
    """

    neurons: torch.Tensor
    heads: torch.Tensor
    hidden: torch.Tensor
    layers: torch.Tensor
    samples: int = 0
    tokens: int = 0
    seq_agg: str = "mean"
    batch_agg: str = "l2"
    method: str = "activation"
    meta: dict = field(default_factory=dict)

    def check_against(self, dims: Dims) -> None:
        """``ValueError`` unless the score shapes match ``dims`` (importance of another model)."""
        want = {
            "neurons": (dims.layers, dims.intermediate),
            "heads": (dims.layers, dims.heads),
            "hidden": (dims.hidden,),
            "layers": (dims.layers,),
        }
        for axis, shape in want.items():
            got = tuple(getattr(self, axis).shape)
            if got != shape:
                raise ValueError(
                    f"importance.{axis} has shape {got}, the model needs {shape}: importance of another model?"
                )

    def order(self, axis: str, layer: int | None = None) -> list[int]:
        """Unit indices from least to most important (ties: lower index first)."""
        scores = getattr(self, axis)
        if layer is not None:
            scores = scores[layer]
        return torch.sort(scores, stable=True).indices.tolist()

    def to_json(self) -> dict:
        """A JSON-serialisable dict (tensors as nested lists); :meth:`from_json` reads it back."""
        out = {a: getattr(self, a).tolist() for a in AXES}
        out.update(
            samples=self.samples,
            tokens=self.tokens,
            seq_agg=self.seq_agg,
            batch_agg=self.batch_agg,
            method=self.method,
            meta=self.meta,
        )
        return out

    to_dict = to_json

    @classmethod
    def from_json(cls, data: dict | str) -> Importance:
        """From :meth:`to_json`'s dict, or that dict as JSON text."""
        d = dict(json.loads(data) if isinstance(data, str) else data)
        tensors = {a: torch.tensor(d.pop(a), dtype=torch.float32) for a in AXES}
        return cls(**tensors, **d)


class _Stream:
    """Streamed ``seq_agg`` over tokens then ``batch_agg`` over samples, for ``[B, T, N]`` inputs."""

    def __init__(self, seq_agg: str, batch_agg: str):
        self.seq_agg, self.batch_agg = seq_agg, batch_agg
        self.acc: torch.Tensor | None = None
        self.n = 0

    def add(self, act: torch.Tensor) -> None:
        a = act.detach().float().abs()
        if self.seq_agg == "mean":
            s = a.mean(1)
        elif self.seq_agg == "l2":
            s = a.pow(2).sum(1).sqrt()
        else:
            s = a.amax(1)
        if self.batch_agg == "l2":
            part = s.pow(2).sum(0)
        elif self.batch_agg == "mean":
            part = s.sum(0)
        else:
            part = s.amax(0)
        if self.acc is None:
            self.acc = part
        elif self.batch_agg == "max":
            self.acc = torch.maximum(self.acc, part)
        else:
            self.acc = self.acc + part
        self.n += s.shape[0]

    def result(self) -> torch.Tensor:
        if self.acc is None:
            raise ValueError("no calibration samples reached the model")
        if self.batch_agg == "l2":
            return self.acc.sqrt().cpu()
        if self.batch_agg == "mean":
            return (self.acc / self.n).cpu()
        return self.acc.cpu()


def _as_batch(ids, device) -> torch.Tensor:
    ids = torch.as_tensor(ids)
    if ids.dim() == 1:
        ids = ids.unsqueeze(0)
    if ids.dim() != 2 or ids.numel() == 0:
        raise ValueError(
            f"a calibration batch must be a non-empty [batch, seq] tensor of token ids, got shape {tuple(ids.shape)}"
        )
    if ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"calibration batches hold token ids (int64), got {ids.dtype}")
    return ids.to(device=device, dtype=torch.long)


@torch.no_grad()
def estimate_importance(
    model: torch.nn.Module,
    batches: Iterable[torch.Tensor],
    *,
    seq_agg: str = "mean",
    batch_agg: str = "l2",
) -> Importance:
    """Score every neuron, head, embedding channel and layer of ``model`` on ``batches``.

    ``batches``: an iterable of token-id tensors ``[batch, seq]`` (or ``[seq]``
    for one sample), the calibration set; how many samples and how long they
    are is the caller's choice (Minitron used 1,024 samples; importance
    rankings settle with far fewer). Hooks are added for the pass and
    removed afterwards, also on error; the model is left in its previous
    train/eval mode.
    """
    if seq_agg not in SEQ_AGGS:
        raise ValueError(f"seq_agg must be one of {SEQ_AGGS}, got {seq_agg!r}")
    if batch_agg not in BATCH_AGGS:
        raise ValueError(f"batch_agg must be one of {BATCH_AGGS}, got {batch_agg!r}")
    dims = check_model(model)
    layers = list(model.model.layers)
    neuron_s = [_Stream(seq_agg, batch_agg) for _ in layers]
    head_s = [_Stream(seq_agg, batch_agg) for _ in layers]
    norm_mods = norms(model)
    norm_s = [_Stream(seq_agg, batch_agg) for _ in norm_mods]
    block_sum = torch.zeros(len(layers), dtype=torch.float64)
    block_n = [0]
    layer_in: dict[int, torch.Tensor] = {}
    hd = dims.head_dim

    def neuron_hook(i):
        return lambda mod, args: neuron_s[i].add(args[0])

    def head_hook(i):
        def hook(mod, args):
            x = args[0]
            head_s[i].add(x.reshape(*x.shape[:-1], -1, hd).float().norm(dim=-1))

        return hook

    def norm_hook(i):
        return lambda mod, args, out: norm_s[i].add(out)

    def layer_pre(i):
        def hook(mod, args, kwargs):
            layer_in[i] = args[0] if args else kwargs["hidden_states"]

        return hook

    def layer_post(i):
        def hook(mod, args, out):
            out = out[0] if isinstance(out, tuple) else out
            cos = torch.nn.functional.cosine_similarity(layer_in.pop(i).float(), out.float(), dim=-1)
            block_sum[i] += (1 - cos).sum().double().cpu()
            if i == 0:
                block_n[0] += cos.numel()

        return hook

    handles = []
    try:
        for i, layer in enumerate(layers):
            handles += [
                layer.mlp.down_proj.register_forward_pre_hook(neuron_hook(i)),
                layer.self_attn.o_proj.register_forward_pre_hook(head_hook(i)),
                layer.register_forward_pre_hook(layer_pre(i), with_kwargs=True),
                layer.register_forward_hook(layer_post(i)),
            ]
        handles += [m.register_forward_hook(norm_hook(i)) for i, m in enumerate(norm_mods)]
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        samples = tokens = 0
        try:
            for ids in batches:
                ids = _as_batch(ids, device)
                model.model(input_ids=ids, use_cache=False)  # the decoder only: no logits
                samples += ids.shape[0]
                tokens += ids.numel()
        finally:
            model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    if samples == 0:
        raise ValueError("estimate_importance got no calibration batches")
    return Importance(
        neurons=torch.stack([s.result() for s in neuron_s]),
        heads=torch.stack([s.result() for s in head_s]),
        hidden=torch.stack([s.result() for s in norm_s]).sum(0),
        layers=(block_sum / block_n[0]).float(),
        samples=samples,
        tokens=tokens,
        seq_agg=seq_agg,
        batch_agg=batch_agg,
    )


def random_importance(model: torch.nn.Module, seed: int = 0) -> Importance:
    """Importance of the same shapes as :func:`estimate_importance`, drawn uniformly at random (the ablation)."""
    dims = check_model(model)
    g = torch.Generator().manual_seed(seed)
    return Importance(
        neurons=torch.rand(dims.layers, dims.intermediate, generator=g),
        heads=torch.rand(dims.layers, dims.heads, generator=g),
        hidden=torch.rand(dims.hidden, generator=g),
        layers=torch.rand(dims.layers, generator=g),
        seq_agg="-",
        batch_agg="-",
        method="random",
        meta={"seed": seed},
    )
