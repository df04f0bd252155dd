"""The ``hf-default`` method: the rows transformers' ``resize_token_embeddings`` adds.

What transformers 5 does (``PreTrainedModel.resize_token_embeddings``, "mean resizing" since PR #33325,
``mean_resizing=True`` by default; read in 5.24):

- each added input row is drawn from a multivariate normal with the old rows' mean and **1e-9 times** their
  covariance (the population covariance, over every old row): the mean row plus noise of about 3e-5 old
  standard deviations. When ``1e-9 * covariance`` is not positive definite (fewer old rows than dimensions, or a
  singular covariance) every added row is the mean row exactly;
- an untied LM head (``nn.Linear``) gets the same from its own rows, drawn after the input rows from the same
  generator; its bias, if any, ``N(mean, (1e-9 std)^2)`` of the old bias; a tied head is the input matrix;
- ``mean_resizing=False``: the added rows are the model's ``_init_weights`` draws, ``N(0, initializer_range^2)``;
- the draws come from torch's global generator, after the new ``nn.Embedding`` / ``nn.Linear`` constructors
  have made (and discarded) their own initial draws: "the same seed" is ``torch.manual_seed(seed)`` right before
  the call, and the rows depend on the old matrices' shapes;
- the rows below the old size are copied by *id*, which means nothing across two tokenizers.

Here, as for every method, special tokens are mapped by role and exact matches are copied (as ``exact``); the
rest, in new-id order, get the rows transformers adds when it grows the OLD matrices by that many rows. The call
is transformers' own ``resize_token_embeddings`` on a shell ``PreTrainedModel`` that holds only the old matrices
(no body, so a 131072 x 5120 swap runs on tensors), inside ``torch.random.fork_rng`` after
``torch.manual_seed(seed)``: the caller's generator is left as it was.
"""

from __future__ import annotations

from typing import Any

import torch

from warmstart.vocab_swap.plan import Combination, InitPlan, PlanRequest, _assemble

#: transformers' scale of the old covariance for the added rows (``_init_added_embeddings_weights_with_mean``).
COVARIANCE_SCALE = 1e-9


def plan_hf_default(req: PlanRequest) -> tuple[InitPlan, InitPlan]:
    """``hf-default``: exact matches copied, the rest made by transformers (:func:`resize_rows`)."""
    base = req.base
    plan = _assemble(base, base.matches, Combination.empty(), base.rest)
    plan.sampler = "hf"
    return plan, plan


def _shell_class() -> type:
    from torch import nn
    from transformers import PretrainedConfig, PreTrainedModel

    class _Shell(PreTrainedModel):
        """A PreTrainedModel with an input embedding and an optional LM head, nothing else."""

        config_class = PretrainedConfig
        base_model_prefix = "shell"

        def __init__(self, config: Any, embed: torch.Tensor, head: torch.Tensor | None, bias: torch.Tensor | None):
            super().__init__(config)
            self.embed = nn.Embedding.from_pretrained(embed, freeze=True)
            self.head = None
            if head is not None:
                lin = nn.Linear(head.shape[1], head.shape[0], bias=bias is not None, device="meta")
                lin.weight = nn.Parameter(head, requires_grad=False)
                if bias is not None:
                    lin.bias = nn.Parameter(bias, requires_grad=False)
                self.head = lin

        def get_input_embeddings(self) -> Any:
            return self.embed

        def set_input_embeddings(self, value: Any) -> None:
            self.embed = value

        def get_output_embeddings(self) -> Any:
            return self.head

        def set_output_embeddings(self, value: Any) -> None:
            self.head = value

    return _Shell


def resize_rows(
    embed: torch.Tensor,
    head: torch.Tensor | None,
    bias: torch.Tensor | None,
    n: int,
    seed: int,
    *,
    mean_resizing: bool = True,
    initializer_range: float = 0.02,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The ``n`` rows transformers' ``resize_token_embeddings(rows + n, mean_resizing=...)`` adds to ``embed``
    (and to an untied ``head`` and its ``bias``) after ``torch.manual_seed(seed)``: (embed rows, head rows or
    None, bias values or None), in the old dtype. The global generator is restored afterwards."""
    if head is None and bias is not None:
        raise ValueError("a bias needs its (untied) head")
    if n == 0:
        return (
            embed.new_zeros(0, embed.shape[1]),
            None if head is None else head.new_zeros(0, head.shape[1]),
            None if bias is None else bias.new_zeros(0),
        )
    from transformers import PretrainedConfig
    from transformers.utils import logging as hf_logging

    rows = embed.shape[0]
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its "initialized from a multivariate normal" warning, once per process
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            config = PretrainedConfig(initializer_range=float(initializer_range), tie_word_embeddings=False)
            shell = _shell_class()(
                config,
                embed.detach(),
                None if head is None else head.detach(),
                None if bias is None else bias.detach(),
            )
            torch.manual_seed(int(seed))
            shell.resize_token_embeddings(rows + n, mean_resizing=mean_resizing)
            e = shell.get_input_embeddings().weight.detach()[rows:].clone()
            h = b = None
            if head is not None:
                out = shell.get_output_embeddings()
                h = out.weight.detach()[rows:].clone()
                b = out.bias.detach()[rows:].clone() if bias is not None else None
    finally:
        hf_logging.set_verbosity(level)
    return e, h, b
