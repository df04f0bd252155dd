"""GPU paths for training: attention dispatch and fused ops, each with a plain-torch reference.

One entry point, :func:`apply`, patches a transformers Llama/Mistral model
*instance* (never the classes, so other models in the process are untouched)
according to :class:`KernelOptions` and what the device allows, and returns
a dict saying what was done::

    from warmstart.kernels import KernelOptions, apply, attention_inputs
    report = apply(model, KernelOptions(attention="auto", fused=True, mask="hybrid"),
                   device=accelerator.device, dtype=torch.bfloat16)
    # {'attention': 'warmstart_flex', 'rms_norm': 'liger x33', 'swiglu': 'liger x16', ...}

* attention: :func:`choose_attention` (flash-attn > SDPA, FlexAttention for
  document / hybrid masks on CUDA), set through transformers'
  ``set_attn_implementation``; the model inputs for it come from
  :func:`attention_inputs`.
* fused ops (Liger-Kernel Triton kernels, :mod:`warmstart.kernels.fused`):
  RMSNorm, SwiGLU and RoPE replace the forward of each matching submodule;
  the fused linear + cross-entropy replaces the CausalLM's forward when it
  is given ``labels``, so ``model(**batch).loss`` is computed without the
  ``tokens x vocab`` logits (``logits`` is then ``None``). Without a usable
  Triton (CPU), RMSNorm/SwiGLU/RoPE are left alone and the loss falls back
  to the chunked, checkpointed plain-torch reference.

Defaults change nothing (``KernelOptions()`` is a no-op), so the CPU
default study is unaffected.
"""

from __future__ import annotations

import types
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict

from warmstart.kernels import fused, reference
from warmstart.kernels.attention import (
    FLEX,
    attention_inputs,
    block_mask,
    choose_attention,
    flash_attn_installed,
    mask_kind,
    register_flex,
)

__all__ = [
    "FLEX", "KernelOptions", "apply", "attention_inputs", "block_mask", "choose_attention", "flash_attn_installed",
    "fused", "mask_kind", "reference", "register_flex",
]  # fmt: skip


class KernelOptions(BaseModel):
    """What to enable. ``attention``: ``None`` keeps the model's, ``"auto"`` dispatches, or a name."""

    model_config = ConfigDict(extra="forbid")

    attention: Literal["auto", "sdpa", "eager", "flash_attention_2", "warmstart_flex"] | None = None
    mask: Literal["causal", "document", "hybrid"] = "causal"
    rms_norm: bool = False
    swiglu: bool = False
    rope: bool = False
    fused_linear_cross_entropy: bool = False

    @classmethod
    def all(cls, **kw) -> "KernelOptions":
        """Everything on (attention "auto")."""
        base = dict(attention="auto", rms_norm=True, swiglu=True, rope=True, fused_linear_cross_entropy=True)
        return cls(**{**base, **kw})


def _bind(module: torch.nn.Module, fn) -> None:
    module.forward = types.MethodType(fn, module)


def _rms_forward(self, hidden_states):
    return fused.rms_norm(hidden_states, self.weight, self.variance_epsilon)


def _mlp_forward(self, x):
    return self.down_proj(fused.swiglu(self.gate_proj(x), self.up_proj(x)))


def _with_rope(forward):
    """The same attention forward, its ``apply_rotary_pos_emb`` resolved to the fused op."""
    fn = forward.__func__ if hasattr(forward, "__func__") else forward
    g = dict(fn.__globals__, apply_rotary_pos_emb=fused.rope)
    new = types.FunctionType(fn.__code__, g, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__kwdefaults__ = fn.__kwdefaults__
    return new


def _flce_forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                  inputs_embeds=None, labels=None, use_cache=None, logits_to_keep=0, **kwargs):  # fmt: skip
    from transformers.modeling_outputs import CausalLMOutputWithPast

    if labels is None:
        return type(self).forward(self, input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                  past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
                                  logits_to_keep=logits_to_keep, **kwargs)  # fmt: skip
    num_items = kwargs.pop("num_items_in_batch", None)
    out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                     past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache, **kwargs)  # fmt: skip
    head = self.lm_head
    loss = fused.linear_cross_entropy(out.last_hidden_state, head.weight, labels, head.bias, num_items)
    return CausalLMOutputWithPast(loss=loss, logits=None, past_key_values=out.past_key_values,
                                  hidden_states=out.hidden_states, attentions=out.attentions)  # fmt: skip


def apply(
    model: torch.nn.Module,
    opts: KernelOptions,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, str]:
    """Patch ``model`` (in place) as ``opts`` ask and the device allows; say what was done per feature.

    ``device`` defaults to the model's, ``dtype`` (the compute dtype: bf16
    under autocast) to the model's parameter dtype. Values: ``"liger xN"``
    (N submodules patched), ``"torch-chunked"`` (reference loss),
    ``"off"``, or ``"skipped: <why>"``. Call it before ``accelerator.prepare``
    and ``torch.compile``.
    """
    p = next(model.parameters())
    device = torch.device(device) if device is not None else p.device
    dtype = dtype or p.dtype
    triton = fused.triton_usable(device)
    why = "no Triton on this device" if not fused.liger_installed() or device.type != "cuda" else ""
    why = f"skipped: {why or 'Triton unavailable'} (liger-kernel + CUDA, or TRITON_INTERPRET=1)"
    out: dict[str, str] = {}

    if opts.attention is None:
        out["attention"] = f"unchanged ({model.config._attn_implementation})"
    else:
        name = choose_attention(device, dtype, opts.mask) if opts.attention == "auto" else opts.attention
        if name == FLEX:
            register_flex()
        model.set_attn_implementation(name)
        out["attention"] = model.config._attn_implementation

    silu = getattr(model.config, "hidden_act", "silu") == "silu"
    counts = {"rms_norm": 0, "swiglu": 0, "rope": 0}
    for mod in model.modules():
        cls = type(mod).__name__
        if opts.rms_norm and triton and cls.endswith("RMSNorm") and hasattr(mod, "variance_epsilon"):
            _bind(mod, _rms_forward)
            counts["rms_norm"] += 1
        elif opts.swiglu and triton and silu and all(hasattr(mod, a) for a in ("gate_proj", "up_proj", "down_proj")):
            _bind(mod, _mlp_forward)
            counts["swiglu"] += 1
        elif opts.rope and triton and cls.endswith("Attention") and "apply_rotary_pos_emb" in type(mod).forward.__globals__:
            _bind(mod, _with_rope(type(mod).forward))
            counts["rope"] += 1
    for key, n in counts.items():
        if not getattr(opts, key):
            out[key] = "off"
        elif not triton:
            out[key] = why
        elif key == "swiglu" and not silu:
            out[key] = f"skipped: hidden_act is {model.config.hidden_act}, not silu"
        else:
            out[key] = f"liger x{n}"

    if not opts.fused_linear_cross_entropy:
        out["fused_linear_cross_entropy"] = "off"
    elif not (hasattr(model, "lm_head") and hasattr(model, "model")):
        out["fused_linear_cross_entropy"] = "skipped: not a *ForCausalLM with .model and .lm_head"
    else:
        _bind(model, _flce_forward)
        out["fused_linear_cross_entropy"] = "liger" if triton else "torch-chunked"
    return out
