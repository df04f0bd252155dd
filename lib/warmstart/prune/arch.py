"""Which models the pruner understands, and their shape.

Minitron (Muralidharan et al. 2024, "Compact Language Models via Pruning and
Knowledge Distillation") and Llama-3.1-Minitron (Sreenivas et al. 2024, "LLM
Pruning and Distillation in Practice: The Minitron Approach") prune four
axes of a pre-norm decoder: embedding (hidden) channels, attention heads, MLP
neurons and whole layers. Here that is done on Hugging Face models whose
decoder is the Llama layout:

``model.embed_tokens``, ``model.layers[i].{input_layernorm, self_attn.{q,k,v,o}_proj,
post_attention_layernorm, mlp.{gate,up,down}_proj}``, ``model.norm``, ``lm_head``.

``LlamaForCausalLM``, ``MistralForCausalLM`` and ``Qwen3ForCausalLM`` (whose
extra ``q_norm``/``k_norm`` act on the head dimension, which pruning never
changes) have it; anything else is refused with a ``ValueError`` that names
the architecture, before any work is done.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import torch

SUPPORTED = ("llama", "mistral", "qwen3")

# every parameter a supported model may have, relative to the model root
_LAYER_PARAMS = {
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "self_attn.q_proj.bias",
    "self_attn.k_proj.bias",
    "self_attn.v_proj.bias",
    "self_attn.o_proj.bias",
    "self_attn.q_norm.weight",
    "self_attn.k_norm.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
    "mlp.gate_proj.bias",
    "mlp.up_proj.bias",
    "mlp.down_proj.bias",
}
_TOP_PARAMS = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}
_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class Dims:
    """The prunable shape of a model (from its config)."""

    model_type: str
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    layers: int
    vocab: int
    tied: bool
    attention_bias: bool
    mlp_bias: bool
    qk_norm: bool

    @property
    def group(self) -> int:
        """Query heads per key-value head (the GQA group size)."""
        return self.heads // self.kv_heads

    def to_dict(self) -> dict:
        return asdict(self)


def _unsupported(what: str) -> ValueError:
    return ValueError(
        f"unsupported architecture {what}: warmstart.prune handles Llama-layout decoders "
        f"(model_type one of {', '.join(SUPPORTED)})"
    )


def dims_of(config, name: str | None = None) -> Dims:
    """The :class:`Dims` of a ``transformers`` config; ``ValueError`` for an unsupported architecture."""
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED:
        arch = name or (getattr(config, "architectures", None) or [type(config).__name__])[0]
        raise _unsupported(f"{arch!r} (model_type {model_type!r})")
    heads = int(config.num_attention_heads)
    kv = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    if heads % kv:
        raise ValueError(f"the model's heads ({heads}) are not divisible by its kv_heads ({kv})")
    return Dims(
        model_type=model_type,
        hidden=int(config.hidden_size),
        intermediate=int(config.intermediate_size),
        heads=heads,
        kv_heads=kv,
        head_dim=int(head_dim),
        layers=int(config.num_hidden_layers),
        vocab=int(config.vocab_size),
        tied=bool(getattr(config, "tie_word_embeddings", False)),
        attention_bias=bool(getattr(config, "attention_bias", False)),
        mlp_bias=bool(getattr(config, "mlp_bias", False)) and model_type == "llama",
        qk_norm=model_type == "qwen3",
    )


def check_model(model: torch.nn.Module) -> Dims:
    """Check that ``model`` is a supported causal LM with the Llama module layout; return its dims.

    Besides the config's ``model_type``, every parameter name must be one the
    slicer knows, so a variant with an extra weight is refused rather than
    half-pruned.
    """
    config = getattr(model, "config", None)
    if config is None:
        raise _unsupported(f"{type(model).__name__!r} (no transformers config)")
    dims = dims_of(config, type(model).__name__)
    if not hasattr(model, "lm_head") or not hasattr(getattr(model, "model", None), "layers"):
        raise _unsupported(f"{type(model).__name__!r} (expected a *ForCausalLM with model.layers and lm_head)")
    for name, _ in model.named_parameters(remove_duplicate=False):
        m = _LAYER_RE.match(name)
        if (m and m.group(2) not in _LAYER_PARAMS) or (not m and name not in _TOP_PARAMS):
            raise _unsupported(f"{type(model).__name__!r} (unknown parameter {name!r})")
    if len(model.model.layers) != dims.layers:
        raise ValueError(f"model has {len(model.model.layers)} layers but its config says {dims.layers}")
    return dims


def norms(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Every RMSNorm over the hidden size: each layer's two and the final one."""
    out = []
    for layer in model.model.layers:
        out += [layer.input_layernorm, layer.post_attention_layernorm]
    return out + [model.model.norm]


def params_of(dims: Dims) -> dict[str, int]:
    """Parameter counts implied by ``dims`` (``total``, ``embedding``, ``non_embedding``).

    ``embedding`` is the input embedding plus an untied LM head; the rest is
    ``non_embedding`` (attention, MLP, norms). Equals :func:`count_params` of
    a model with these dims (the tests check it).
    """
    d, hd = dims.hidden, dims.head_dim
    q, kv = dims.heads * hd, dims.kv_heads * hd
    attn = d * q + 2 * d * kv + q * d + (q + 2 * kv + d) * dims.attention_bias + 2 * hd * dims.qk_norm
    mlp = 3 * d * dims.intermediate + (2 * dims.intermediate + d) * dims.mlp_bias
    non_emb = dims.layers * (attn + mlp + 2 * d) + d
    emb = dims.vocab * d * (1 if dims.tied else 2)
    return {"total": emb + non_emb, "embedding": emb, "non_embedding": non_emb}


def count_params(model: torch.nn.Module) -> dict[str, int]:
    """Distinct parameters of ``model`` split as ``total``, ``embedding`` (input embedding and an untied LM head) and ``non_embedding``."""
    total = sum(p.numel() for p in model.parameters())
    emb_params = {id(p): p for p in (model.get_input_embeddings().weight, model.get_output_embeddings().weight)}
    emb = sum(p.numel() for p in emb_params.values())
    return {"total": total, "embedding": emb, "non_embedding": total - emb}
