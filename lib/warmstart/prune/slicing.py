"""Slice a model to its pruned shape: a genuinely smaller Hugging Face model.

The physical pruning step of Minitron (Muralidharan et al. 2024, "Compact
Language Models via Pruning and Knowledge Distillation") and Llama-3.1-
Minitron (Sreenivas et al. 2024): the kept rows and columns of every weight
are copied into a model built from a new config (``hidden_size``,
``intermediate_size``, ``num_attention_heads``, ``num_key_value_heads``,
``num_hidden_layers``; ``head_dim`` written explicitly, since it no longer
equals ``hidden_size / heads``). The result is the same ``*ForCausalLM``
class, saved as safetensors with the tokenizer beside it, and loads with
``AutoModelForCausalLM.from_pretrained``.

Memory: the new model is built on the ``meta`` device and its parameters
are the sliced tensors themselves (``load_state_dict(assign=True)``), so the
peak is the source model plus the pruned one, never a second full copy.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import torch

from warmstart.prune.arch import _LAYER_RE, check_model
from warmstart.prune.importance import Importance
from warmstart.prune.plan import PrunePlan, PruneTarget, make_plan


def _rows_cols(t: torch.Tensor, rows: torch.Tensor | None, cols: torch.Tensor | None) -> torch.Tensor:
    if rows is not None:
        t = t.index_select(0, rows)
    if cols is not None:
        t = t.index_select(1, cols)
    return t.contiguous() if (rows is not None or cols is not None) else t.detach().clone()


def _head_rows(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Row indices of the ``head_dim``-wide slices of the given heads."""
    return (heads[:, None] * head_dim + torch.arange(head_dim)).reshape(-1)


def _slice_layer_param(name: str, t: torch.Tensor, plan: PrunePlan, i: int) -> torch.Tensor:
    d = plan.dims
    hid = plan.hidden if plan.new_dims.hidden < d.hidden else None
    q = _head_rows(plan.heads[i], d.head_dim) if plan.new_dims.heads < d.heads else None
    kv = _head_rows(plan.kv_heads[i], d.head_dim) if plan.new_dims.kv_heads < d.kv_heads else None
    mlp = plan.neurons[i] if plan.new_dims.intermediate < d.intermediate else None
    kind, _, wb = name.rpartition(".")
    weight = wb == "weight"
    if kind in ("input_layernorm", "post_attention_layernorm"):
        return _rows_cols(t, hid, None)
    if kind in ("self_attn.q_norm", "self_attn.k_norm"):
        return t.detach().clone()  # over head_dim: untouched by pruning
    if kind == "self_attn.q_proj":
        return _rows_cols(t, q, hid if weight else None)
    if kind in ("self_attn.k_proj", "self_attn.v_proj"):
        return _rows_cols(t, kv, hid if weight else None)
    if kind == "self_attn.o_proj":
        return _rows_cols(t, hid, q if weight else None)
    if kind in ("mlp.gate_proj", "mlp.up_proj"):
        return _rows_cols(t, mlp, hid if weight else None)
    if kind == "mlp.down_proj":
        return _rows_cols(t, hid, mlp if weight else None)
    raise ValueError(f"cannot slice parameter {name!r}")  # check_model refuses these earlier


def sliced_state_dict(model: torch.nn.Module, plan: PrunePlan) -> dict[str, torch.Tensor]:
    """The pruned model's parameters (new layer numbering; tied LM head left out)."""
    d = plan.dims
    hid = plan.hidden if plan.new_dims.hidden < d.hidden else None
    renumber = {old: new for new, old in enumerate(plan.layers)}
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, t in model.named_parameters():  # tied weights appear once
            m = _LAYER_RE.match(name)
            if m:
                i = int(m.group(1))
                if i in renumber:
                    out[f"model.layers.{renumber[i]}.{m.group(2)}"] = _slice_layer_param(m.group(2), t, plan, i)
            elif name == "model.norm.weight":
                out[name] = _rows_cols(t, hid, None)
            elif name in ("model.embed_tokens.weight", "lm_head.weight"):
                out[name] = _rows_cols(t, None, hid)
            else:
                raise ValueError(f"cannot slice parameter {name!r}")
    return out


def pruned_config(config, plan: PrunePlan):
    """A copy of ``config`` with the pruned shape (``head_dim`` explicit, per-layer lists sliced)."""
    new = copy.deepcopy(config)
    n = plan.new_dims
    new.hidden_size = n.hidden
    new.intermediate_size = n.intermediate
    new.num_attention_heads = n.heads
    new.num_key_value_heads = n.kv_heads
    new.head_dim = n.head_dim
    new.num_hidden_layers = n.layers
    if isinstance(getattr(new, "layer_types", None), list | tuple):
        new.layer_types = [config.layer_types[i] for i in plan.layers]
    if getattr(new, "max_window_layers", None) is not None:
        new.max_window_layers = min(new.max_window_layers, n.layers)
    return new


def _old_name(name: str, layers: list[int]) -> str:
    m = _LAYER_RE.match(name)
    return f"model.layers.{layers[int(m.group(1))]}.{m.group(2)}" if m else name


def _fill_meta_tensors(new: torch.nn.Module, old: torch.nn.Module, layers: list[int]) -> None:
    """Copy non-persistent buffers and tensor attributes (rotary tables) still on ``meta`` from the source."""
    for name, mod in new.named_modules():
        src = old.get_submodule(_old_name(name, layers)) if name else old
        for key, buf in list(mod._buffers.items()):
            if buf is not None and buf.is_meta:
                mod._buffers[key] = src._buffers[key].detach().clone()
        for key, val in list(vars(mod).items()):
            if isinstance(val, torch.Tensor) and val.is_meta:
                setattr(mod, key, getattr(src, key).detach().clone())
    bad = [n for n, t in [*new.named_parameters(), *new.named_buffers()] if t.is_meta]
    if bad:
        raise RuntimeError(f"pruned model has tensors left on meta: {bad[:5]}")


def prune_model(
    model: torch.nn.Module,
    importance: Importance,
    target: PruneTarget | dict,
    *,
    plan: PrunePlan | None = None,
) -> torch.nn.Module:
    """A new, smaller model of the same class with the most important units of ``model``.

    ``model`` is not modified. The plan (which units were kept and dropped)
    is attached as ``pruned.prune_plan`` and written beside the weights by
    :func:`save_pruned`. Raises ``ValueError`` (unsupported architecture,
    target larger than the model, invalid GQA target, every layer pruned)
    before any tensor is copied.
    """
    if getattr(model, "prune_mask_plan", None) is not None:
        raise ValueError("this model is masked (warmstart.prune.mask_model): prune the unmasked model instead")
    if plan is None:
        plan = make_plan(model, importance, target)
    state = sliced_state_dict(model, plan)
    config = pruned_config(model.config, plan)
    dtype = next(model.parameters()).dtype
    with torch.device("meta"):
        new = type(model)(config)
    if plan.dims.tied:
        state.pop("lm_head.weight", None)
    missing, unexpected = new.load_state_dict(state, strict=False, assign=True)
    del state
    missing = [k for k in missing if not (plan.dims.tied and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"sliced state does not fit the pruned model: missing {missing}, unexpected {unexpected}")
    if plan.dims.tied:
        new.lm_head.weight = new.model.embed_tokens.weight
    _fill_meta_tensors(new, model, plan.layers)
    new.config.dtype = dtype
    if getattr(model, "generation_config", None) is not None:
        new.generation_config = copy.deepcopy(model.generation_config)
    new.train(model.training)
    new.prune_plan = plan
    return new


def save_pruned(
    model: torch.nn.Module, tokenizer: Any | None, out_dir: str | os.PathLike, *, plan: PrunePlan | None = None
) -> Path:
    """Save a pruned model (safetensors, config), its tokenizer and ``prune_plan.json``.

    Refuses a *masked* model (its norms carry a rescaled epsilon that the
    config cannot express) and an unsupported one, before writing anything.
    """
    from warmstart.io import write_text
    from warmstart.model import save_model

    if getattr(model, "prune_mask_plan", None) is not None:
        raise ValueError("this model is masked (warmstart.prune.mask_model), not sliced: save the prune_model result")
    check_model(model)
    plan = plan or getattr(model, "prune_plan", None)
    if tokenizer is not None and len(tokenizer) > model.config.vocab_size:
        raise ValueError(
            f"tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {model.config.vocab_size}"
        )
    out = save_model(model, tokenizer, out_dir)
    if plan is not None:
        write_text(out / "prune_plan.json", json.dumps(plan.to_dict(), indent=1))
    return out
