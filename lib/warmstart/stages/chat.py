"""Stage ``chat``: Alfred-style chat fine-tuning of the study's adapted model, with its prompt-loss ablation.

The adapted model (``chat.run``: the evaluation's best run, or a named run) gets Alfred-40B-1023's chat tokens
and a Hugging Face chat template with generation marks (:mod:`warmstart.chat.template`); instruction items are
built from the corpus' train chapters and held out from its test chapters (:mod:`warmstart.chat.data`); one
run per prompt-loss weight (``chat.prompt_loss_weight``, then ``chat.ablation``) trains on Alfred's
short/long/replay mix through the project's trainer. Measured on held-out items: response bits per byte
(paired against the model before tuning), template adherence, chrF against the adapted model's zero-shot
NorMistral-format translations, and source-language bits per byte (forgetting), each with an interval.

Outputs: ``data/chat`` (the start model, items, role shards, one run dir per weight with its log, TensorBoard
and final model), ``reports/chat/chat.json`` (details), ``reports/metrics/chat.json`` (headline), the report
fragment and ``reports/cards/chat/MODEL_CARD.md``.
"""

from __future__ import annotations

from typing import Any

from warmstart.stages.contract import SHARED, declared

PARAMS = (
    *SHARED,
    "vocab_swap.methods",
    "vocab_swap.pad_multiple",
    "study.arms",
    "base.trust_remote_code",
    "pretrain.seq_len",
    "chat",
)


def run(params: Any) -> dict[str, Any]:
    """Prepare, train every prompt-loss weight, measure, and write the report's pieces; returns the headline."""
    from warmstart.chat.study import collect, run_study

    params = declared(params, "chat", PARAMS)
    return collect(params, run_study(params))
