"""Bits per byte: the one loss that compares models with different tokenizers.

Definition (documented once, used by every stage)::

    bits_per_byte = sum over documents of NLL(document tokens) / ln(2) / sum of UTF-8 bytes

Each document is scored on its own: ``ids = tokenizer(text, add_special_tokens=False)``,
the model reads ``[eos] + ids`` (EOS is the document separator the trainer
packs with, so it is the natural "start of document" context) and is scored on
every token of ``ids`` (not on a final EOS). Long documents are cut into
windows of ``seq_len`` predicted tokens; each window restarts its context
(no overlap), which slightly overestimates the loss of very long documents
and is exact for documents shorter than ``seq_len``. Padding never counts.

The tokenizer does not appear in the denominator, so a tokenizer that spends
fewer tokens on the same text is neither rewarded nor punished by it.

The result also carries each document's NLL (``doc_nll_nats``) and UTF-8 size
(``doc_bytes``), in the order of the non-empty input texts: bits per byte is
their ratio of sums, so :mod:`warmstart.evaluate.intervals` can bootstrap it over documents.
The total is summed exactly as before (per batch), so the headline number does
not depend on whether the per-document sums are kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from warmstart.data.clean import first_bytes  # noqa: F401  (re-exported: the stages' bounded samples)
from warmstart.data.corpus import held_out_texts  # noqa: F401  (re-exported: what bits per byte is measured on)

LN2 = math.log(2.0)


def _windows(
    texts: Sequence[str], tokenizer: Any, seq_len: int
) -> tuple[list[tuple[list[int], list[int], int]], list[int]]:
    """``(windows, doc_bytes)``: each window is ``(input ids, target ids, document index)``."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("bits_per_byte needs a tokenizer with an eos token (the document separator)")
    windows: list[tuple[list[int], list[int], int]] = []
    doc_bytes: list[int] = []
    for text in texts:
        if not text:
            continue
        doc = len(doc_bytes)
        doc_bytes.append(len(text.encode("utf-8")))
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        full = [eos, *ids]
        for s in range(0, len(ids), seq_len):
            windows.append((full[s : s + seq_len], full[s + 1 : s + 1 + seq_len], doc))
    return windows, doc_bytes


@torch.no_grad()
def bits_per_byte(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    seq_len: int = 512,
    batch_size: int = 8,
    device: str | torch.device | None = None,
) -> dict[str, float | int]:
    """``{"bits_per_byte", "nll_nats", "tokens", "bytes", "tokens_per_byte", "doc_nll_nats", "doc_bytes"}``
    of ``model`` on ``texts`` (the last two: one entry per non-empty text, in order)."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    windows, doc_bytes = _windows(texts, tokenizer, seq_len)
    n_bytes = sum(doc_bytes)
    if not n_bytes:
        raise ValueError("bits_per_byte needs at least one non-empty text")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    total_nll, total_tokens = 0.0, 0
    doc_nll = [0.0] * len(doc_bytes)
    windows.sort(key=lambda w: len(w[0]))  # less padding; the sum does not depend on the order
    try:
        for b in range(0, len(windows), batch_size):
            chunk = windows[b : b + batch_size]
            width = max(len(w[0]) for w in chunk)
            inp = torch.zeros(len(chunk), width, dtype=torch.long)
            tgt = torch.full((len(chunk), width), -100, dtype=torch.long)
            att = torch.zeros(len(chunk), width, dtype=torch.long)
            for i, (x, y, _) in enumerate(chunk):
                inp[i, : len(x)] = torch.tensor(x)
                tgt[i, : len(y)] = torch.tensor(y)
                att[i, : len(x)] = 1
            logits = model(input_ids=inp.to(device), attention_mask=att.to(device)).logits.float()
            flat_tgt = tgt.to(device).flatten()
            # cross_entropy is nll_loss(log_softmax(.)): one log_softmax serves the total and the per-text sums
            logp = F.log_softmax(logits.flatten(0, 1), dim=-1)
            nll = F.nll_loss(logp, flat_tgt, ignore_index=-100, reduction="sum")
            total_nll += float(nll)
            per_tok = F.nll_loss(logp, flat_tgt, ignore_index=-100, reduction="none")
            for (_, _, doc), row in zip(chunk, per_tok.view(len(chunk), width).sum(1).tolist()):
                doc_nll[doc] += row
            total_tokens += int((tgt != -100).sum())
    finally:
        model.train(was_training)
    return {
        "bits_per_byte": total_nll / LN2 / n_bytes,
        "nll_nats": total_nll,
        "tokens": total_tokens,
        "bytes": n_bytes,
        "tokens_per_byte": total_tokens / n_bytes,
        "doc_nll_nats": doc_nll,
        "doc_bytes": doc_bytes,
    }
