"""A long-context retrieval suite for real models, built from corpus text at any token length.

Alfred-40B-1023 compared context-extension methods on four retrieval tasks
(key-value retrieval with UUIDs, coarse topic retrieval, fine line
retrieval, multi-document retrieval) at 2K, 4K and 8K, plus the passkey
test everyone runs. :func:`build_suite` builds them from a list of corpus
texts (sentences for haystacks and documents, words for names) so that each
prompt fills ``length`` tokens of the model's tokenizer, leaving room for
the answer; :func:`score_suite` scores greedy generations by exact match.

``kv_uuid`` (Liu et al. 2023, "Lost in the Middle", key-value retrieval)
    A JSON object of random UUID pairs; give the value of one key.
``topic`` (LongChat/LongEval coarse-grained topic retrieval, Li et al. 2023)
    A record of conversations on several topics; name the topic of the
    ``k``-th one (LongEval asks for the first; ``k`` spreads the depth).
``line`` (LongEval fine-grained line retrieval)
    ``line <name>: REGISTER_CONTENT is <number>`` lines; give one line's number.
``multidoc`` (multi-document retrieval)
    Corpus passages with random IDs; give the ID of the passage that
    contains a quoted sentence.
``passkey`` (Mohtashami & Jaggi 2023)
    A five-digit pass key hidden in corpus sentences; repeat it.

Every item has one answer that occurs exactly once in its prompt, and its
target placed at a depth spread evenly over the items (item ``i`` of ``n``
at ``(i + u) / n``). Deterministic per ``(seed, task, length, item)``.
Chance: 1 / (number of candidates in the prompt) for ``kv_uuid``,
``topic``, ``line``, ``multidoc``; ``1e-5`` for ``passkey``.

Alfred normalised each of its 12 subtasks (task x length) and averaged the
normalised scores per method. Its normalisation is not spelt out; here a
single model's suite reports the chance-corrected mean
(``(acc - chance) / (1 - chance)`` averaged over tasks), and
:func:`alfred_normalised_mean` divides each subtask by the best method's
score before averaging, for a comparison across methods.
"""

from __future__ import annotations

import json
import random
import re
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from warmstart.evaluate.intervals import accuracy_cell

TASKS = ("kv_uuid", "topic", "line", "multidoc", "passkey")
_SENT = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[A-Za-z]{4,12}")


# ---------------------------------------------------------------- corpus material


class _Corpus:
    """Sentences and distinct words of the texts, in text order (the same for every seed)."""

    def __init__(self, texts: Sequence[str]):
        sents, words, seen = [], [], set()
        for text in texts:
            for s in _SENT.split(" ".join(str(text).split())):
                if 20 <= len(s) <= 300:
                    sents.append(s)
            for w in _WORD.findall(text):
                w = w.lower()
                if w not in seen:
                    seen.add(w)
                    words.append(w)
        if len(sents) < 8 or len(words) < 16:
            raise ValueError(
                f"texts: need at least 8 sentences and 16 distinct words, got {len(sents)} and {len(words)}"
            )
        self.sents, self.words = sents, words

    def run(self, rng: random.Random, n: int) -> list[str]:
        """``n`` consecutive sentences from a random start (wrapping around)."""
        start = rng.randrange(len(self.sents))
        return [self.sents[(start + k) % len(self.sents)] for k in range(n)]


class _Budget:
    """Token counts with one tokenizer (cached per string)."""

    def __init__(self, tokenizer: Any):
        self.tok, self.cache = tokenizer, {}

    def __call__(self, text: str) -> int:
        if text not in self.cache:
            self.cache[text] = len(self.tok(text, add_special_tokens=False)["input_ids"])
        return self.cache[text]


# ---------------------------------------------------------------- the tasks

# A task: (rng, corpus, n_units, target index) -> (head, units, tail, answer). The prompt is
# head + sep.join(units) + tail; units are added until the prompt fills the budget.
Builder = Callable[[random.Random, _Corpus, int, int], tuple[str, list[str], str, str]]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _kv_uuid(rng: random.Random, c: _Corpus, n: int, t: int) -> tuple[str, list[str], str, str]:
    keys, vals = [_uuid(rng) for _ in range(n)], [_uuid(rng) for _ in range(n)]
    head = "Extract the value corresponding to the specified key in the JSON object below.\n\nJSON data:\n{"
    units = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in zip(keys, vals)]
    tail = f'}}\n\nKey: {json.dumps(keys[t])}\nCorresponding value: "'
    return head, units, tail, vals[t]


def _names(rng: random.Random, c: _Corpus, n: int, parts: int) -> list[str]:
    names: list[str] = []
    while len(names) < n:
        name = "-".join(rng.sample(c.words, parts))
        if name not in names:
            names.append(name)
    return names


def _line(rng: random.Random, c: _Corpus, n: int, t: int) -> tuple[str, list[str], str, str]:
    names, nums = _names(rng, c, n, 2), [str(x) for x in rng.sample(range(10000, 100000), n)]
    head = (
        "Below is a record of lines I want you to remember. Each line begins with 'line <line index>' and "
        "contains a '<REGISTER_CONTENT>' at the end of the line as a numerical value. For each line index, "
        "memorize its corresponding <REGISTER_CONTENT>. At the end of the record, I will ask you to retrieve "
        "the corresponding <REGISTER_CONTENT> of a certain line index. Now the record start:\n\n"
    )
    units = [f"line {a}: REGISTER_CONTENT is <{b}>" for a, b in zip(names, nums)]
    tail = (
        f"\n\nNow the record is over. Tell me what is the <REGISTER_CONTENT> in line {names[t]}? "
        f"I need the number.\nAnswer: The <REGISTER_CONTENT> in line {names[t]} is <"
    )
    return head, units, tail, nums[t]


def _topic(rng: random.Random, c: _Corpus, n: int, t: int) -> tuple[str, list[str], str, str]:
    topics = [" ".join(w.capitalize() for w in name.split("-")) for name in _names(rng, c, n, 2)]
    head = (
        "Below is a record of our previous conversation on several different topics. You are the ASSISTANT, "
        "and I am the USER. At the beginning of each topic, the USER will say 'I would like to discuss the "
        "topic of <TOPIC>'. Memorize each <TOPIC>. At the end of the record, I will ask you to retrieve one "
        "topic by its number. Now the record start.\n\n"
    )
    units = [
        f"USER: I would like to discuss the topic of {tp}.\nASSISTANT: Sure! {' '.join(c.run(rng, 2))}" for tp in topics
    ]
    tail = (
        f"\n\nNow the record ends. What is topic number {t + 1} we discussed? Only give me the topic name.\n"
        f"Answer: Topic number {t + 1} is"
    )
    return head, units, tail, topics[t]


def _multidoc(rng: random.Random, c: _Corpus, n: int, t: int) -> tuple[str, list[str], str, str]:
    ids = [str(x) for x in rng.sample(range(1000, 10000), n)]
    docs = [c.run(rng, 2) for _ in range(n)]
    quote = docs[t][rng.randrange(2)]
    head = "Below are several documents, each with an ID. Read them; I will then ask which one contains a sentence.\n\n"
    units = [f"Document [ID: {i}]: {' '.join(d)}" for i, d in zip(ids, docs)]
    tail = f'\n\nWhich document contains the sentence "{quote}"? Answer with its ID.\nAnswer: The document ID is'
    return head, units, tail, ids[t]


def _passkey(rng: random.Random, c: _Corpus, n: int, t: int) -> tuple[str, list[str], str, str]:
    code = str(rng.randrange(10000, 100000))
    head = "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it.\n\n"
    units = c.run(rng, n)
    units.insert(t, f"The pass key is {code}. Remember it.")
    tail = "\n\nWhat is the pass key? The pass key is"
    return head, units, tail, code


BUILDERS: Mapping[str, Builder] = {
    "kv_uuid": _kv_uuid,
    "topic": _topic,
    "line": _line,
    "multidoc": _multidoc,
    "passkey": _passkey,
}
_SEP = {"kv_uuid": ", ", "topic": "\n\n", "line": "\n", "multidoc": "\n\n", "passkey": " "}
_MIN_UNITS = {"kv_uuid": 2, "topic": 2, "line": 2, "multidoc": 2, "passkey": 0}  # passkey: the needle alone


def _once(prompt: str, answer: str) -> bool:
    return len(re.findall(r"(?<![0-9A-Za-z])" + re.escape(answer) + r"(?![0-9A-Za-z])", prompt)) == 1


class ShortLength(ValueError):
    """``length`` is shorter than the smallest item of a task (prompt + answer + room)."""


def _item(task: str, rng_seed: str, c: _Corpus, count: _Budget, length: int, room: int, depth: float) -> dict[str, Any]:
    for attempt in range(10):  # a new draw when the corpus happens to contain the answer (a number, say)
        item = _fill(task, f"{rng_seed}:{attempt}" if attempt else rng_seed, c, count, length, room, depth)
        if _once(item["prompt"], item["answer"]):
            return item
    raise ValueError(f"texts: the {task} answer keeps occurring more than once in its prompt (repetitive corpus?)")


def _fill(task: str, rng_seed: str, c: _Corpus, count: _Budget, length: int, room: int, depth: float) -> dict[str, Any]:
    """The item with as many units as fit: prompt + answer + ``room`` tokens <= ``length``."""
    build = BUILDERS[task]

    def make(n: int) -> tuple[str, str, int, int, int]:
        rng = random.Random(rng_seed)  # the same draws for every n: a deterministic search
        t = min(int(depth * (n + (task == "passkey"))), n - (task != "passkey"))
        head, units, tail, answer = build(rng, c, n, t)
        prompt = head + _SEP[task].join(units) + tail
        return prompt, answer, t, len(units), count(prompt) + count(answer) + room

    n = _MIN_UNITS[task]
    prompt, answer, t, units, need = make(n)
    if need > length:
        raise ShortLength(f"length: {length} tokens are too few for a {task} item ({need} needed with its answer)")
    step = 1
    while True:  # grow geometrically, then back off: O(log n) tokenizations
        cand = make(n + step)
        if cand[4] > length:
            if step == 1:
                break
            step = 1
            continue
        n, (prompt, answer, t, units, need), step = n + step, cand, step * 2
    return {
        "task": task,
        "prompt": prompt,
        "answer": answer,
        "depth": depth,
        "target": t,
        "units": units,
        "prompt_tokens": count(prompt),
        "chance": 1e-5 if task == "passkey" else 1.0 / units,
    }


def _check_tasks(tasks: Sequence[str]) -> None:
    unknown = [t for t in tasks if t not in BUILDERS]
    if unknown or not tasks:
        raise ValueError(f"tasks: unknown {unknown or 'none given'}; known tasks: {', '.join(TASKS)}")


def min_lengths(
    texts: Sequence[str], tokenizer: Any, tasks: Sequence[str] = TASKS, answer_room: int = 4
) -> dict[str, int]:
    """``{task: the length its smallest item needs}`` with this tokenizer, measured on one draw (other draws'
    UUIDs, numbers and sentences may need a few tokens more): for choosing lengths and tasks."""
    _check_tasks(tasks)
    corpus, count = _Corpus(texts), _Budget(tokenizer)
    out = {}
    for task in tasks:
        rng = random.Random(f"warmstart.longctx:0:{task}:min")
        head, units, tail, answer = BUILDERS[task](rng, corpus, _MIN_UNITS[task], 0)
        out[task] = count(head + _SEP[task].join(units) + tail) + count(answer) + answer_room
    return out


def build_suite(
    texts: Sequence[str],
    tokenizer: Any,
    length: int,
    n_items: int,
    seed: int = 0,
    tasks: Sequence[str] = TASKS,
    answer_room: int = 4,
    on_short: str = "error",
) -> list[dict[str, Any]]:
    """``n_items`` items per task, each filling ``length`` tokens: prompt + answer + ``answer_room`` (the
    generation budget of :func:`score_suite`) <= ``length``, with as many units as fit.

    Each item: ``task``, ``prompt``, ``answer``, ``depth``, ``target`` (its
    unit), ``units`` (candidates), ``prompt_tokens``, ``chance``, ``length``.
    Raises ValueError naming the parameter when ``length`` is shorter than a
    task's smallest item (``on_short="skip"`` leaves that task out instead,
    with a warning; :func:`min_lengths` says what each task needs), a task is
    unknown or the texts are too thin.
    """
    _check_tasks(tasks)
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    if on_short not in ("error", "skip"):
        raise ValueError(f"on_short must be 'error' or 'skip', got {on_short!r}")
    corpus, count = _Corpus(texts), _Budget(tokenizer)
    items = []
    for task in tasks:
        pos = random.Random(f"warmstart.longctx:{seed}:{task}:{length}:depths")
        rows = []
        try:
            for i in range(n_items):
                depth = min((i + pos.random()) / n_items, 1.0)
                key = f"warmstart.longctx:{seed}:{task}:{length}:{i}"
                rows.append({**_item(task, key, corpus, count, length, answer_room, depth), "length": length})
        except ShortLength as e:
            if on_short == "error":
                raise
            warnings.warn(f"build_suite: {task} left out ({e})", stacklevel=2)
            continue
        items += rows
    return items


# ---------------------------------------------------------------- scoring


def exact_match(generation: str, answer: str) -> bool:
    """Greedy exact match: the generation, after leading whitespace and quotes/brackets/colons, starts with
    the answer, and the answer is not the prefix of a longer word or number (``71432`` vs ``714321``)."""
    g = generation.lstrip().lstrip("\"'<[(:`* ").lstrip()
    if not g.startswith(answer):
        return False
    rest = g[len(answer) :]
    return not rest or not (rest[0].isalnum() or (rest[0] == "-" and rest[1:2].isalnum()))


@torch.no_grad()
def generate_ids(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    stop_id: int | None,
    batch_size: int = 8,
) -> list[list[int]]:
    """Greedy continuations of tokenized ``prompts`` in left-padded batches: the new ids of each, cut after
    the first ``stop_id`` (None: never cut, the full ``max_new_tokens``)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("tokenizer: needs a pad or eos token to batch prompts")
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    outs: list[list[int]] = []
    try:
        for b in range(0, len(prompts), batch_size):
            chunk = prompts[b : b + batch_size]
            width = max(len(e) for e in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            att = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, e in enumerate(chunk):
                ids[i, width - len(e) :] = torch.tensor(list(e))
                att[i, width - len(e) :] = 1
            gen = model.generate(
                input_ids=ids.to(device),
                attention_mask=att.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=stop_id,
            )
            for row in gen[:, width:].tolist():
                outs.append(row[: row.index(stop_id) + 1] if stop_id is not None and stop_id in row else row)
    finally:
        model.train(was)
    return outs


def generate(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 8) -> list[str]:
    """Greedy continuations of ``prompts`` (left-padded batches, stopped at EOS); decoded without special
    tokens."""
    enc = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    gens = generate_ids(model, tokenizer, enc, max_new_tokens, tokenizer.eos_token_id, batch_size)
    return tokenizer.batch_decode(gens, skip_special_tokens=True)


def score_generations(suite: Sequence[Mapping[str, Any]], generations: Sequence[str]) -> dict[str, Any]:
    """Per-task accuracy with Wilson interval, chance and chance-normalised score; their mean."""
    if len(suite) != len(generations):
        raise ValueError(f"generations: {len(generations)} for {len(suite)} items")
    by: dict[str, list[tuple[Mapping[str, Any], bool]]] = {}
    for it, g in zip(suite, generations):
        by.setdefault(it["task"], []).append((it, exact_match(g, it["answer"])))
    tasks = {}
    for task, rows in by.items():
        cell = accuracy_cell(sum(ok for _, ok in rows), len(rows))
        chance = sum(it["chance"] for it, _ in rows) / len(rows)
        tasks[task] = {**cell, "chance": chance, "normalised": (cell["acc"] - chance) / (1.0 - chance)}
    mean = sum(t["normalised"] for t in tasks.values()) / len(tasks) if tasks else float("nan")
    return {"tasks": tasks, "normalised_mean": mean}


def score_suite(model: Any, tokenizer: Any, suite: Sequence[Mapping[str, Any]], batch_size: int = 8) -> dict[str, Any]:
    """Greedy exact match of ``model`` on a suite: per task ``acc``, ``lo``/``hi`` (95% Wilson), ``chance``,
    ``normalised``; ``normalised_mean`` (Alfred's aggregate for one model); ``items``: per item correct or not."""
    if not suite:
        raise ValueError("suite: no items")
    room = max(len(tokenizer(it["answer"], add_special_tokens=False)["input_ids"]) for it in suite) + 4  # answer_room
    order = sorted(range(len(suite)), key=lambda i: suite[i]["prompt_tokens"])  # similar lengths share a batch
    gens = generate(model, tokenizer, [suite[i]["prompt"] for i in order], room, batch_size)
    generations = [""] * len(suite)
    for i, g in zip(order, gens):
        generations[i] = g
    out = score_generations(suite, generations)
    out["items"] = [
        {
            "task": it["task"],
            "depth": it["depth"],
            "length": it.get("length"),
            "correct": exact_match(g, it["answer"]),
            "generation": g[:80],
        }
        for it, g in zip(suite, generations)
    ]
    return out


def alfred_normalised_mean(table: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``{method: mean}`` of each subtask's accuracy divided by the best method's on it (Alfred's aggregate:
    every subtask counts equally). ``table``: ``{method: {subtask: accuracy}}``; a subtask no method solves
    is left out."""
    subtasks = sorted({s for row in table.values() for s in row})
    best = {s: max(row.get(s, 0.0) for row in table.values()) for s in subtasks}
    kept = [s for s in subtasks if best[s] > 0]
    return {
        m: (sum(row.get(s, 0.0) / best[s] for s in kept) / len(kept) if kept else float("nan"))
        for m, row in table.items()
    }
