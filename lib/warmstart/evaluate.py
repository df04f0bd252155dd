"""The evaluate stage: every run of the study, every step-tagged checkpoint.

What is measured (``run_stage`` does it all; the notebook only shows it):

* **bits per byte** (:func:`warmstart.bpb.bits_per_byte`) on the first
  ``evaluate.eval_bytes`` of held-out *target* text and of held-out *source*
  text, at every checkpoint of ``run.json`` (step 0 = the initialised model).
  Source bpb going up is forgetting.
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

The probes run on the final checkpoint of each run by default
(``evaluate.probe_checkpoints: final``) to stay within the CPU budget; bits
per byte runs at every tagged checkpoint (``evaluate.checkpoints: tagged``).

Outputs: ``reports/metrics/eval.json`` (DVC metrics), ``reports/evaluate/``
(``checkpoints.csv`` long table for ``dvc plots``, ``final.csv``, figures,
the cloze tasks), ``reports/fragments/60_evaluate.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from warmstart.bpb import bits_per_byte, first_bytes, held_out_texts
from warmstart.io import write_json, write_jsonl

log = logging.getLogger(__name__)

# "<source>: ...\n<target>:" labels, written in the target language as NorMistral does ("Engelsk:", "Bokmål:").
LANG_NAMES = {
    "nb-NO": {"en-US": "Engelsk", "nb-NO": "Bokmål"},
    "nn-NO": {"en-US": "Engelsk", "nn-NO": "Nynorsk"},
    "da-DK": {"en-US": "Engelsk", "da-DK": "Dansk"},
    "sv-SE": {"en-US": "Engelska", "sv-SE": "Svenska"},
    "cs-CZ": {"en-US": "Angličtina", "cs-CZ": "Čeština"},
    "fr-FR": {"en-US": "Anglais", "fr-FR": "Français"},
    "de-DE": {"en-US": "Englisch", "de-DE": "Deutsch"},
}
ENGLISH_NAMES = {"en-US": "English", "nb-NO": "Norwegian Bokmål", "cs-CZ": "Czech", "da-DK": "Danish",
                 "sv-SE": "Swedish", "fr-FR": "French", "de-DE": "German", "nn-NO": "Norwegian Nynorsk"}  # fmt: skip
RUN_ORDER = ("scratch", "original")


class EvalError(ValueError):
    """Bad input to the evaluation (too little text, a broken run.json, ...)."""


# ---------------------------------------------------------------- runs


def load_run(run_dir: str | Path) -> dict:
    """``data/runs/<name>/run.json``, checked for the fields the evaluation needs."""
    path = Path(run_dir, "run.json")
    if not path.is_file():
        raise EvalError(f"no run.json in {run_dir} (run the pretrain stage for this run)")
    run = json.loads(path.read_text(encoding="utf-8"))
    missing = [k for k in ("name", "kind", "tokenizer", "checkpoints", "final") if k not in run]
    if missing:
        raise EvalError(f"{path}: missing keys {missing}")
    if not run["checkpoints"]:
        raise EvalError(f"{path}: 'checkpoints' is empty (expected step 0 and the tagged checkpoints)")
    for c in run["checkpoints"]:
        for k in ("step", "bytes", "path"):
            if k not in c:
                raise EvalError(f"{path}: a checkpoint lacks {k!r}: {c}")
    return run


def run_names(params: Any) -> list[str]:
    """The study's runs: scratch, original, then one per swap method."""
    return [*RUN_ORDER, *params.vocab_swap.methods]


def load_runs(params: Any, names: Sequence[str] | None = None) -> list[dict]:
    """The runs that exist under ``data/runs`` (at least one, else an error naming what is missing)."""
    names = list(names or run_names(params))
    runs = [load_run(params.path("runs", n)) for n in names if params.path("runs", n, "run.json").is_file()]
    if not runs:
        raise EvalError(f"no run.json under {params.path('runs')} for any of {names} (run the pretrain stages)")
    return runs


def select_checkpoints(run: dict, mode: str) -> list[dict]:
    """Every checkpoint (``tagged``) or the last one only (``final``), in step order."""
    ckpts = sorted(run["checkpoints"], key=lambda c: c["step"])
    if mode == "tagged":
        return ckpts
    if mode == "final":
        return ckpts[-1:]
    raise EvalError(f"checkpoints mode must be 'tagged' or 'final', got {mode!r}")


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
        items.append({"id": gold["id"], "doc": gold["doc"], "context": gold["context"], "endings": endings, "label": label})
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


def cloze_accuracy(model: Any, tokenizer: Any, items: Sequence[dict], name: str = "warmstart_cloze", batch_size: int = 16) -> dict:
    """``{"acc", "acc_norm", "items"}`` of ``model`` on ``items`` through lm-eval's Python API (a local task).

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
    return {"acc": float(res["acc,none"]), "acc_norm": float(res["acc_norm,none"]), "items": len(items)}


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
    """The two line labels, in the target language when known (NorMistral: ``Engelsk`` / ``Bokmål``)."""
    names = LANG_NAMES.get(target_lang, {})
    src = names.get(source_lang) or ENGLISH_NAMES.get(source_lang, source_lang)
    tgt = names.get(target_lang) or ENGLISH_NAMES.get(target_lang, target_lang)
    return src, tgt


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
            y = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens, do_sample=False,
                               eos_token_id=eos, pad_token_id=tokenizer.pad_token_id or eos)  # fmt: skip
            text = tokenizer.decode(y[0, x.shape[1] :], skip_special_tokens=True)
            outs.append(text.strip().split("\n")[0].strip())
    finally:
        model.train(was_training)
    return outs


def translation_probe(model: Any, tokenizer: Any, pairs: Sequence[dict], source_lang: str, target_lang: str,
                      max_new_tokens: int) -> dict:  # fmt: skip
    """``{"chrf", "pairs", "examples"}``: corpus chrF (sacrebleu) of greedy translations."""
    if not pairs:
        raise EvalError("translation_probe needs at least one pair (none aligned: see translation_pairs)")
    from sacrebleu.metrics import CHRF

    hyps = greedy_translate(model, tokenizer, [translation_prompt(p["source"], source_lang, target_lang) for p in pairs],
                            max_new_tokens)  # fmt: skip
    score = CHRF().corpus_score(hyps, [[p["reference"] for p in pairs]]).score
    examples = [{**p, "hypothesis": h} for p, h in zip(pairs, hyps)]
    return {"chrf": float(score), "pairs": len(pairs), "examples": examples}


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
def masked_token_accuracy(model: Any, tokenizer: Any, texts: Sequence[str], n_items: int, seq_len: int,
                          mask_prob: float = 0.15, seed: int = 0) -> dict:  # fmt: skip
    """``{"masked_acc", "masked_tokens", "items"}``: the hybrid objective's masked-next-token prediction.

    Each text reads ``[eos] + ids[: seq_len - 1]`` with :func:`mask_positions`
    replaced by the mask token, attention bidirectional over the whole
    paragraph; the argmax of the output at ``i - 1`` must equal the original token at ``i``.
    """
    from warmstart.data.packing import additive_mask, document_attention_mask

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
    return {"masked_acc": correct / total, "masked_tokens": total, "items": items}


# ---------------------------------------------------------------- speed-up and tables


def bytes_to_reach(curve: pd.DataFrame, target: float) -> float | None:
    """Training bytes at which a bpb curve (columns ``bytes``, ``bpb``) first reaches ``target``.

    Linear interpolation between checkpoints; 0 when step 0 is already at or
    below ``target``; ``None`` when the curve never reaches it.
    """
    c = curve.sort_values("bytes")
    b, y = c["bytes"].to_numpy(float), c["bpb"].to_numpy(float)
    if not len(y):
        return None
    if y[0] <= target:
        return 0.0
    for i in range(1, len(y)):
        if y[i] <= target:
            return float(b[i - 1] + (y[i - 1] - target) / (y[i - 1] - y[i]) * (b[i] - b[i - 1]))
    return None


def speedup(curve: pd.DataFrame, scratch: pd.DataFrame) -> float | None:
    """How many times fewer training bytes than scratch a run needs to reach scratch's final target bpb.

    ``bytes(scratch final) / bytes(run reaches that bpb)``; ``inf`` when the
    run starts there, ``None`` when it never gets there.
    """
    s = scratch.sort_values("bytes")
    target, budget = float(s["bpb"].iloc[-1]), float(s["bytes"].iloc[-1])
    need = bytes_to_reach(curve, target)
    if need is None:
        return None
    return math.inf if need == 0 else budget / need


# ---------------------------------------------------------------- the stage


def _load(path: str, trust_remote_code: bool = False):
    from warmstart.model import load_model

    return load_model(path, trust_remote_code=trust_remote_code)


def _tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def evaluate_runs(params: Any, runs: Sequence[dict], progress: bool = True) -> dict:
    """Evaluate every run; returns ``{"checkpoints": DataFrame, "final": DataFrame, "translations": [...], ...}``."""
    from tqdm.auto import tqdm

    from warmstart.data.corpus import load_split

    ev, sh = params.evaluate, params.shared
    src_lang, tgt_lang = sh.source_lang, sh.target_lang
    texts = {"target": held_out_texts(params, tgt_lang, "test", ev.eval_bytes), "source": held_out_texts(params, src_lang, "test", ev.eval_bytes)}
    # probe items come from every held-out chapter (test, then val): neither is trained on in any language,
    # and cloze distractors need several documents. Bits per byte uses the test split alone.
    def held_out(lang: str) -> list[dict]:
        val = params.path("corpus", lang, "val.jsonl")
        return load_split(params, lang, "test") + (load_split(params, lang, "val") if val.is_file() else [])

    test_recs = {lang: held_out(lang) for lang in (src_lang, tgt_lang)}
    cloze_items = {}
    if ev.cloze_items:
        for role, lang in (("target", tgt_lang), ("source", src_lang)):
            cloze_items[role] = build_cloze_items(test_recs[lang], ev.cloze_items, ev.cloze_context_chars,
                                                  ev.cloze_ending_chars, sh.seed)  # fmt: skip
            write_cloze_task(cloze_items[role], params.report_path("evaluate", "cloze"), f"cloze_{lang.replace('-', '_')}")
    pairs = translation_pairs(test_recs[src_lang], test_recs[tgt_lang], ev.translation_pairs, ev.translation_max_chars)
    masked_texts = first_bytes([t for t in texts["target"]], ev.eval_bytes)
    seq_len = params.pretrain.seq_len

    rows, finals, translations = [], [], []
    jobs = [(run, c) for run in runs for c in select_checkpoints(run, ev.checkpoints)]
    final_paths = {run["name"]: sorted(run["checkpoints"], key=lambda c: c["step"])[-1]["path"] for run in runs}
    bar = tqdm(jobs, desc="evaluate", disable=not progress)
    tokenizers: dict[str, Any] = {}
    for run, ck in bar:
        bar.set_postfix_str(f"{run['name']}@{ck['step']}")
        tok = tokenizers.setdefault(run["tokenizer"], _tokenizer(run["tokenizer"]))
        model = _load(ck["path"])
        t0 = time.perf_counter()
        row = {"run": run["name"], "kind": run.get("kind"), "method": run.get("method"), "step": int(ck["step"]),
               "phase": ck.get("phase"), "tokens": int(ck.get("tokens", 0)), "bytes": int(ck["bytes"])}  # fmt: skip
        for role in ("target", "source"):
            r = bits_per_byte(model, tok, texts[role], seq_len=seq_len, batch_size=ev.batch_size)
            row[f"bpb_{role}"] = r["bits_per_byte"]
            row[f"tokens_per_byte_{role}"] = r["tokens_per_byte"]
        is_final = ck["path"] == final_paths[run["name"]]
        if ev.probe_checkpoints == "tagged" or is_final:
            for role, items in cloze_items.items():
                c = cloze_accuracy(model, tok, items, batch_size=ev.batch_size)
                row[f"cloze_acc_{role}"], row[f"cloze_acc_norm_{role}"] = c["acc"], c["acc_norm"]
            if pairs:
                t = translation_probe(model, tok, pairs, src_lang, tgt_lang, ev.translation_max_new_tokens)
                row["chrf"] = t["chrf"]
                if is_final:
                    translations += [{"run": run["name"], **e} for e in t["examples"]]
            if ev.masked_items and run.get("masked_share", 0) and tok.mask_token_id is not None:
                m = masked_token_accuracy(model, tok, masked_texts, ev.masked_items, seq_len, seed=sh.seed)
                row["masked_acc"] = m["masked_acc"]
        row["eval_seconds"] = time.perf_counter() - t0
        rows.append(row)
        if is_final:
            finals.append(row)
        del model
    ck = pd.DataFrame(rows)
    return {"checkpoints": ck, "final": pd.DataFrame(finals), "translations": translations,
            "cloze_items": {k: len(v) for k, v in cloze_items.items()}, "pairs": len(pairs)}  # fmt: skip


def _swap_metrics(params: Any, method: str | None) -> dict:
    if not method:
        return {}
    p = params.report_path("metrics", "vocab_swap", f"{method}.json")
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}


def init_table(runs: Sequence[dict], ck: pd.DataFrame, params: Any) -> pd.DataFrame:
    """Initialisation methods: aligned tokens, step-0 and final target bpb, speed-up against scratch."""
    curves = {n: g.rename(columns={"bpb_target": "bpb"})[["bytes", "bpb"]] for n, g in ck.groupby("run")}
    scratch = curves.get("scratch")
    out = []
    for run in runs:
        g = ck[ck["run"] == run["name"]].sort_values("step")
        if g.empty:
            continue
        sw = _swap_metrics(params, run.get("method"))
        sp = speedup(curves[run["name"]], scratch) if scratch is not None and len(scratch) else None
        out.append({
            "run": run["name"], "aligned": sw.get("aligned"), "decomposed": sw.get("decomposed"),
            "random": sw.get("random"), "new_vocab": sw.get("new_vocab"),
            "bpb_step0": float(g["bpb_target"].iloc[0]) if int(g["step"].iloc[0]) == 0 else None,
            "bpb_final": float(g["bpb_target"].iloc[-1]), "speedup": sp,
        })  # fmt: skip
    return pd.DataFrame(out)


def swap_study(init: pd.DataFrame) -> dict:
    """The warm-start study's numbers (``reports/metrics/swap_study.json``) and its goals, as measured.

    ``speedup`` is scratch's total bytes over the bytes the run needed to reach scratch's final target
    bits per byte (:func:`speedup`); ``goals`` are the issue's targets for the default study, each
    ``null`` when a run it needs is missing.
    """
    rows = {r["run"]: {k: (None if pd.isna(v) else v) for k, v in r.items() if k != "run"} for r in init.to_dict("records")}
    step0 = {k: v.get("bpb_step0") for k, v in rows.items()}
    swapped = {k: v for k, v in rows.items() if k not in ("scratch", "original")}
    best = max(swapped, key=lambda k: swapped[k].get("speedup") or 0.0) if swapped else None

    def below(a: str, b: str) -> bool | None:
        return None if step0.get(a) is None or step0.get(b) is None else bool(step0[a] < step0[b])

    best_sp = swapped[best].get("speedup") if best else None
    return {
        "runs": rows,
        "best_swapped": best,
        "best_speedup": best_sp,
        "goals": {
            "fvt_step0_below_random": below("fvt", "random"),
            "focus_step0_below_random": below("focus", "random"),
            "best_speedup_at_least_3": None if best_sp is None else bool(best_sp >= 3.0),
        },
    }


def flops_table(runs: Sequence[dict]) -> pd.DataFrame:
    """Theoretical FLOPs (flops_per_token x tokens, warmstart.flops formula) and MFU per run."""
    out = []
    for run in runs:
        last = sorted(run["checkpoints"], key=lambda c: c["step"])[-1]
        fpt = run.get("flops_per_token")
        out.append({
            "run": run["name"], "params": run.get("params_count"), "flops_per_token": fpt,
            "tokens": last.get("tokens"), "train_flops": (fpt * last["tokens"]) if fpt and last.get("tokens") else None,
            "seconds": run.get("seconds"), "tokens_per_s": run.get("mean_tokens_per_s"), "mfu": run.get("mean_mfu"),
        })  # fmt: skip
    return pd.DataFrame(out)


def read_log(run: dict) -> pd.DataFrame:
    p = Path(run.get("log") or "")
    if not p.is_file():
        return pd.DataFrame()
    from warmstart.io import read_jsonl

    df = pd.DataFrame(read_jsonl(p))
    df["run"] = run["name"]
    return df


def marker_steps(log_df: pd.DataFrame) -> dict[str, list[int]]:
    """Steps to mark on a loss curve: the phase-1 -> phase-2 switch and corpus hot-swaps."""
    from warmstart.spikes import hotswap_steps

    out = {"phase": [], "hotswap": []}
    if log_df.empty:
        return out
    if "phase" in log_df:
        ph = log_df["phase"]
        out["phase"] = [int(s) for s in log_df.loc[ph.ne(ph.shift(1)) & ph.shift(1).notna(), "step"]]
    out["hotswap"] = hotswap_steps(log_df)
    return out


# ---------------------------------------------------------------- figures


def plot_bpb_curves(ck: pd.DataFrame, path: str | Path, src_lang: str, tgt_lang: str) -> Path:
    """Target and source bpb against training bytes seen, one curve per run."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    df = ck.assign(mb=ck["bytes"] / 1e6)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    for ax, role, lang in ((axes[0], "target", tgt_lang), (axes[1], "source", src_lang)):
        sns.lineplot(data=df, x="mb", y=f"bpb_{role}", hue="run", style="run", markers=True, dashes=False, ax=ax,
                     legend=role == "target")  # fmt: skip
        zero = df[df["step"] == 0]
        if len(zero):  # step 0: the initialised model, before any training
            ax.scatter(zero["mb"], zero[f"bpb_{role}"], marker="*", s=110, facecolor="none", edgecolor="black",
                       linewidth=0.8, zorder=5, label="step 0" if role == "target" else None)  # fmt: skip
        ax.set(xlabel="training text seen (MB of UTF-8)", ylabel=f"{lang} test bits per byte",
               title=f"{role} language ({lang})" + (": forgetting" if role == "source" else ""))  # fmt: skip
        ax.xaxis.set_major_locator(MaxNLocator(5))  # few, short tick labels: they never overlap
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    fig.tight_layout()
    if axes[0].get_legend():  # one legend, below both panels, so it never covers a curve or a label
        n = df["run"].nunique()
        sns.move_legend(axes[0], "upper center", bbox_to_anchor=(1.1, -0.2), title=None, frameon=False,
                        ncol=min(n, 7))  # fmt: skip
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_loss(logs: pd.DataFrame, path: str | Path) -> Path | None:
    """Training loss against step, one curve per run; dotted lines at phase switches, dashed at hot-swaps."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if logs.empty or "loss" not in logs:
        return None
    fig, ax = plt.subplots(figsize=(10, 3.8))
    sns.lineplot(data=logs, x="step", y="loss", hue="run", ax=ax, linewidth=1.0)
    marks = marker_steps(logs[logs["run"] == logs["run"].iloc[0]])
    for s in marks["phase"]:
        ax.axvline(s, color="0.3", linestyle=":", linewidth=1.2, label=f"phase 1 → 2 (step {s})")
    all_swaps = sorted({s for _, g in logs.groupby("run") for s in marker_steps(g)["hotswap"]})
    for i, s in enumerate(all_swaps):
        ax.axvline(s, color="tab:red", linestyle="--", linewidth=1.0, label="corpus hot-swap" if i == 0 else None)
    ax.set(xlabel="optimizer step", ylabel="training loss (nats per token)", title="Training loss")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


# ---------------------------------------------------------------- outputs


def _clean(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def metrics_json(res: dict, init: pd.DataFrame) -> dict:
    """``eval.json``: per run, the final probes and bpb, step-0 bpb and the speed-up; the best run."""
    out: dict[str, Any] = {"runs": {}}
    fin = res["final"]
    for _, r in fin.iterrows():
        d = {k: r[k] for k in fin.columns if k not in ("run", "kind", "method", "phase") and pd.notna(r[k])}
        out["runs"][r["run"]] = d
    for _, r in init.iterrows():
        d = out["runs"].setdefault(r["run"], {})
        if pd.notna(r["bpb_step0"]):
            d["bpb_target_step0"] = r["bpb_step0"]
        if r["speedup"] is not None and pd.notna(r["speedup"]):
            d["speedup_vs_scratch"] = r["speedup"]
    if not fin.empty:
        out["best"] = str(fin.sort_values("bpb_target")["run"].iloc[0])
    out["cloze_items"] = res["cloze_items"]
    out["translation_pairs"] = res["pairs"]
    return _clean(out)


def best_run(eval_json: dict) -> str:
    """The run with the lowest final target bits per byte."""
    runs = eval_json.get("runs") or {}
    scored = {n: d["bpb_target"] for n, d in runs.items() if d.get("bpb_target") is not None}
    if not scored:
        raise EvalError("eval.json has no run with a final bpb_target")
    return min(scored, key=scored.get)


def _fmt_speedup(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "not reached"
    return "reached at step 0" if math.isinf(v) else f"{v:.2f}×"


def run_stage(params: Any, progress: bool = True) -> dict:
    """Evaluate every run that exists; write eval.json, reports/evaluate/*, the report fragment."""
    from warmstart.fragments import table, write_fragment

    t0 = time.perf_counter()
    runs = load_runs(params)
    res = evaluate_runs(params, runs, progress=progress)
    out = params.report_path("evaluate")
    out.mkdir(parents=True, exist_ok=True)
    ck, fin = res["checkpoints"], res["final"]
    ck.to_csv(out / "checkpoints.csv", index=False)
    fin.to_csv(out / "final.csv", index=False)
    pd.DataFrame(res["translations"]).to_csv(out / "translations.csv", index=False)
    init = init_table(runs, ck, params)
    init.to_csv(out / "init.csv", index=False)
    flops = flops_table(runs)
    flops.to_csv(out / "flops.csv", index=False)
    logs = pd.concat([read_log(r) for r in runs], ignore_index=True) if runs else pd.DataFrame()
    sh = params.shared
    figs = [{"path": str(plot_bpb_curves(ck, out / "bpb_curves.png", sh.source_lang, sh.target_lang)),
             "caption": "Held-out bits per byte against UTF-8 bytes of training text seen, one curve per run "
                        "(markers: evaluated checkpoints; step 0 is the initialised model). Bytes, not tokens, so "
                        "runs with different tokenizers share the x axis. Right: source language (forgetting)."}]  # fmt: skip
    lp = plot_loss(logs, out / "loss.png")
    if lp:
        figs.append({"path": str(lp), "caption": "Training loss per logged step (nats per token of each run's own "
                     "tokenizer, so levels are comparable only between runs with the same tokenizer). Dotted: "
                     "phase 1 (embeddings only) → phase 2 (full model); dashed red: corpus hot-swaps."})  # fmt: skip
    metrics = metrics_json(res, init)
    write_json(params.report_path("metrics", "eval.json"), metrics)
    write_json(params.report_path("metrics", "swap_study.json"), swap_study(init))

    counts = {c: [f"{int(v):,}" if pd.notna(v) else "–" for v in init[c]] for c in ("aligned", "decomposed", "random", "new_vocab") if c in init}
    init_fmt = init.assign(speedup=[_fmt_speedup(v) for v in init["speedup"]], **counts)
    cols = ["run", "step", "phase", "bytes", "bpb_target", "bpb_source"]
    per_ck = ck[cols].assign(bytes=(ck["bytes"] / 1e6).round(3)).rename(columns={"bytes": "MB seen"})
    probe_cols = [c for c in ("bpb_target", "bpb_source", "cloze_acc_target", "cloze_acc_norm_target",
                              "cloze_acc_source", "cloze_acc_norm_source", "chrf", "masked_acc") if c in fin]  # fmt: skip
    flops_fmt = flops.assign(train_flops=[f"{v:.3g}" if v else "" for v in flops["train_flops"]],
                             mfu=[f"{100 * v:.2f}%" if v is not None and pd.notna(v) else "" for v in flops["mfu"]])  # fmt: skip
    best = metrics.get("best")
    paras = [
        f"Every run of the study evaluated on held-out test chapters ({sh.target_lang} target, {sh.source_lang} "
        f"source); bits per byte on the first {params.evaluate.eval_bytes:,} bytes of each language at "
        f"{'every tagged checkpoint' if params.evaluate.checkpoints == 'tagged' else 'the final checkpoint'}; "
        f"cloze, translation and masked-token probes at "
        f"{'every tagged checkpoint' if params.evaluate.probe_checkpoints == 'tagged' else 'the final checkpoint'}.",
        f"Cloze: {res['cloze_items'].get('target', 0)} items per language, the true continuation of a held-out "
        "paragraph against three endings from other held-out documents (chance 25%), scored by lm-evaluation-harness "
        "(acc: summed log-likelihood, acc_norm: log-likelihood per character). Translation: "
        f"{res['pairs']} aligned paragraph pairs (same chapter and page, same paragraph count), NorMistral's "
        f"prompt, greedy decoding, chrF. Speed-up: training bytes scratch needs for its final target bpb, divided "
        "by the bytes a run needs to reach it (linear interpolation between checkpoints).",
    ]  # fmt: skip
    if best:
        paras.append(f"Best run by final target bits per byte: {best} ({metrics['runs'][best]['bpb_target']:.3f}).")
    tables = [
        table(init_fmt, "Initialisation methods: aligned/decomposed/random rows of the new embedding matrix, target "
              "bits per byte at step 0 and after training, speed-up against scratch."),
        table(fin[["run", *probe_cols]], "Final checkpoints: bits per byte and probes (cloze accuracy, chrF, "
              "masked-token accuracy where the hybrid objective was used)."),
        table(per_ck, "Bits per byte at every evaluated checkpoint."),
        table(flops_fmt, "Theoretical training FLOPs (flops per token × tokens, 6N + 12LHQT) and MFU per run."),
    ]  # fmt: skip
    numbers = {f"bpb_target.{k}": v.get("bpb_target") for k, v in metrics["runs"].items()}
    numbers.update({f"bpb_source.{k}": v.get("bpb_source") for k, v in metrics["runs"].items()})
    if best:
        numbers["best"] = best
    write_fragment(params.shared.reports_dir, "evaluate", 60, "Evaluation", paras, tables, figs, numbers,
                   seconds=time.perf_counter() - t0)  # fmt: skip
    return {"metrics": metrics, "checkpoints": ck, "final": fin, "init": init, "flops": flops, "figures": figs,
            "translations": pd.DataFrame(res["translations"])}  # fmt: skip
