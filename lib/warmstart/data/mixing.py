"""Language mixing: per-language sampling weights with a repetition cap.

NorMistral balances languages by upsampling low-resource text, repeating it up
to 16 times. :func:`plan_mixture` turns sizes and weights into a byte budget
per language by water-filling: every language gets ``total * w / sum(w)``
unless that exceeds ``max_repeats * size``; capped languages are fixed at the
cap and the rest of the budget is shared out again by weight among the others.
If every language hits its cap the total shrinks and the plan says so.

:func:`take_bytes` realises a plan for one language: whole shuffled passes over
the items, then a seeded partial pass, until the byte target is reached.
:func:`mixed_texts` puts the two together: a tokenizer's training text drawn from several languages by weight.
:func:`sampled_texts` draws the same kind of mix as a stream capped at a byte budget (``tokenizer.max_train_bytes``),
for corpora too large to hold.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class MixPlan:
    lang: str
    size: int  # bytes available
    weight: float
    target: int  # bytes to draw
    repeats: float  # target / size
    share: float  # target / sum of all targets
    capped: bool  # hit max_repeats

    def as_dict(self) -> dict:
        return asdict(self)


def plan_mixture(
    sizes: dict[str, int],
    weights: dict[str, float],
    max_repeats: float = 16.0,
    total: int | None = None,
) -> dict[str, MixPlan]:
    """Bytes to draw per language. ``total`` defaults to the sum of the sizes."""
    if not weights:
        raise ValueError("mixing weights are empty: give at least one language")
    unknown = sorted(set(weights) - set(sizes))
    if unknown:
        raise ValueError(f"mixing weights name languages with no data: {unknown}; available: {sorted(sizes)}")
    bad = {k: w for k, w in weights.items() if not (w > 0 and math.isfinite(w))}
    if bad:
        raise ValueError(f"mixing weights must be finite and > 0, got {bad}")
    empty = sorted(k for k in weights if sizes[k] <= 0)
    if empty:
        raise ValueError(f"languages with no data cannot be mixed: {empty}")
    if max_repeats < 1:
        raise ValueError(f"max_repeats must be >= 1, got {max_repeats}")
    langs = list(weights)
    if total is None:
        total = sum(sizes[k] for k in langs)
    if total <= 0:
        raise ValueError(f"total must be > 0, got {total}")

    alloc: dict[str, float] = {}
    free = list(langs)
    remaining = float(total)
    while free:
        wsum = sum(weights[k] for k in free)
        over = [k for k in free if remaining * weights[k] / wsum > max_repeats * sizes[k]]
        if not over:
            for k in free:
                alloc[k] = remaining * weights[k] / wsum
            break
        for k in over:
            alloc[k] = max_repeats * sizes[k]
            remaining -= alloc[k]
            free.remove(k)

    targets = _round_preserving_sum(alloc)
    grand = sum(targets.values())
    return {
        k: MixPlan(
            lang=k,
            size=sizes[k],
            weight=weights[k],
            target=targets[k],
            repeats=targets[k] / sizes[k],
            share=targets[k] / grand,
            capped=k not in free,
        )
        for k in langs
    }


def _round_preserving_sum(values: dict[str, float]) -> dict[str, int]:
    """Largest-remainder rounding: integers that add up to round(sum)."""
    floors = {k: math.floor(v) for k, v in values.items()}
    short = round(sum(values.values())) - sum(floors.values())
    order = sorted(values, key=lambda k: (floors[k] - values[k], k))
    for k in order[: max(short, 0)]:
        floors[k] += 1
    return floors


def take_bytes(items: list[str], n_bytes: int, seed: int) -> list[str]:
    """Whole seeded passes over ``items``, then a partial pass, until ``n_bytes``.

    The item that crosses the target is included, so the result holds at least
    ``n_bytes`` of UTF-8 (or all passes, if the target is a whole multiple).
    """
    if n_bytes <= 0:
        return []
    if not items:
        raise ValueError("cannot draw bytes from an empty list of texts")
    sizes = [len(t.encode("utf-8")) for t in items]
    if sum(sizes) == 0:
        raise ValueError("cannot draw bytes from texts that are all empty")
    out: list[str] = []
    got = 0
    rng = random.Random(seed)
    while got < n_bytes:
        order = list(range(len(items)))
        rng.shuffle(order)
        for i in order:
            out.append(items[i])
            got += sizes[i]
            if got >= n_bytes:
                break
    return out


def _lang_seed(seed: int, lang: str) -> int:
    digest = hashlib.sha256(f"{seed}:{lang}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def mixed_texts(
    texts_by_lang: Mapping[str, list[str]],
    weights: Mapping[str, float],
    max_repeats: float,
    seed: int,
) -> list[str]:
    """Training text drawn from several languages by weight.

    Sizes are the UTF-8 bytes of each weighted language; :func:`plan_mixture`
    turns them into a byte target per language (repeating small languages at
    most ``max_repeats`` times; the total is the sum of the sizes), and
    :func:`take_bytes` draws that many bytes with a per-language seed derived
    from ``seed``. The result is shuffled with ``seed``. Languages without a
    weight are ignored; weight keys must already be language codes (resolve
    ``source``/``target`` with :meth:`Params.resolve_lang` first).
    """
    sizes = {lang: sum(len(t.encode("utf-8")) for t in texts) for lang, texts in texts_by_lang.items()}
    plan = plan_mixture(sizes, dict(weights), max_repeats=max_repeats)
    out: list[str] = []
    for lang, p in plan.items():
        out.extend(take_bytes(list(texts_by_lang[lang]), p.target, seed=_lang_seed(seed, lang)))
    random.Random(seed).shuffle(out)
    return out


def target_weights(mix: Mapping[str, float], resolve: Callable[[str], str], languages: list[str]) -> dict[str, float]:
    """``tokenizer.target_mix`` by corpus language: keys resolved by ``resolve``, a language named twice summed."""
    weights: dict[str, float] = {}
    for key, w in mix.items():
        if (lang := resolve(key)) not in languages:
            raise ValueError(
                f"tokenizer.target_mix names {key!r} ({lang}), not a corpus language; "
                f"available: {languages} (add it to corpus.extra_languages)"
            )
        weights[lang] = weights.get(lang, 0.0) + w
    return weights


def _keep(seed: int, lang: str, n: int, rate: float) -> bool:
    """Whether text ``n`` of ``lang`` is in the partial pass at ``rate`` (a seeded hash, no state)."""
    h = hashlib.blake2b(f"{seed}:{lang}:{n}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") < rate * 2**64


def sampled_texts(
    sources: Mapping[str, Callable[[], Iterable[str]]],
    weights: Mapping[str, float],
    max_repeats: float,
    max_bytes: int,
    seed: int,
) -> tuple[Callable[[], Iterator[str]], dict[str, MixPlan]]:
    """A streamed sample of at most about ``max_bytes`` of text mixed by ``weights`` (NorMistral trained its
    tokenizer on a sample): nothing is held in memory, the sources are read as they are needed.

    ``sources``: language -> a function returning its texts afresh. One pass counts each language's bytes;
    :func:`plan_mixture` gives the byte target per language (capped at ``max_repeats`` passes), scaled down to
    ``max_bytes`` in all. Each language is then read ``floor(rate)`` whole times plus a partial pass that keeps
    text ``n`` where a hash of ``(seed, lang, n)`` falls below the fractional rate, so the sample is spread over
    the whole corpus and is the same every time. Returns a function giving the sample's texts (it can be
    iterated more than once, as a unigram trainer does) and the plan, with the targets after scaling.
    """
    if max_bytes <= 0:
        raise ValueError(f"max_train_bytes must be > 0, got {max_bytes}")
    unknown = sorted(set(weights) - set(sources))
    if unknown:
        raise ValueError(f"mixing weights name languages with no data: {unknown}; available: {sorted(sources)}")
    sizes = {lang: sum(len(t.encode("utf-8")) for t in sources[lang]()) for lang in weights}
    plan = plan_mixture(sizes, dict(weights), max_repeats=max_repeats)
    scale = min(1.0, max_bytes / sum(p.target for p in plan.values()))
    rates = {lang: p.target * scale / p.size for lang, p in plan.items()}

    def texts() -> Iterator[str]:
        for lang, rate in rates.items():
            whole, frac = int(rate), rate - int(rate)
            for _ in range(whole):
                yield from sources[lang]()
            if frac > 0:
                yield from (t for n, t in enumerate(sources[lang]()) if _keep(seed, lang, n, frac))

    return texts, plan
