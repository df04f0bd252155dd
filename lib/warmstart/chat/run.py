"""The chat stage's pieces: the tuned model's start, its data, its trainer config and its measures.

1. :func:`prepare`: the adapted model and its tokenizer with the chat tokens and template
   (:func:`warmstart.chat.template.add_chat_tokens`), saved as a Hugging Face dir (the "before" model).
2. :func:`build_items` and :func:`build_shards`: instruction items of the train and test chapters
   (:mod:`warmstart.chat.data`) as jsonl, then the train items encoded through the template into role shards,
   one per part (``short``, ``long``); items longer than ``chat.seq_len`` handled by ``chat.on_long``, counted.
3. :func:`train_corpora` and :func:`train_config`: the project's trainer on those shards plus replay text
   (:func:`replay_files`: the tokenize stage's shards, else the corpus' train jsonl), mixed by rows
   (``chat.mix``, Alfred's 50/45/5), with the prompt-loss weight as ``role_weights``: logs, TensorBoard,
   checkpoints and exact resume as every run.
4. :func:`eval_items`, :func:`measure_chat`, :func:`zero_shot`, :func:`source_bpb`: held-out response bits
   per byte, template adherence, chrF, source bits per byte.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from warmstart.chat import data as cd
from warmstart.chat import measure as cm
from warmstart.chat.template import ChatError, add_chat_tokens, check_template, encode, fit_length

SUITE_TEXT_BYTES = 4_000_000  # the retrieval tasks' haystack material: the split's first paragraphs, this many bytes


def run_name(weight: float) -> str:
    """``chat-pw0``, ``chat-pw0.1``, ``chat-pw1``: the run of one prompt-loss weight."""
    return f"chat-pw{weight:g}"


def tokens_of(params: Any) -> dict[str, str]:
    return params.chat.tokens.model_dump()


def prepare(src: Path, out: Path, params: Any) -> dict[str, Any]:
    """The adapted model at ``src`` with the chat tokens added, saved at ``out`` (safetensors)."""
    from transformers import AutoTokenizer

    from warmstart.model import load_model

    c = params.chat
    tok = AutoTokenizer.from_pretrained(src)
    model = load_model(src, trust_remote_code=params.base.trust_remote_code)
    info = add_chat_tokens(model, tok, tokens_of(params), c.token_init, params.vocab_swap.pad_multiple)
    check_template(tok.chat_template, min([c.prompt_loss_weight, *c.ablation]))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return {**info, "vocab_size": model.config.vocab_size, "tokenizer_size": len(tok)}


def _corpus(params: Any, lang: str, split: str) -> Path:
    return params.path("corpus", lang, f"{split}.jsonl")


def build_items(params: Any, tokenizer: Any, out: Path) -> dict[str, Any]:
    """``out/train.jsonl`` and ``out/test.jsonl``: built-in items of the train and test chapters, the long
    items of each split's target text, and the user's sources (held out by id hash); returns the counts."""
    c, s = params.chat, params.shared
    tokens = tokens_of(params)
    p = cd.phrases(s.target_lang, c.phrases)
    counts = {}
    for split in ("train", "test"):

        def items(split: str = split):
            yield from cd.corpus_items(
                _corpus(params, s.target_lang, split),
                _corpus(params, s.source_lang, split),
                s.target_lang,
                s.source_lang,
                p,
                c.system,
                c.align_ratio,
            )
            if c.mix.get("long", 0) > 0:
                # the template's tokens around the turn leave room below long_len
                yield from cd.long_continue_items(
                    cd.pages(_corpus(params, s.target_lang, split)),
                    tokenizer,
                    c.long_len - 16,
                    p["continue"],
                    s.seed + (split == "test"),
                    c.kept_prompt_share,
                    c.system,
                )
            if c.long_items and c.long_tasks and c.mix.get("long", 0) > 0:
                texts = cd.first_paragraphs(_corpus(params, s.target_lang, split), SUITE_TEXT_BYTES)
                n = c.long_items if split == "train" else max(1, c.long_items // 4)
                yield from cd.long_items(
                    texts,
                    tokenizer,
                    c.long_len - 8,
                    n,
                    c.long_tasks,
                    s.seed + (split == "test"),
                    c.kept_prompt_share,
                    c.system,
                )
            for src in c.sources:
                for it in cd.user_items(src.model_dump(), tokens):
                    if cd.split_of(it["id"], c.held_out) == split:
                        yield it

        counts[split] = cd.write_items(out / f"{split}.jsonl", items(), tokens)
    if not counts["train"]:
        raise ChatError("chat: no training items (the corpus gave none and chat.sources is empty)")
    return counts


def build_shards(params: Any, tokenizer: Any, items: Path, out: Path) -> dict[str, Any]:
    """The train items encoded into role shards ``out/short`` and ``out/long`` (long items, and short ones
    when ``long`` is not in the mix, go where the mix wants them); counts of kept, truncated, dropped."""
    from warmstart.data.shards import ShardError, write_role_shards

    c = params.chat
    stats: dict[str, dict[str, int]] = {}

    def encoded(part: str):
        st = stats.setdefault(part, {"items": 0, "truncated": 0, "dropped": 0, "tokens": 0})
        for it in cd.read_items(items):
            if _part(it, c) != part:
                continue
            ids, roles, nbytes = encode(tokenizer, it["messages"], keep_prompt=bool(it.get("keep_prompt")))
            try:
                fit = fit_length(ids, roles, c.seq_len, c.on_long)
            except ChatError as e:
                raise ChatError(f"{it['id']}: {e}") from None
            if fit is None:
                st["dropped"] += 1
                continue
            st["truncated"] += len(fit[0]) < len(ids)
            st["items"] += 1
            st["tokens"] += len(fit[0])
            yield fit[0], fit[1], nbytes

    parts = {}
    for part in ("short", "long"):
        if c.mix.get(part, 0) > 0:
            try:
                write_role_shards(encoded(part), out / part, tokenizer, name=f"chat-{part}", sources=[items])
            except ShardError:
                if stats[part]["items"]:
                    raise
                raise ChatError(
                    f"chat.mix.{part} is {c.mix[part]} but no {part} training item fits ({stats[part]['dropped']} "
                    f"dropped as longer than chat.seq_len {c.seq_len}"
                    + (f"; long items are built at chat.long_len {c.long_len}" if part == "long" else "")
                    + f"): give the corpus, lengths or chat.sources that yield some, or set chat.mix.{part} to 0"
                ) from None
            parts[part] = str(out / part)
    return {"parts": parts, "stats": stats}


def _part(item: dict, c: Any) -> str:
    return "long" if item["kind"] == "long" and c.mix.get("long", 0) > 0 else "short"


def train_corpora(params: Any, tokenizer: Any, shards: dict[str, str]) -> tuple[dict, dict]:
    """``(train_files, mix)`` of every chat run: the role shards by part, and each replay language's text."""
    c, s = params.chat, params.shared
    files = {part: [d] for part, d in shards.items()}
    mix = {part: c.mix[part] for part in shards}
    if c.mix.get("replay", 0) > 0:
        langs = {"target": s.target_lang, "source": s.source_lang}
        for r in c.replay:
            files[f"replay-{r}"] = replay_files(params, langs[r], tokenizer)
            mix[f"replay-{r}"] = c.mix["replay"] / len(c.replay)
    return files, mix


def train_config(params: Any, init: Path, corpora: tuple[dict, dict], weight: float, out: Path, cache: Path) -> Any:
    """The trainer config of the chat run with prompt-loss weight ``weight`` in ``out`` on ``corpora``
    (:func:`train_corpora`)."""
    from warmstart.train.config import TrainConfig
    from warmstart.train.launch import optim_fields

    c, s = params.chat, params.shared
    files, mix = corpora
    return TrainConfig(
        model_path=str(init),
        tokenizer_path=str(init),
        train_files=files,
        token_cache=str(cache),
        mix=mix if len(files) > 1 else None,
        doc_mask=True,
        seq_len=c.seq_len,
        micro_batch=c.micro_batch,
        grad_accum=c.grad_accum,
        **optim_fields(c.train),
        role_weights={"text": 1.0, "prompt": weight, "response": 1.0},
        out_dir=str(out),
        log_every=c.log_every,
        seed=s.seed,
        keep_last=1,
        trust_remote_code=params.base.trust_remote_code,
    )


def replay_files(params: Any, lang: str, tokenizer: Any) -> list[str]:
    """The replay text of ``lang``: the tokenize stage's train shards of the tokenizer the chat ``tokenizer``
    extends (read as they are: the chat tokens come after every id in them), else the corpus' train jsonl
    (tokenized once into the runs' shared token cache)."""
    from warmstart.data.shards import extends, is_token_dir

    for name in ("target", "base"):
        d = params.path("tokens", name, lang, "train")
        if is_token_dir(d) and extends(tokenizer, d):
            return [str(d)]
    return [str(_corpus(params, lang, "train"))]


def eval_items(params: Any, items: Path) -> dict[str, list[dict]]:
    """The held-out items measured: ``turns`` (``chat.eval_items``, a seeded draw over every kind) and
    ``translate`` (``chat.translation_items`` per direction)."""
    c, seed = params.chat, params.shared.seed
    turns = cd.reservoir(cd.read_items(items), c.eval_items, f"warmstart.chat:{seed}:eval")
    if not turns:
        raise ChatError(f"chat: no held-out items in {items} (the test chapters gave none): nothing to measure")
    trans = []
    for d in sorted(_directions(params)):  # the built-in translation items' two directions
        picked = (it for it in cd.read_items(items) if it["kind"] == "translate" and it["direction"] == d)
        trans += cd.reservoir(picked, c.translation_items, f"warmstart.chat:{seed}:translate:{d}")
    return {"turns": turns, "translate": trans}


def _directions(params: Any) -> set[str]:
    s = params.shared
    return {f"{s.target_lang}>{s.source_lang}", f"{s.source_lang}>{s.target_lang}"}


def measure_chat(model: Any, tok: Any, params: Any, ev: dict[str, list[dict]]) -> dict[str, Any]:
    """Response NLL, adherence and translations of one chat-format model on the held-out items."""
    c, tokens = params.chat, tokens_of(params)
    end_id = tok.convert_tokens_to_ids(tokens["end"])
    role_ids = [tok.convert_tokens_to_ids(tokens[r]) for r in ("system", "user", "assistant")]
    t0 = time.perf_counter()
    nll, nbytes = cm.response_nll(model, tok, ev["turns"], c.batch_size)
    gens = cm.generate_ids(model, tok, cm.turn_prompts(tok, ev["turns"]), c.max_new_tokens, end_id, c.batch_size)
    tgens = cm.generate_ids(model, tok, cm.turn_prompts(tok, ev["translate"]), c.max_new_tokens, end_id, c.batch_size)
    return {
        "response_nll": nll,
        "response_bytes": nbytes,
        "adherent": [cm.adherent(g, end_id, role_ids) for g in gens],
        "ended": [end_id in g for g in gens],
        "generated_tokens": [len(g) for g in gens],
        "examples": [
            {"id": it["id"], "reply": cm.reply_text(tok, g, end_id)} for it, g in list(zip(ev["turns"], gens))[:3]
        ],
        "translations": [cm.reply_text(tok, g, end_id) for g in tgens],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def zero_shot(model: Any, tok: Any, params: Any, ev: dict[str, list[dict]]) -> list[str]:
    """The adapted model's translations of the held-out translation items in NorMistral's zero-shot format."""
    p = cd.phrases(params.shared.target_lang, params.chat.phrases)
    prompts = []
    for it in ev["translate"]:
        a, b = it["direction"].split(">")
        prompts.append(cm.zero_shot_prompt(cd.lang_name(p, a), cd.lang_name(p, b), it["source"]))
    return cm.zero_shot_translations(model, tok, prompts, params.chat.max_new_tokens, params.chat.batch_size)


def source_bpb(model: Any, tok: Any, params: Any) -> dict[str, Any]:
    """Bits per byte on the source language's held-out text (forgetting), with per-document sums."""
    from warmstart.bpb import bits_per_byte, held_out_texts

    texts = held_out_texts(params, params.shared.source_lang, "test", params.chat.eval_bytes)
    return bits_per_byte(model, tok, texts, seq_len=params.pretrain.seq_len, batch_size=params.chat.batch_size)
