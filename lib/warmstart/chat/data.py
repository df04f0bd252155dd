"""Instruction data for chat fine-tuning, built from the corpus with no network, and a user's own chat data.

Built-in items (the corpus split keeps them apart: items of test chapters are the held-out ones):

``translate``
    The handbook's parallel paragraphs, both directions: target-language instruction, the source (or target)
    sentence, the translation as the response (sentence by sentence where both paragraphs cut into as many
    sentences of matching lengths, else the paragraph). Paragraphs are aligned within each page (a page exists in
    every language) by a monotone alignment on character length (:func:`align`, Gale & Church's idea
    without their probabilities): a pair is kept when its length ratio lies within ``[1/ratio, ratio]``.
``continue``
    A paragraph's first sentences, its remaining ones as the response ("finish this paragraph"); the base
    model saw every paragraph end with EOS, the prior the ``related`` end-token rows start from.
``long``
    The long-context retrieval suite's tasks (:func:`warmstart.context.retrieval.build_suite`) as chat turns
    at ``chat.long_len`` tokens: the haystack and question as the user turn, the answer as the response.
    Alfred kept the language-modelling loss on a partition of its long-context prompts
    (``chat.kept_prompt_share`` of these items).

A user's chat data (``chat.sources``: jsonl files of ``{"messages": [...]}``, or Hugging Face datasets) goes
through the same checks (:func:`warmstart.chat.template.check_conversation`) into the ``short`` part.

Memory: the target corpus is read page by page (the corpus files are in page order), the source file
through an index of page offsets (16 bytes per page); items are streamed to jsonl, then to role shards.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from warmstart.chat.template import ChatError, check_conversation

# target-language wording of the built-in instructions and language names (the default target and the
# targets the study supports by params alone); another target needs chat.phrases in params
PHRASES: dict[str, dict[str, Any]] = {
    "nb": {
        "translate": "Oversett til {lang}:",
        "continue": "Fullfør dette avsnittet:",
        "names": {"nb": "Bokmål", "en": "Engelsk", "da": "Dansk", "sv": "Svensk", "cs": "Tsjekkisk", "fr": "Fransk"},
    },
    "da": {
        "translate": "Oversæt til {lang}:",
        "continue": "Afslut dette afsnit:",
        "names": {"da": "Dansk", "en": "Engelsk", "nb": "Norsk", "sv": "Svensk", "cs": "Tjekkisk", "fr": "Fransk"},
    },
    "sv": {
        "translate": "Översätt till {lang}:",
        "continue": "Avsluta det här stycket:",
        "names": {
            "sv": "Svenska",
            "en": "Engelska",
            "nb": "Norska",
            "da": "Danska",
            "cs": "Tjeckiska",
            "fr": "Franska",
        },
    },
    "cs": {
        "translate": "Přelož do jazyka {lang}:",
        "continue": "Dokonči tento odstavec:",
        "names": {
            "cs": "čeština",
            "en": "angličtina",
            "nb": "norština",
            "da": "dánština",
            "sv": "švédština",
            "fr": "francouzština",
        },
    },
    "fr": {
        "translate": "Traduis en {lang} :",
        "continue": "Termine ce paragraphe :",
        "names": {
            "fr": "français",
            "en": "anglais",
            "nb": "norvégien",
            "da": "danois",
            "sv": "suédois",
            "cs": "tchèque",
        },
    },
    "en": {
        "translate": "Translate into {lang}:",
        "continue": "Finish this paragraph:",
        "names": {"en": "English", "nb": "Norwegian", "da": "Danish", "sv": "Swedish", "cs": "Czech", "fr": "French"},
    },
}


def phrases(target_lang: str, override: dict | None = None) -> dict[str, Any]:
    """The instruction wording for ``target_lang`` (``nb-NO`` -> ``nb``), or ``override`` (``chat.phrases``)."""
    if override:
        return override
    base = target_lang.split("-")[0]
    if base not in PHRASES:
        raise ChatError(
            f"chat.phrases: no built-in instruction wording for {target_lang!r} (built in: {', '.join(PHRASES)}); "
            "give chat.phrases {translate: '... {lang}:', continue: '...', names: {<lang>: <name>}}"
        )
    return PHRASES[base]


def lang_name(p: dict[str, Any], lang: str) -> str:
    base = lang.split("-")[0]
    if base not in p["names"]:
        raise ChatError(f"chat.phrases.names: no name for {lang!r}")
    return p["names"][base]


# ---------------------------------------------------------------- reading the corpus by page


def pages(path: Path) -> Iterator[tuple[str, list[str]]]:
    """``(page, paragraphs)`` of a corpus split file, page by page (consecutive records of one page)."""
    with open(path, encoding="utf-8") as fh:
        recs = (json.loads(line) for line in fh if line.strip())
        for page, group in itertools.groupby(recs, key=lambda r: r.get("page") or r.get("doc") or r["id"]):
            yield page, [r["text"] for r in group]


class PageIndex:
    """The byte range of every page of a corpus file: a page's paragraphs are read on demand."""

    def __init__(self, path: Path):
        self.path, self.spans = path, {}
        with open(path, "rb") as fh:
            pos, cur, start = 0, None, 0
            for line in fh:
                if line.strip():
                    r = json.loads(line)
                    page = r.get("page") or r.get("doc") or r["id"]
                    if page != cur:
                        if cur is not None:
                            self.spans[cur] = (start, pos)
                        cur, start = page, pos
                pos += len(line)
            if cur is not None:
                self.spans[cur] = (start, pos)

    def paragraphs(self, page: str) -> list[str]:
        if page not in self.spans:
            return []
        a, b = self.spans[page]
        with open(self.path, "rb") as fh:
            fh.seek(a)
            block = fh.read(b - a).decode("utf-8")
        return [json.loads(line)["text"] for line in block.splitlines() if line.strip()]


def align(a: Sequence[str], b: Sequence[str], ratio: float = 1.6, skip: float = 1.0) -> list[tuple[int, int]]:
    """Monotone 1-1 alignment of two paragraph lists by character length: dynamic programming over match
    (cost ``|log(len a / len b)|``) and skip (cost ``skip``) moves; matches beyond ``ratio`` are dropped."""
    n, m = len(a), len(b)
    la, lb = [max(len(x), 1) for x in a], [max(len(y), 1) for y in b]
    INF = float("inf")
    cost = [[INF] * (m + 1) for _ in range(n + 1)]
    back: list[list[int]] = [[0] * (m + 1) for _ in range(n + 1)]
    cost[0][0] = 0.0
    for i in range(n + 1):
        for j in range(m + 1):
            c = cost[i][j]
            if c == INF:
                continue
            if i < n and c + skip < cost[i + 1][j]:
                cost[i + 1][j], back[i + 1][j] = c + skip, 1
            if j < m and c + skip < cost[i][j + 1]:
                cost[i][j + 1], back[i][j + 1] = c + skip, 2
            if i < n and j < m:
                mc = c + abs(math.log(la[i] / lb[j]))
                if mc < cost[i + 1][j + 1]:
                    cost[i + 1][j + 1], back[i + 1][j + 1] = mc, 3
    out, i, j = [], n, m
    while i or j:
        move = back[i][j]
        if move == 3:
            i, j = i - 1, j - 1
            if 1 / ratio <= la[i] / lb[j] <= ratio:
                out.append((i, j))
        elif move == 1:
            i -= 1
        else:
            j -= 1
    return out[::-1]


# ---------------------------------------------------------------- built-in items

_SENTENCE = re.compile(r"(?<=[.!?:])\s+(?=[A-ZÆØÅÄÖÉČŠŽ0-9«“\"(])")


def sentences(text: str) -> list[str]:
    """A paragraph cut into sentences at ``. ! ? :`` followed by space and a capital (or digit, quote)."""
    return [t for t in _SENTENCE.split(text.strip()) if t]


def split_paragraph(text: str) -> tuple[str, str] | None:
    """A paragraph of at least two sentences cut at the sentence boundary nearest its middle: (head, tail)."""
    sents = sentences(text)
    if len(sents) < 2:
        return None
    k = len(sents) // 2
    return " ".join(sents[:k]), " ".join(sents[k:])


def sentence_pairs(a: str, b: str, ratio: float) -> list[tuple[str, str]]:
    """Aligned sentences of two parallel paragraphs when both have as many sentences and every pair keeps
    its length ratio within ``ratio``; else the paragraphs themselves as one pair."""
    sa, sb = sentences(a), sentences(b)
    if len(sa) > 1 and len(sa) == len(sb) and all(1 / ratio <= len(x) / len(y) <= ratio for x, y in zip(sa, sb)):
        return list(zip(sa, sb))
    return [(a, b)]


def _item(kind: str, key: str, messages: list[dict], **meta: Any) -> dict[str, Any]:
    return {"id": f"{kind}:{key}", "kind": kind, "messages": messages, **meta}


def _turn(system: str | None, user: str, assistant: str) -> list[dict[str, str]]:
    """One exchange of a built-in item, after the system turn when there is one."""
    head = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def corpus_items(
    target_file: Path,
    source_file: Path,
    target_lang: str,
    source_lang: str,
    p: dict[str, Any],
    system: str | None = None,
    ratio: float = 1.6,
) -> Iterator[dict[str, Any]]:
    """``translate`` (both directions) and ``continue`` items of one split, page by page."""
    to_src = p["translate"].format(lang=lang_name(p, source_lang))
    to_tgt = p["translate"].format(lang=lang_name(p, target_lang))
    index = PageIndex(source_file)
    for page, tgt in pages(target_file):
        src = index.paragraphs(page)
        for i, j in align(tgt, src, ratio):
            for k, (t, s_) in enumerate(sentence_pairs(tgt[i], src[j], ratio)):
                for end, instruction, a, b, direction in (
                    ("src", to_src, t, s_, f"{target_lang}>{source_lang}"),
                    ("tgt", to_tgt, s_, t, f"{source_lang}>{target_lang}"),
                ):
                    yield _item(
                        "translate",
                        f"{page}#{i}.{k}>{end}",
                        _turn(system, f"{instruction}\n\n{a}", b),
                        source=a,
                        reference=b,
                        direction=direction,
                    )
        for i, para in enumerate(tgt):
            cut = split_paragraph(para)
            if cut:
                yield _item("continue", f"{page}#{i}", _turn(system, f"{p['continue']}\n\n{cut[0]}", cut[1]))


def long_items(
    texts: Sequence[str],
    tokenizer: Any,
    length: int,
    n_items: int,
    tasks: Sequence[str],
    seed: int,
    kept_share: float,
    system: str | None = None,
) -> list[dict[str, Any]]:
    """The retrieval suite's items at ``length`` tokens as chat turns; ``kept_share`` of them (seeded) keep
    their prompt under the language-modelling loss (``keep_prompt``). ``length`` leaves room for the template."""
    from warmstart.context.retrieval import build_suite

    suite = build_suite(texts, tokenizer, length, n_items, seed, tasks=list(tasks), on_short="skip")
    rng = random.Random(f"warmstart.chat:{seed}:kept")
    return [
        _item(
            "long",
            f"{it['task']}:{k}",
            _turn(system, it["prompt"].rstrip(), it["answer"]),
            keep_prompt=rng.random() < kept_share,
            task=it["task"],
        )
        for k, it in enumerate(suite)
    ]


def long_continue_items(
    page_iter: Iterable[tuple[str, list[str]]],
    tokenizer: Any,
    length: int,
    instruction: str,
    seed: int,
    kept_share: float,
    system: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Long "finish this paragraph" items: consecutive paragraphs of a page filling at least half of ``length``
    tokens, then the head of the next paragraph as the prompt, its tail as the response, the whole within
    ``length``."""
    rng = random.Random(f"warmstart.chat:{seed}:kept-continue")
    for page, paras in page_iter:
        sizes = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in paras]
        lo, used = 0, 0
        for i, n in enumerate(sizes):
            cut = split_paragraph(paras[i])
            if used >= length // 2 and used + n <= length and cut:
                context = "\n\n".join([*paras[lo:i], cut[0]])
                yield _item(
                    "long",
                    f"continue:{page}#{i}",
                    _turn(system, f"{instruction}\n\n{context}", cut[1]),
                    keep_prompt=rng.random() < kept_share,
                    task="continue",
                )
                lo, used = i + 1, 0
            elif used + n > length:
                lo, used = i, n
            else:
                used += n


# ---------------------------------------------------------------- a user's chat data


def user_items(source: Any, tokens: dict[str, str]) -> Iterator[dict[str, Any]]:
    """Items of one ``chat.sources`` entry (``kind: jsonl`` with ``path``, or ``kind: hf`` with ``id`` and
    ``split``), each checked; ``field`` names the messages list (default ``messages``)."""
    field = source.get("field", "messages")
    if source["kind"] == "jsonl":
        path = Path(source["path"])
        if not path.is_file():
            raise ChatError(f"chat.sources: {path} does not exist")

        def rows() -> Iterator[tuple[str, Any]]:
            with open(path, encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            yield f"{path}:{n}", json.loads(line)
                        except ValueError as e:
                            raise ChatError(f"{path}:{n}: not valid JSON ({e})") from None
    elif source["kind"] == "hf":
        import datasets

        ds = datasets.load_dataset(source["id"], split=source.get("split", "train"), streaming=True)

        def rows() -> Iterator[tuple[str, Any]]:
            for n, r in enumerate(ds):
                yield f"{source['id']}[{n}]", r
    else:
        raise ChatError(f"chat.sources: kind must be jsonl or hf, got {source['kind']!r}")
    for where, r in rows():
        if not isinstance(r, dict) or field not in r:
            raise ChatError(f"{where}: no {field!r} field")
        msgs = check_conversation(r[field], where, tokens)
        yield _item("user", where, msgs)


def split_of(item_id: str, held_out: float) -> str:
    """``test`` for a stable ``held_out`` share of a user's items (by a hash of the id), else ``train``."""
    h = int(hashlib.sha256(item_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if h < held_out else "train"


def write_items(path: Path, items: Iterable[dict[str, Any]], tokens: dict[str, str]) -> dict[str, int]:
    """Check every item and stream it to ``path`` (jsonl); returns the count of each kind."""
    counts: dict[str, int] = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for it in items:
            check_conversation(it["messages"], it["id"], tokens)
            fh.write(json.dumps(it, ensure_ascii=False) + "\n")
            counts[it["kind"]] = counts.get(it["kind"], 0) + 1
    return counts


def reservoir(items: Iterable[dict[str, Any]], k: int, seed: str) -> list[dict[str, Any]]:
    """A seeded uniform sample of ``k`` items of a stream (Algorithm R: ``k`` items in memory), in the
    stream's order."""
    rng = random.Random(seed)
    kept: list[tuple[int, dict]] = []
    for n, it in enumerate(items):
        if n < k:
            kept.append((n, it))
        else:
            j = rng.randrange(n + 1)
            if j < k:
                kept[j] = (n, it)
    return [it for _, it in sorted(kept, key=lambda x: x[0])]


def first_paragraphs(path: Path, max_bytes: int) -> list[str]:
    """The first paragraphs of a corpus split, up to about ``max_bytes`` of UTF-8."""
    out, got = [], 0
    for _, paras in pages(path):
        for t in paras:
            if got >= max_bytes:
                return out
            out.append(t)
            got += len(t.encode("utf-8"))
    return out


def read_items(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)
