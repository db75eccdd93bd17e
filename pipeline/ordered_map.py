"""Map a function over a stream on several threads, in order, with bounded work in flight.

Why: restore's last step per row, encoding the decoded image in its output format, ran on one
thread. On a GPU machine that thread bounds the worker: a Kodak image takes 155 ms to write as
PNG and 49 ms to decode, so one H200 restore actor ran at 0.25 of the bare decode loop while
its 15 reserved CPUs idled (benchmarks/pipeline/gpu/README.md, run 5). zlib, libpng, libjpeg
and libwebp release the GIL, so N threads encode N images at once.

Results come out in input order, each exactly once. At most ``2 * workers`` items are in
flight, and at most ``max_weight`` of their total ``weight`` (e.g. decoded pixels), except that
one item always passes, however heavy: what this adds to a worker's memory is known and small.
An exception raised by ``fn``, or by ``items`` itself, comes out at its place in the stream,
after every earlier result, with its own type. When the consumer stops early, queued items
are cancelled and the running ones waited for, so none outlives the call.

With ``workers <= 1`` nothing changes: ``fn`` runs in the caller's thread, one item at a time.
Either way the source is closed when the map ends, however it ends: a failed ``future.result()``
would otherwise keep this frame, and the source with it (restore's prefetch reader thread and
its open Parquet file), alive in a reference cycle until the garbage collector ran.
Pools are long-lived, one per size per process, for the reason ``pipeline.prefetch`` gives:
a fresh thread per shard made a worker's memory grow with the number of shards.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_pools: dict[int, concurrent.futures.ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _forget_pools() -> None:
    _pools.clear()  # a forked child has none of the parent's threads: new pools on first use


os.register_at_fork(after_in_child=_forget_pools)


def _close(source: object) -> None:
    close = getattr(source, "close", None)
    if close is not None:
        close()


def _pool(workers: int) -> concurrent.futures.ThreadPoolExecutor:
    with _pools_lock:
        if workers not in _pools:
            _pools[workers] = concurrent.futures.ThreadPoolExecutor(
                workers, thread_name_prefix=f"latentarc-map{workers}")
        return _pools[workers]


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int,
                weight: Callable[[T], int] | None = None,
                max_weight: int | None = None) -> Iterator[R]:
    """``map(fn, items)`` on ``workers`` threads, in order (see the module's docstring)."""
    source = iter(items)
    if workers <= 1:
        try:
            for item in source:
                yield fn(item)
        finally:
            _close(source)
        return
    pool = _pool(workers)
    pending: collections.deque = collections.deque()  # (future, weight), in input order
    in_flight = 0
    future = None
    try:
        while True:
            try:
                item = next(source)
            except StopIteration:
                break
            except BaseException:  # the source failed: what came before it comes out first
                while pending:
                    yield pending.popleft()[0].result()
                raise
            w = weight(item) if weight else 0
            while pending and (len(pending) >= 2 * workers
                               or (max_weight is not None and in_flight + w > max_weight)):
                future, fw = pending.popleft()
                in_flight -= fw
                yield future.result()
            pending.append((pool.submit(fn, item), w))
            in_flight += w
            del item  # the pool holds it now; the caller's frame should not
        while pending:
            future, fw = pending.popleft()
            in_flight -= fw
            yield future.result()
    finally:
        future = None  # a failed one holds its exception, whose traceback holds this frame
        futures = [f for f, _ in pending]
        for f in futures:
            f.cancel()
        concurrent.futures.wait(futures)
        pending.clear()
        _close(source)
