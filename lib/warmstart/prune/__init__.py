"""Minitron-style structured pruning of Hugging Face causal LMs.

The recipe of Minitron (Muralidharan et al. 2024, "Compact Language Models
via Pruning and Knowledge Distillation", arXiv:2407.14679) and
Llama-3.1-Minitron (Sreenivas et al. 2024, "LLM Pruning and Distillation in
Practice: The Minitron Approach", arXiv:2408.11796), natively on
``transformers`` models (Llama, Mistral, Qwen3)::

    from warmstart.prune import PruneTarget, estimate_importance, prune_model, save_pruned
    imp = estimate_importance(model, calib_batches)            # hooks, no gradients
    small = prune_model(model, imp, PruneTarget(hidden=64, intermediate=172))
    save_pruned(small, tokenizer, "out/pruned")                # AutoModelForCausalLM loads it

    python -m warmstart.prune bench [--report FILE.md]         # Llama-3.2-1B shape on CPU

Modules (each imports only those above it):

* ``arch``: supported architectures, ``Dims``, ``check_model``, ``count_params``, ``params_of``;
* ``importance``: ``Importance``, ``estimate_importance``, ``random_importance``;
* ``plan``: ``PruneTarget``, ``PrunePlan``, ``make_plan``, ``resolve_target``, ``target_for_budget``;
* ``slicing``: ``prune_model``, ``save_pruned``, ``pruned_config``, ``sliced_state_dict``;
* ``masking``: ``mask_model``, ``apply_mask``, ``masking_check``, ``lm_loss``;
* ``bench``: the 1B-shape CPU benchmark (``python -m warmstart.prune bench``; not re-exported);
* ``teacher``, ``students``: the compress stages' teacher (its correction, calibration, masking metric, record,
  head-mask bound) and students (the variants, their starting models, curves and records); not re-exported.
"""

from __future__ import annotations

from warmstart.prune.arch import SUPPORTED, Dims, check_model, count_params, dims_of, params_of
from warmstart.prune.importance import Importance, estimate_importance, random_importance
from warmstart.prune.masking import apply_mask, lm_loss, mask_model, masking_check
from warmstart.prune.plan import PrunePlan, PruneTarget, make_plan, resolve_target, target_for_budget
from warmstart.prune.slicing import prune_model, pruned_config, save_pruned, sliced_state_dict

__all__ = [
    "apply_mask",
    "check_model",
    "count_params",
    "Dims",
    "dims_of",
    "estimate_importance",
    "Importance",
    "lm_loss",
    "make_plan",
    "mask_model",
    "masking_check",
    "params_of",
    "prune_model",
    "pruned_config",
    "PrunePlan",
    "PruneTarget",
    "random_importance",
    "resolve_target",
    "save_pruned",
    "sliced_state_dict",
    "SUPPORTED",
    "target_for_budget",
]
