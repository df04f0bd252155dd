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
import warnings
from typing import Literal

import torch
import transformers
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
    "FLEX",
    "KernelNotApplied",
    "KernelOptions",
    "apply",
    "not_applied",
    "attention_inputs",
    "block_mask",
    "choose_attention",
    "flash_attn_installed",
    "fused",
    "mask_kind",
    "reference",
    "register_flex",
]


ROPE_FN = "apply_rotary_pos_emb"  # the function transformers' Llama-family attention forwards call


class KernelNotApplied(UserWarning):
    """A requested fused kernel could not be bound (device, model class or transformers internals)."""


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
    def all(cls, **kw) -> KernelOptions:
        """Everything on (attention "auto")."""
        base = dict(attention="auto", rms_norm=True, swiglu=True, rope=True, fused_linear_cross_entropy=True)
        return cls(**{**base, **kw})


def _bind(module: torch.nn.Module, fn) -> None:
    module.forward = types.MethodType(fn, module)


def _rms_forward(self, hidden_states):
    return fused.rms_norm(hidden_states, self.weight, self.variance_epsilon)


def _mlp_forward(self, x):
    return self.down_proj(fused.swiglu(self.gate_proj(x), self.up_proj(x)))


def _inner(fn):
    """The innermost function under ``functools.wraps`` decorators (transformers wraps forwards)."""
    fn = getattr(fn, "__func__", fn)
    chain = [fn]
    while hasattr(chain[-1], "__wrapped__"):
        chain.append(chain[-1].__wrapped__)
    return chain


def _uses_global(fn, name: str) -> bool:
    """Whether ``fn`` (through its decorators) reads ``name`` as a global of its module."""
    inner = _inner(fn)[-1]
    code = getattr(inner, "__code__", None)
    return code is not None and name in code.co_names and name in inner.__globals__


def _rebuild(fn, old, new):
    """A copy of function ``fn`` whose closure cells holding ``old`` hold ``new`` instead."""
    cells = tuple(types.CellType(new) if c.cell_contents is old else c for c in (fn.__closure__ or ()))
    out = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, cells or None)
    out.__kwdefaults__, out.__dict__ = fn.__kwdefaults__, {k: v for k, v in fn.__dict__.items() if k != "__wrapped__"}
    out.__wrapped__ = new
    return out


def _with_global(forward, name: str, value):
    """The same forward, its global ``name`` resolved to ``value``, decorators kept.

    transformers decorates attention forwards (``deprecate_kwarg`` from 5.24 on), so the function
    that reads ``apply_rotary_pos_emb`` is the innermost one; each decorator's closure is rebuilt
    around the new inner function, so their behaviour (kwarg renaming) is unchanged.
    """
    chain = _inner(forward)
    inner = chain[-1]
    new = types.FunctionType(
        inner.__code__, dict(inner.__globals__, **{name: value}), inner.__name__, inner.__defaults__, inner.__closure__
    )
    new.__kwdefaults__ = inner.__kwdefaults__
    for wrapper, old in zip(reversed(chain[:-1]), reversed(chain[1:])):
        if not any(c.cell_contents is old for c in (wrapper.__closure__ or ())):
            raise TypeError(
                f"cannot rebuild decorator {wrapper.__qualname__}: it does not close over {old.__qualname__}"
            )
        new = _rebuild(wrapper, old, new)
    return new


def _flce_forward(self, input_ids=None, labels=None, **kwargs):
    """The CausalLM forward with the fused linear + cross-entropy loss when ``labels`` are given.

    Every other argument passes through untouched, so it follows whatever the model's own forward
    accepts (transformers renamed ``past_key_values`` to ``cache`` in 5.24).
    """
    from transformers.modeling_outputs import CausalLMOutputWithPast

    if labels is None:
        return type(self).forward(self, input_ids=input_ids, **kwargs)
    num_items = kwargs.pop("num_items_in_batch", None)
    kwargs.pop("logits_to_keep", None)  # no logits are computed
    out = self.model(input_ids=input_ids, **kwargs)
    head = self.lm_head
    loss = fused.linear_cross_entropy(out.last_hidden_state, head.weight, labels, head.bias, num_items)
    return CausalLMOutputWithPast(
        loss=loss,
        logits=None,
        past_key_values=out.past_key_values,
        hidden_states=out.hidden_states,
        attentions=out.attentions,
    )


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
    ``"off"``, ``"skipped: <why>"`` (the device or config rules it out) or
    ``"not applied: <why>"`` (no submodule matched: a model class or
    transformers version whose internals differ). Every requested feature
    that did not take effect also raises a :class:`KernelNotApplied` warning
    (:func:`not_applied` lists them). Call it before ``accelerator.prepare``
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
        elif opts.rope and triton and cls.endswith("Attention") and _uses_global(type(mod).forward, ROPE_FN):
            _bind(mod, _with_global(type(mod).forward, ROPE_FN, fused.rope))
            counts["rope"] += 1
    looked_for = {
        "rms_norm": "*RMSNorm module with variance_epsilon",
        "swiglu": "MLP with gate/up/down_proj",
        "rope": f"*Attention whose forward calls {ROPE_FN}",
    }
    for key, n in counts.items():
        if not getattr(opts, key):
            out[key] = "off"
        elif not triton:
            out[key] = why
        elif key == "swiglu" and not silu:
            out[key] = f"skipped: hidden_act is {model.config.hidden_act}, not silu"
        elif n == 0:
            out[key] = (
                f"not applied: no {looked_for[key]} in {type(model).__name__} (transformers {transformers.__version__})"
            )
        else:
            out[key] = f"liger x{n}"

    if not opts.fused_linear_cross_entropy:
        out["fused_linear_cross_entropy"] = "off"
    elif not (hasattr(model, "lm_head") and hasattr(model, "model")):
        out["fused_linear_cross_entropy"] = "skipped: not a *ForCausalLM with .model and .lm_head"
    else:
        _bind(model, _flce_forward)
        out["fused_linear_cross_entropy"] = "liger" if triton else "torch-chunked"
    for key, value in not_applied(out).items():
        warnings.warn(f"kernel {key} requested but {value}", KernelNotApplied, stacklevel=2)
    return out


def not_applied(report: dict[str, str]) -> dict[str, str]:
    """The requested features of an :func:`apply` report that did not take effect, with the reason."""
    return {k: v for k, v in report.items() if v.startswith(("skipped", "not applied"))}
