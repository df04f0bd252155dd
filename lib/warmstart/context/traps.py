"""The pitfalls of RoPE context extension in transformers, measured (numbers, not warnings).

Each function returns a number a test (and the report) can hold on to:

* :func:`config_edit_gap`: editing ``model.config`` of a built model changes
  no logit (``inv_freq`` was computed at construction), while
  :func:`~warmstart.context.rope_scaling.extend` does.
* :func:`missing_original_gap`: YaRN/llama3 frequencies when
  ``original_max_position_embeddings`` is left out and transformers fills
  in ``max_position_embeddings`` (the new length) instead of the trained one.
* :func:`dynamic_bases`: transformers' ``dynamic`` base at ``s L`` next to
  static NTK's, and proof that it reads ``max_position_embeddings`` (not
  ``original_max_position_embeddings``) as the original length.
* :func:`trained_length_gap`: how much a method changes the model *at*
  the trained length (``pi``, ``yarn``: a lot; ``dynamic``: nothing).
* :func:`cache_gap`: logits with a KV cache versus one full forward
  (``dynamic`` beyond ``L``: they differ, its keys were rotated at an
  earlier length; every static method: equal to float noise).
* :func:`dynamic_history_gap`: ``dynamic`` frequencies only grow within a
  model object, so a forward at 4L changes a later forward at 2L.

:func:`trap_report` runs them all on one model.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

from warmstart.context.rope_scaling import _apply_fields, extend, head_dim, model_rope, ntk_base, rope_config


@torch.no_grad()
def logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    """Float32 logits of one full forward (no cache), model in eval mode."""
    was = model.training
    model.eval()
    try:
        return model(input_ids=ids, use_cache=False).logits.float()
    finally:
        model.train(was)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def random_ids(model: Any, length: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (batch, length), generator=g)


def config_edit_gap(model: Any, method: str, factor: float, trained_len: int, ids: torch.Tensor, **opts: Any) -> dict:
    """``{"config_edit_only": max |dlogit|, "extend": max |dlogit|}`` against the unchanged model on ``ids``."""
    base = logits(model, ids)
    edited = copy.deepcopy(model)
    _apply_fields(edited.config, rope_config(method, model.config, factor, trained_len, **opts))
    rebuilt = extend(model, method, factor, trained_len, **opts)
    return {"config_edit_only": max_diff(base, logits(edited, ids)), "extend": max_diff(base, logits(rebuilt, ids))}


def missing_original_gap(model: Any, method: str, factor: float, trained_len: int, **opts: Any) -> float:
    """Max relative change of ``inv_freq`` when ``original_max_position_embeddings`` is omitted (yarn, llama3...).

    transformers then fills in ``max_position_embeddings`` (``s L``), which
    moves YaRN's ramp and llama3's bands as if the model had been trained
    at ``s L``.
    """
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    fields = rope_config(method, model.config, factor, trained_len, **opts)
    if "original_max_position_embeddings" not in fields["rope_parameters"]:
        raise ValueError(f"method: {method} does not use original_max_position_embeddings")
    good, _ = model_rope(extend(model, method, factor, trained_len, **opts))
    cfg = copy.deepcopy(model.config)
    cfg.rope_parameters = {
        k: v for k, v in fields["rope_parameters"].items() if k != "original_max_position_embeddings"
    }
    cfg.max_position_embeddings = fields["max_position_embeddings"]
    cfg.standardize_rope_params()  # what loading such a config.json does: fills in max_position_embeddings
    bad = ROPE_INIT_FUNCTIONS[cfg.rope_parameters["rope_type"]](cfg, "cpu")[0].double().numpy()
    return float(abs(bad - good).max() / abs(good).max()) if len(good) else 0.0


def dynamic_bases(model: Any, factor: float, trained_len: int) -> dict:
    """transformers' ``dynamic`` at ``s L`` versus static NTK, and which length field it reads.

    Returns the effective bases (recovered from ``inv_freq[1]`` after a
    forward at ``s L``), static NTK's base, and the max relative change of
    dynamic's frequencies when only ``original_max_position_embeddings`` is
    changed (0: it is ignored) or only ``max_position_embeddings`` (not 0).
    """
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    D, L, s = head_dim(model.config), int(trained_len), float(factor)
    b = float(model.config.rope_parameters["rope_theta"])
    n = int(math.ceil(s * L))
    dyn = extend(model, "dynamic", s, L)
    fn = ROPE_INIT_FUNCTIONS["dynamic"]

    def base_of(cfg: Any) -> float:
        inv = fn(cfg, "cpu", seq_len=n)[0].double()
        return float(inv[1] ** (-D / 2.0))  # inv_freq[1] = base^(-2/D)

    ref = fn(dyn.config, "cpu", seq_len=n)[0].double()
    c_orig = copy.deepcopy(dyn.config)
    c_orig.rope_parameters = {**c_orig.rope_parameters, "original_max_position_embeddings": 2 * L}
    c_max = copy.deepcopy(dyn.config)
    c_max.max_position_embeddings = 2 * L
    rel = lambda c: float(((fn(c, "cpu", seq_len=n)[0].double() - ref).abs() / ref).max())  # noqa: E731
    return {
        "dynamic_base_at_sL": base_of(dyn.config),
        "ntk_base": ntk_base(b, s, D),
        "dynamic_factor1_base_at_sL": base_of(extend(model, "dynamic", s, L, dynamic_factor=1.0).config),
        "change_if_original_max_pos_changed": rel(c_orig),
        "change_if_max_pos_changed": rel(c_max),
    }


def trained_length_gap(
    model: Any, method: str, factor: float, trained_len: int, ids: torch.Tensor, **opts: Any
) -> float:
    """Max |dlogit| between ``model`` and its ``method`` extension on ``ids`` (of length <= ``trained_len``)."""
    if ids.shape[1] > trained_len:
        raise ValueError(f"ids: length {ids.shape[1]} is beyond trained_len {trained_len}")
    return max_diff(logits(model, ids), logits(extend(model, method, factor, trained_len, **opts), ids))


@torch.no_grad()
def cached_logits(model: Any, ids: torch.Tensor, prefix_len: int, chunk: int = 1) -> torch.Tensor:
    """Logits of positions ``prefix_len..`` computed as generation does: a prefill, then ``chunk`` tokens at a time."""
    if not 0 < prefix_len < ids.shape[1]:
        raise ValueError(f"prefix_len must be in (0, {ids.shape[1]}), got {prefix_len}")
    was = model.training
    model.eval()
    try:
        out = model(input_ids=ids[:, :prefix_len], use_cache=True)
        cache, parts = out.cache, [out.logits[:, -1:].float()]
        for s in range(prefix_len, ids.shape[1] - 1, chunk):
            e = min(s + chunk, ids.shape[1] - 1)
            out = model(input_ids=ids[:, s:e], cache=cache, use_cache=True)
            cache = out.cache
            parts.append(out.logits.float())
        return torch.cat(parts, dim=1)  # predictions for positions prefix_len .. len-1
    finally:
        model.train(was)


def cache_gap(model: Any, ids: torch.Tensor, prefix_len: int, chunk: int = 1) -> float:
    """Max |dlogit| between cached (prefill ``prefix_len``, then ``chunk``-token steps) and full-forward logits.

    A fresh copy of the model is used for each path, so ``dynamic``'s
    frequency state does not leak from one to the other.
    """
    full = logits(copy.deepcopy(model), ids[:, :-1])[:, prefix_len - 1 :]
    inc = cached_logits(copy.deepcopy(model), ids, prefix_len, chunk)
    return max_diff(full, inc)


def dynamic_history_gap(model: Any, short: torch.Tensor, long: torch.Tensor) -> float:
    """Max |dlogit| on ``short`` between a fresh model and one that first ran ``long`` (dynamic: > 0)."""
    fresh = logits(copy.deepcopy(model), short)
    used = copy.deepcopy(model)
    logits(used, long)
    return max_diff(fresh, logits(used, short))


def trap_report(model: Any, trained_len: int, factor: float = 4.0, seed: int = 0, chunk: int = 16) -> dict:
    """Every trap measured on ``model`` (trained at ``trained_len``): a JSON-serialisable dict of numbers."""
    L, s = int(trained_len), float(factor)
    n = int(math.ceil(s * L))
    at_L, beyond = random_ids(model, L, seed=seed), random_ids(model, n, seed=seed + 1)
    dyn = extend(model, "dynamic", s, L)
    return {
        "config_edit": {m: config_edit_gap(model, m, s, L, at_L) for m in ("pi", "ntk", "yarn", "dynamic")},
        "missing_original_max_pos_rel_inv_freq": {
            m: missing_original_gap(model, m, s, L) for m in ("yarn", "ntk_parts", "llama3")
        },
        "dynamic_bases": dynamic_bases(model, s, L),
        "logit_gap_at_trained_len": {
            m: trained_length_gap(model, m, s, L, at_L) for m in ("pi", "yarn", "ntk", "dynamic", "llama3")
        },
        "cache_gap": {
            "dynamic_beyond_L": cache_gap(dyn, beyond, L, chunk),
            "dynamic_within_L": cache_gap(dyn, at_L, L // 2, chunk),
            "yarn_beyond_L": cache_gap(extend(model, "yarn", s, L), beyond, L, chunk),
            "none_beyond_L": cache_gap(model, beyond, L, chunk),
        },
        "dynamic_history_gap_2L_after_sL": dynamic_history_gap(dyn, beyond[:, : 2 * L], beyond),
    }
