"""An ordered, bounded parallel map for the tokenize stage's encoding workers (:mod:`warmstart.data.shards`).

``ordered_map(fn, items, workers, init, initargs)`` yields ``fn(item)`` in input order. With one worker it runs
in this process (after ``init(*initargs)``); with more, a ``spawn`` pool runs it with at most ``2 x workers``
items in flight, so memory is bounded however long ``items`` is (``Pool.imap`` would read the whole input
ahead). ``fn``, ``init`` and the items must be picklable (module-level functions).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any


def ordered_map(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    workers: int = 1,
    init: Callable[..., None] | None = None,
    initargs: tuple = (),
) -> Iterator[Any]:
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        if init is not None:
            init(*initargs)
        for item in items:
            yield fn(item)
        return
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # a fork of a process holding torch/rayon threads can deadlock
    with ctx.Pool(workers, initializer=init, initargs=initargs) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.apply_async(fn, (item,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
