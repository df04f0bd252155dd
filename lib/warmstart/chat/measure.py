"""What the chat stage measures, each on held-out items (test chapters) with an interval.

* :func:`response_nll`: the negative log-likelihood of every assistant response (its content and closing end
  token, given the prompt through the chat template) and its UTF-8 bytes: bits per byte of responses, paired
  between two models over the same items (:func:`warmstart.evaluate.intervals.paired_difference`).
* :func:`~warmstart.context.retrieval.generate_ids` on :func:`turn_prompts`, and :func:`adherent`: greedy
  assistant turns; a turn adheres when it ends with the
  end token within the length limit and emits no role token before it.
* :func:`zero_shot_translations`: NorMistral's zero-shot translation prompt (``Engelsk: {text}\\nBokmål:``,
  cut at the first newline) for the model before chat tuning; :func:`chrf` scores both with sacrebleu's chrF.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from warmstart.chat.template import encode
from warmstart.context.retrieval import generate_ids
from warmstart.data.packing import ROLE_RESPONSE


@torch.no_grad()
def response_nll(model: Any, tokenizer: Any, items: Sequence[dict], batch_size: int = 16) -> tuple[list, list]:
    """``(nll_nats, bytes)`` per item: the NLL of its response tokens (role ``response``) and the UTF-8 bytes
    of its assistant contents."""
    enc = [encode(tokenizer, it["messages"]) for it in items]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    model.eval()
    nll: list[float] = []
    for b in range(0, len(enc), batch_size):
        chunk = enc[b : b + batch_size]
        width = max(len(e[0]) for e in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        att = torch.zeros((len(chunk), width), dtype=torch.long)
        tgt = torch.full((len(chunk), width), -100, dtype=torch.long)
        for i, (x, roles, _) in enumerate(chunk):
            ids[i, : len(x)] = torch.tensor(x)
            att[i, : len(x)] = 1
            r = torch.tensor(roles)
            tgt[i, : len(x)] = torch.where(r == ROLE_RESPONSE, torch.tensor(x), torch.tensor(-100))
        logits = model(input_ids=ids.to(device), attention_mask=att.to(device)).logits.float()
        lab = tgt[:, 1:].to(device)
        per = F.cross_entropy(logits[:, :-1].flatten(0, 1), lab.flatten(), ignore_index=-100, reduction="none")
        nll += per.view(len(chunk), -1).sum(1).tolist()
    return nll, [e[2] for e in enc]


def turn_prompts(tokenizer: Any, items: Sequence[dict]) -> list[list[int]]:
    """Each item's conversation up to its last assistant turn, with the template's generation prompt."""
    prompts = []
    for it in items:
        msgs = it["messages"]
        last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        enc = tokenizer.apply_chat_template(msgs[:last], tokenize=True, add_generation_prompt=True, return_dict=True)
        prompts.append(list(enc["input_ids"]))
    return prompts


def adherent(gen: Sequence[int], end_id: int, role_ids: Sequence[int]) -> bool:
    """The turn ends with ``end_id`` (within the limit it was generated under) and has no role token."""
    if end_id not in gen:
        return False
    return not any(t in role_ids for t in gen[: gen.index(end_id)])


def reply_text(tokenizer: Any, gen: Sequence[int], end_id: int) -> str:
    """A generated turn's text: up to the end token, special tokens dropped."""
    if end_id in gen:
        gen = gen[: list(gen).index(end_id)]
    return tokenizer.decode(gen, skip_special_tokens=True).strip()


def zero_shot_prompt(source_name: str, target_name: str, text: str) -> str:
    """NorMistral-11B's zero-shot translation template (its model card): ``Engelsk: {text}\\nBokmål:``."""
    return f"{source_name}: {text}\n{target_name}:"


def zero_shot_translations(
    model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 16
) -> list[str]:
    """Greedy continuations of NorMistral-format prompts, cut at the first newline (its stop word)."""
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    gens = generate_ids(model, tokenizer, ids, max_new_tokens, tokenizer.eos_token_id, batch_size)
    texts = [tokenizer.decode(g, skip_special_tokens=True) for g in gens]
    return [t.lstrip().split("\n", 1)[0].strip() for t in texts]


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> list[float]:
    """Sentence-level chrF (sacrebleu's defaults: character 6-grams, beta 2) of each hypothesis."""
    from sacrebleu.metrics import CHRF

    metric = CHRF()
    return [metric.sentence_score(h, [r]).score for h, r in zip(hypotheses, references)]


def mean_interval(values: Sequence[float], seed: int = 0) -> dict[str, Any]:
    """The mean with its bootstrap interval over items."""
    from warmstart.evaluate.intervals import bootstrap_stat

    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return {"mean": float(v.mean()) if len(v) else None, "ci": None, "n": len(v)}
    ci = bootstrap_stat(lambda w: float((w * v).sum() / w.sum()) if w.sum() else None, len(v), seed=seed)
    return {"mean": float(v.mean()), "ci": list(ci) if ci else None, "n": len(v)}


def paired_mean_difference(a: Sequence[float], b: Sequence[float], seed: int = 0) -> dict[str, Any]:
    """Mean of ``a - b`` over the same items with a paired bootstrap interval; ``distinguishable`` when the
    interval excludes 0."""
    d = mean_interval(np.asarray(a, float) - np.asarray(b, float), seed)
    ci = d["ci"]
    return {"diff": d["mean"], "ci": ci, "distinguishable": None if ci is None else bool(ci[0] > 0 or ci[1] < 0)}
