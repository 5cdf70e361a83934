"""A long pass's chunks worked through by several processes, in order, with few chunks in memory.

A check's full pass over millions of rows spends its time in Python (Feast's reads and on-demand
computation, row by row), so one process uses one core; and a blocking check holds everything
downstream of it, so the other core is idle meanwhile. Each worker is a new interpreter (spawn: it
inherits no thread, lock or connection of the step) that builds its state once, a feature store for
instance, and then takes chunks.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

Chunk = TypeVar("Chunk")
Result = TypeVar("Result")
IN_FLIGHT_PER_WORKER = 2  # chunks handed to a worker ahead of its results: memory holds so many

_state: Any = None  # a worker's own, built by `_set_up`


def _set_up(make_state: Callable[[], Any]) -> None:
    global _state
    _state = make_state()


def _work(work: Callable[[Any, Chunk], Result], chunk: Chunk) -> Result:
    return work(_state, chunk)


def pooled_map(
    work: Callable[[Any, Chunk], Result],
    chunks: Iterable[Chunk],
    processes: int,
    state: Any,
    make_state: Callable[[], Any],
) -> Iterator[Result]:
    """`work(state, chunk)` for each chunk, in the chunks' order. With one process, in this one, on
    `state`; with more, each worker builds its own state once with `make_state()` (importable
    functions, or a partial of one; chunks and results picklable). A worker's exception is raised
    here, and the chunks not yet begun are not worked on."""
    if processes <= 1:
        yield from (work(state, chunk) for chunk in chunks)
        return
    with ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_set_up,
        initargs=(make_state,),
    ) as pool:
        pending: deque[Future[Result]] = deque()
        try:
            for chunk in chunks:
                pending.append(pool.submit(_work, work, chunk))
                if len(pending) >= IN_FLIGHT_PER_WORKER * processes:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
