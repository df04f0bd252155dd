"""Jobs spread over spawned worker processes (the stability study, the context testbed).

Small models use one or two CPU threads poorly; two processes of one thread
each keep both cores busy. Workers are *spawned* (a fresh interpreter: no
forked torch thread pools), each job is a picklable argument to a module-level
function, and results come back in the order of the jobs. Each worker tunes its garbage collector
as the stage kernels do (:func:`warmstart.notebook.kernel.tune_gc`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any


@contextmanager
def process_pool(fn: Callable[[Any], Any], workers: int) -> Iterator[Callable[[Sequence[Any]], list[Any]]]:
    """``run_all(jobs) -> [fn(job) for job in jobs]``: in this process for ``workers <= 1``, else over
    ``workers`` spawned processes (``fn`` must be importable by module path)."""
    if workers <= 1:
        yield lambda jobs: [fn(j) for j in jobs]
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from warmstart.notebook.kernel import (
        tune_gc,  # workers import torch and transformers too (see warmstart.notebook.kernel)
    )

    with ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=tune_gc
    ) as ex:
        yield lambda jobs: list(ex.map(fn, jobs))
