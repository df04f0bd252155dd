"""Probes of what a model can do in each language, scored at a checkpoint by the evaluate stage.

* **cloze** (HellaSwag-style, one task per language, built from held-out
  paragraphs by :func:`build_cloze_items`): the context is the head of a
  paragraph, the true ending its continuation, three distractors are endings
  of paragraphs from *other* held-out documents. Scored by lm-evaluation-
  harness as a local task (a YAML + jsonl written next to the results, no
  hub): ``acc`` (sum log-likelihood) and ``acc_norm`` (per character of the ending, lm-eval's definition).
* **translation probe**: source/target paragraph pairs of the parallel test
  chapters (:func:`translation_pairs`), NorMistral's zero-shot prompt
  (``Engelsk: ...\\nBokmål:``), greedy decoding up to a newline, chrF
  (sacrebleu).
* **masked-token probe**, for runs trained with the hybrid objective
  (``masked_share > 0``): spans of held-out text replaced by the mask token,
  bidirectional attention over the paragraph, the output at ``i - 1`` predicts
  the masked token at ``i`` (the trainer's convention); accuracy at masked
  positions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from warmstart.io import write_jsonl

log = logging.getLogger(__name__)


class EvalError(ValueError):
    """Bad input to the evaluation (too little text, a broken run.json, ...)."""


# "<source>: ...\n<target>:" labels, written in the target language as NorMistral does ("Engelsk:", "Bokmål:").
# NorMistral's own labels ("Engelsk:", "Bokmål:"); every other pair is named by CLDR in the target language.
LANG_NAMES = {
    "nb-NO": {"en-US": "Engelsk", "nb-NO": "Bokmål"},
    "nn-NO": {"en-US": "Engelsk", "nn-NO": "Nynorsk"},
}


# ---------------------------------------------------------------- cloze


def _head_words(text: str, max_chars: int) -> str:
    """The longest prefix of whole (space-separated) words with at most ``max_chars`` characters."""
    words, out, n = text.split(" "), [], 0
    for w in words:
        add = len(w) + (1 if out else 0)
        if n + add > max_chars:
            break
        out.append(w)
        n += add
    return " ".join(out)


def split_paragraph(text: str, context_chars: int, ending_chars: int) -> tuple[str, str] | None:
    """``(context, ending)``: whole words, at most ``context_chars`` then at most ``ending_chars``.

    The ending starts at the word after the context (the separating space is
    dropped: lm-eval puts it back as the target delimiter). ``None`` when the
    paragraph has no word left for the ending or a word is longer than a limit.
    """
    text = " ".join(text.split())
    context = _head_words(text, context_chars)
    if not context or len(context) >= len(text):
        return None
    ending = _head_words(text[len(context) + 1 :], ending_chars)
    if not ending:
        return None
    return context, ending


def build_cloze_items(
    records: Sequence[dict],
    n_items: int,
    context_chars: int,
    ending_chars: int,
    seed: int,
    n_choices: int = 4,
) -> list[dict]:
    """HellaSwag-style items from held-out paragraphs (records with ``doc`` and ``text``).

    1. Every paragraph that :func:`split_paragraph` can cut is *eligible*, in corpus order.
    2. Items: all eligible paragraphs if there are at most ``n_items``, else a
       seeded sample (``random.Random(seed).sample``) kept in corpus order.
    3. Distractors of an item: ``n_choices - 1`` endings of eligible paragraphs
       from other documents, different from the true ending and from each
       other, drawn with ``random.Random(seed + 1 + item index)``, kept in
       corpus order.
    4. The true ending goes to position ``label = item index % n_choices``, so
       labels are balanced and chance is exactly ``1 / n_choices``.
    """
    if n_items < 1:
        raise EvalError(f"n_items must be >= 1, got {n_items}")
    if n_choices < 2:
        raise EvalError(f"n_choices must be >= 2, got {n_choices}")
    eligible = []
    for i, r in enumerate(records):
        if "doc" not in r or "text" not in r:
            raise EvalError(f"record {i} needs 'doc' and 'text' keys, got {sorted(r)}")
        cut = split_paragraph(r["text"], context_chars, ending_chars)
        if cut:
            eligible.append({"id": r.get("id", str(i)), "doc": r["doc"], "context": cut[0], "ending": cut[1]})
    if not eligible:
        raise EvalError(
            f"no paragraph is long enough for a cloze item (context_chars={context_chars}, ending_chars={ending_chars})"
        )
    if len({e["doc"] for e in eligible}) < 2:
        raise EvalError("cloze distractors come from other documents: need paragraphs from at least 2 documents")
    chosen = list(range(len(eligible)))
    if len(eligible) > n_items:
        chosen = sorted(random.Random(seed).sample(chosen, n_items))
    items = []
    for k, idx in enumerate(chosen):
        gold = eligible[idx]
        pool, seen = [], {gold["ending"]}
        for j, e in enumerate(eligible):
            if e["doc"] != gold["doc"] and e["ending"] not in seen:
                pool.append(j)
                seen.add(e["ending"])
        if len(pool) < n_choices - 1:
            raise EvalError(
                f"item {gold['id']}: only {len(pool)} distinct endings from other documents, need {n_choices - 1}"
            )
        picks = sorted(random.Random(seed + 1 + k).sample(pool, n_choices - 1))
        endings = [eligible[j]["ending"] for j in picks]
        label = k % n_choices
        endings.insert(label, gold["ending"])
        items.append(
            {"id": gold["id"], "doc": gold["doc"], "context": gold["context"], "endings": endings, "label": label}
        )
    return items


def write_cloze_task(items: Sequence[dict], out_dir: str | Path, name: str, description: str = "") -> Path:
    """An lm-evaluation-harness task (``<name>.yaml`` + ``<name>.jsonl``) in ``out_dir``; returns the dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = out_dir / f"{name}.jsonl"
    write_jsonl(data, items)
    cfg = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "description": description,
        "doc_to_text": "{{context}}",
        "doc_to_choice": "{{endings}}",
        "doc_to_target": "{{label}}",
        "target_delimiter": " ",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0},
    }
    import yaml

    (out_dir / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return out_dir


def cloze_accuracy(
    model: Any, tokenizer: Any, items: Sequence[dict], name: str = "warmstart_cloze", batch_size: int = 16
) -> dict:
    """``{"acc", "acc_norm", "items", "chance", "acc_ci", "acc_norm_ci"}`` of ``model`` on ``items`` through
    lm-eval's Python API (a local task); the intervals are 95% Wilson intervals over the items, ``chance`` is
    1 / the number of endings.

    Every context is preceded by the tokenizer's EOS token, the document
    separator the trainer packs with (as :func:`warmstart.bpb.bits_per_byte` does).
    """
    if not items:
        raise EvalError("cloze_accuracy needs at least one item")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    for noisy in ("lm_eval", "lm-eval"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    device = str(next(model.parameters()).device)
    with tempfile.TemporaryDirectory(prefix="cloze-") as tmp:
        write_cloze_task(items, tmp, name, description=tokenizer.eos_token or "")
        tm = TaskManager(include_path=tmp, include_defaults=False)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)
        with _quiet():
            out = simple_evaluate(model=lm, tasks=[name], task_manager=tm, log_samples=False, bootstrap_iters=0)
    res = out["results"][name]
    from warmstart.evaluate.intervals import successes, wilson

    n, acc, acc_norm = len(items), float(res["acc,none"]), float(res["acc_norm,none"])
    chance = 1 / min(len(it["endings"]) for it in items)
    return {
        "acc": acc,
        "acc_norm": acc_norm,
        "items": n,
        "chance": chance,
        "acc_ci": list(wilson(successes(acc, n), n)),
        "acc_norm_ci": list(wilson(successes(acc_norm, n), n)),
    }


@contextlib.contextmanager
def _quiet():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ---------------------------------------------------------------- translation


def translation_pairs(src_records: Sequence[dict], tgt_records: Sequence[dict], n: int, max_chars: int) -> list[dict]:
    """Parallel (source, target) paragraphs of the test chapters.

    Alignment: by ``(doc, page)``; inside a page the k-th source paragraph is
    paired with the k-th target paragraph *only when both languages kept the
    same number of paragraphs on that page* (the language-ID and length
    filters drop paragraphs independently per language, which would shift a
    positional pairing). Pairs whose source or target is longer than
    ``max_chars`` are skipped (the tiny models read 128 tokens); the first
    ``n`` in corpus order are returned.
    """
    if n < 0:
        raise EvalError(f"n must be >= 0, got {n}")

    def by_page(recs):
        pages: dict[tuple, list[str]] = defaultdict(list)
        order = []
        for r in recs:
            key = (r["doc"], r.get("page"))
            if key not in pages:
                order.append(key)
            pages[key].append(" ".join(r["text"].split()))
        return pages, order

    src, order = by_page(src_records)
    tgt, _ = by_page(tgt_records)
    out = []
    for key in order:
        if key not in tgt or len(src[key]) != len(tgt[key]):
            continue
        for s, t in zip(src[key], tgt[key]):
            if len(s) <= max_chars and len(t) <= max_chars and s != t:
                out.append({"doc": key[0], "page": key[1], "source": s, "reference": t})
                if len(out) >= n:
                    return out
    return out


def prompt_labels(source_lang: str, target_lang: str) -> tuple[str, str]:
    """The two line labels, written in the target language (NorMistral: ``Engelsk`` / ``Bokmål``; cs-CZ:
    ``Angličtina`` / ``Čeština``, from CLDR through Babel; English names where CLDR has none)."""
    from warmstart.describe import language_name_in

    names = LANG_NAMES.get(target_lang, {})
    return names.get(source_lang) or language_name_in(source_lang, target_lang), names.get(
        target_lang
    ) or language_name_in(target_lang, target_lang)


def translation_prompt(text: str, source_lang: str, target_lang: str) -> str:
    """NorMistral's zero-shot prompt: ``"Engelsk: {text}\\nBokmål:"``."""
    src, tgt = prompt_labels(source_lang, target_lang)
    return f"{src}: {text}\n{tgt}:"


@torch.no_grad()
def greedy_translate(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    """Greedy continuation of each prompt (EOS first, as in training), cut at the first newline."""
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    limit = int(getattr(model.config, "max_position_embeddings", 2048))
    was_training = model.training
    model.eval()
    outs = []
    try:
        for p in prompts:
            ids = [eos, *tokenizer(p, add_special_tokens=False)["input_ids"]][-(limit - max_new_tokens) :]
            x = torch.tensor([ids], device=device)
            y = model.generate(
                x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=tokenizer.pad_token_id or eos,
            )
            text = tokenizer.decode(y[0, x.shape[1] :], skip_special_tokens=True)
            outs.append(text.strip().split("\n")[0].strip())
    finally:
        model.train(was_training)
    return outs


def chrf_interval(
    hyps: Sequence[str], refs: Sequence[str], n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | None:
    """Bootstrap interval of corpus chrF over the pairs (resampled with replacement; None for fewer than 2)."""
    import numpy as np
    from sacrebleu.metrics import CHRF

    from warmstart.evaluate.intervals import bootstrap_weights, percentile_interval

    n = len(hyps)
    if n < 2:
        return None
    chrf = CHRF()
    weights = bootstrap_weights(n, n_boot, seed)
    try:  # corpus chrF is a function of summed per-sentence statistics: resample those
        stats = np.asarray(chrf._extract_corpus_statistics(list(hyps), [list(refs)]), dtype=float)
        vals = [chrf._compute_score_from_stats(list(w @ stats)).score for w in weights]
    except AttributeError:  # another sacrebleu: rescore each resample (slower, same numbers)
        idx = [np.repeat(np.arange(n), w.astype(int)) for w in weights]
        vals = [chrf.corpus_score([hyps[i] for i in ix], [[refs[i] for i in ix]]).score for ix in idx]
    return percentile_interval(vals, level)


def translation_probe(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[dict],
    source_lang: str,
    target_lang: str,
    max_new_tokens: int,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """``{"chrf", "chrf_ci", "pairs", "examples"}``: corpus chrF (sacrebleu) of greedy translations, with a
    bootstrap interval over the pairs (``n_boot`` 0: none)."""
    if not pairs:
        raise EvalError("translation_probe needs at least one pair (none aligned: see translation_pairs)")
    from sacrebleu.metrics import CHRF

    hyps = greedy_translate(
        model, tokenizer, [translation_prompt(p["source"], source_lang, target_lang) for p in pairs], max_new_tokens
    )
    refs = [p["reference"] for p in pairs]
    score = CHRF().corpus_score(hyps, [refs]).score
    examples = [{**p, "hypothesis": h} for p, h in zip(pairs, hyps)]
    ci = chrf_interval(hyps, refs, n_boot, seed) if n_boot else None
    return {"chrf": float(score), "chrf_ci": list(ci) if ci else None, "pairs": len(pairs), "examples": examples}


# ---------------------------------------------------------------- masked-token probe


def mask_positions(n_tokens: int, mask_prob: float, seed: int) -> list[int]:
    """Positions 1..n_tokens-1 to mask (never position 0, the EOS context), at least one, seeded."""
    if n_tokens < 2:
        return []
    g = torch.Generator().manual_seed(seed)
    draw = torch.rand(n_tokens, generator=g) < mask_prob
    draw[0] = False
    pos = draw.nonzero().flatten().tolist()
    return pos or [1 + int(torch.randint(n_tokens - 1, (1,), generator=g))]


@torch.no_grad()
def masked_token_accuracy(
    model: Any, tokenizer: Any, texts: Sequence[str], n_items: int, seq_len: int, mask_prob: float = 0.15, seed: int = 0
) -> dict:
    """``{"masked_acc", "masked_acc_ci", "masked_tokens", "items"}``: the hybrid objective's masked-next-token
    prediction (the interval: Wilson over masked tokens, which are not independent within a paragraph, so it
    is optimistic).

    Each text reads ``[eos] + ids[: seq_len - 1]`` with :func:`mask_positions`
    replaced by the mask token, attention bidirectional over the whole
    paragraph; the argmax of the output at ``i - 1`` must equal the original token at ``i``.
    """
    from warmstart.kernels.masks import additive_mask, document_attention_mask

    mask_id = tokenizer.mask_token_id
    if mask_id is None:
        raise EvalError("the masked-token probe needs a tokenizer with a mask token")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = total = items = 0
    try:
        for k, text in enumerate(t for t in texts if t.strip()):
            if items >= n_items:
                break
            ids = [tokenizer.eos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"][: seq_len - 1]]
            pos = mask_positions(len(ids), mask_prob, seed + k)
            if not pos:
                continue
            x = torch.tensor([ids])
            x[0, pos] = mask_id
            mask = document_attention_mask(torch.zeros(1, len(ids), dtype=torch.long), bidirectional=True)
            if getattr(model.config, "_attn_implementation", "sdpa") == "eager":
                mask = additive_mask(mask, torch.float32)
            logits = model(input_ids=x.to(device), attention_mask=mask.to(device), use_cache=False).logits[0]
            pred = logits[[p - 1 for p in pos]].argmax(-1).cpu()
            correct += int((pred == torch.tensor([ids[p] for p in pos])).sum())
            total += len(pos)
            items += 1
    finally:
        model.train(was_training)
    if not total:
        raise EvalError("masked-token probe: no text with at least two tokens")
    from warmstart.evaluate.intervals import wilson

    return {
        "masked_acc": correct / total,
        "masked_acc_ci": list(wilson(correct, total)),
        "masked_tokens": total,
        "items": items,
    }
