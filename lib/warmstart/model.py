"""Build, load and save Hugging Face causal LMs.

Everything here returns plain ``transformers`` models (``LlamaForCausalLM``,
``MistralForCausalLM`` or whatever ``AutoModelForCausalLM`` resolves), so any
artefact we write is loadable with ``AutoModelForCausalLM.from_pretrained``.

* :class:`ModelSpec` / :func:`build_model`: a tiny model from a config, with
  seeded initialisation (the embedded default and every test use these).
  Architectures: ``llama``, ``mistral`` (full attention), and two with
  qk-norm natively in transformers: ``qwen3`` (``Qwen3ForCausalLM``: RMSNorm
  of each query/key head, ``q_norm``/``k_norm`` over ``head_dim``) and
  ``olmo2`` (``Olmo2ForCausalLM``: RMSNorm over the whole q/k projection,
  plus OLMo 2's post-norm blocks). Both get ``head_dim = hidden / heads``,
  no attention bias and no sliding window.
* :func:`load_model`: ``from_pretrained`` with safetensors only and
  ``trust_remote_code`` off unless asked for.
* :func:`save_model`: ``save_pretrained`` (safetensors; transformers 5 writes
  nothing else) plus the tokenizer, written to a temporary sibling directory
  and renamed into place, so a crash never leaves a half-written model dir.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    PreTrainedModel,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from warmstart.config import check_attention_shape
from warmstart.io import atomic_dir

ARCHS = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),  # qk-norm per head (q_norm/k_norm)
    "olmo2": (Olmo2Config, Olmo2ForCausalLM),  # qk-norm over the projections
}
Arch = Literal["llama", "mistral", "qwen3", "olmo2"]


class ModelSpec(BaseModel):
    """A small Llama/Mistral/Qwen3/OLMo 2 model described by its shape (torchtitan-style debug model).

    ``kv_heads`` defaults to ``heads`` (no GQA), ``intermediate`` to the
    Llama-ish ``8/3 * hidden`` rounded up to a multiple of 8, ``vocab_size``
    to the tokenizer's length when the trainer builds it (None here means
    "fill in from the tokenizer").
    """

    model_config = ConfigDict(extra="forbid")

    arch: Arch = "llama"
    vocab_size: int | None = Field(default=None, ge=2)
    hidden: int = Field(default=64, ge=2)
    layers: int = Field(default=2, ge=1)
    heads: int = Field(default=4, ge=1)
    kv_heads: int | None = Field(default=None, ge=1)
    intermediate: int | None = Field(default=None, ge=1)
    max_pos: int = Field(default=2048, ge=1)
    tie_embeddings: bool = False
    rope_theta: float = Field(default=10000.0, gt=0)
    initializer_range: float = Field(default=0.02, gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def _shapes(self) -> ModelSpec:
        check_attention_shape(self.hidden, self.heads, self.kv_heads)
        return self

    def build(self, **special_token_ids: int | None) -> PreTrainedModel:
        if self.vocab_size is None:
            raise ValueError("ModelSpec.vocab_size is not set (the trainer fills it from the tokenizer)")
        return build_model(**self.model_dump(), **special_token_ids)


def build_model(
    arch: Arch = "llama",
    vocab_size: int = 300,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int | None = None,
    intermediate: int | None = None,
    max_pos: int = 2048,
    tie_embeddings: bool = False,
    seed: int = 0,
    rope_theta: float = 10000.0,
    initializer_range: float = 0.02,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
) -> PreTrainedModel:
    """A freshly initialised fp32 causal LM; the same seed gives the same weights.

    The global torch RNG is forked, so building a model does not disturb the
    caller's random stream.
    """
    config_cls, model_cls = ARCHS[arch]
    if intermediate is None:
        intermediate = -(-8 * hidden // 3 // 8) * 8
    extra: dict[str, Any] = {}
    if arch in ("qwen3", "olmo2"):  # their defaults: head_dim 128 (qwen3), eos/pad ids of their tokenizers
        extra = dict(head_dim=hidden // heads, attention_bias=False)
        if arch == "qwen3":
            extra.update(use_sliding_window=False, sliding_window=None)
    config = config_cls(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads or heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_pos,
        tie_word_embeddings=tie_embeddings,
        rope_theta=rope_theta,
        initializer_range=initializer_range,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        **extra,
    )
    if arch == "mistral":
        config.sliding_window = None  # full attention, like Mistral-Nemo
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    return model.float()


def load_model(
    name_or_path: str | os.PathLike,
    trust_remote_code: bool = False,
    dtype: torch.dtype | str = torch.float32,
    **kwargs: Any,
) -> PreTrainedModel:
    """``AutoModelForCausalLM.from_pretrained`` restricted to safetensors weights.

    ``trust_remote_code`` stays off unless the caller (params) turns it on;
    fp32 by default, since the trainer keeps fp32 master weights and autocasts.
    """
    return AutoModelForCausalLM.from_pretrained(
        str(name_or_path), use_safetensors=True, trust_remote_code=trust_remote_code, dtype=dtype, **kwargs
    )


def save_model(model: PreTrainedModel, tokenizer: Any | None, out_dir: str | os.PathLike) -> Path:
    """Write a Hugging Face model dir (config, safetensors weights, tokenizer) atomically."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return out_dir


def count_params(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
