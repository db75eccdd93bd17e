"""Run an iterator's work in a thread, a bounded amount ahead of its consumer.

Why: in ``compress`` the codec (on a GPU: the device) must not wait while the next samples
are read from the tar and their image members decoded. Pillow's decoders and zlib release the
GIL, and so do torch's kernels, so a reader thread and the codec's thread run at the same time
on two cores (or the reader keeps a GPU fed from one core).

The buffer is bounded twice: at most ``depth`` items, and at most ``max_weight`` in total
(e.g. decoded pixels), except that one item is always let through, however heavy, so that the
stream moves. So prefetching adds a known, small amount to a worker's memory.

An exception in the reader (a truncated tar naming shard and key, a network error) is raised
in the consumer, at the place in the stream where it happened, with its own type and message.
When the consumer stops early (its own error, or it stops iterating), the reader is told to
stop and is waited for, so it does not go on reading a source that the consumer closes.

Readers run on long-lived threads, reused from one call to the next (a new one only when all
are busy). A fresh thread per shard made a worker's memory grow with the number of shards: torch
(restore decodes in the reader) keeps per-thread state, and glibc hands each new thread an arena.
Decoding one Kodak image twice per shard for 12 shards peaked at 722 MiB with a fresh thread
per shard and 568 MiB with a reused one (benchmarks/pipeline/reader-threads/), and 8-row
shards had put msh-n96-v2 restore workers at 1.5 GiB against 0.8 GiB with one big shard
(benchmarks/pipeline/msh-n96-v2/results-cpus0.5.md).
"""

from __future__ import annotations

import collections
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

JOIN_TIMEOUT_S = 60.0  # a reader stuck in I/O longer than this is left behind (daemon thread)


class _ReaderThread:
    """A daemon thread that runs one job at a time and then waits, idle, for the next.

    Not a ThreadPoolExecutor: its threads are joined at interpreter exit, so a reader stuck in
    I/O would hold the worker's exit, where JOIN_TIMEOUT_S promises to leave it behind."""

    _idle: queue.SimpleQueue = queue.SimpleQueue()
    _count = 0
    _count_lock = threading.Lock()

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        with _ReaderThread._count_lock:
            _ReaderThread._count += 1
            number = _ReaderThread._count
        self._idle_name = f"latentarc-reader-{number}"
        threading.Thread(target=self._loop, name=self._idle_name, daemon=True).start()

    def _loop(self) -> None:
        me = threading.current_thread()
        while True:
            job, name, done = self._jobs.get()
            me.name = name  # what the thread works on, for profilers and thread dumps
            try:
                job()
            finally:
                job = None  # let go of the producer, and the source it read, while idle
                me.name = self._idle_name
                done.set()
                _ReaderThread._idle.put(self)

    @classmethod
    def run(cls, job: Callable[[], None], name: str) -> threading.Event:
        """Start ``job`` on an idle reader thread (a new one if none is idle), which takes
        ``name`` while it runs; the event is set when it has finished."""
        try:
            reader = cls._idle.get_nowait()
        except queue.Empty:
            reader = cls()
        done = threading.Event()
        reader._jobs.put((job, name, done))
        return done


def _forget_readers_in_child() -> None:
    """A forked child (a DataLoader worker) has none of its parent's threads: idle readers
    inherited in the queue would take jobs and never run them."""
    _ReaderThread._idle = queue.SimpleQueue()
    _ReaderThread._count_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_readers_in_child)


def reader_threads() -> int:
    """How many reader threads this process has started (tests: they are reused)."""
    return _ReaderThread._count


class Pending:
    """Run ``job`` on a reused reader thread (see ``_ReaderThread``) while the caller goes on;
    ``result()`` waits for it and returns its value or raises its exception, in the caller's
    thread.

    Why: compress decodes each batch's streams (for PSNR and the content hash) while the codec
    encodes the next batch (``shard_encode``); a thread per batch would grow the worker's memory
    as a thread per shard did."""

    def __init__(self, job: Callable[[], T], name: str) -> None:
        self._value: object = None
        self._exc: BaseException | None = None

        def run() -> None:
            try:
                self._value = job()
            except BaseException as exc:  # re-raised by result()
                self._exc = exc

        self._done = _ReaderThread.run(run, name)

    def wait(self) -> None:
        self._done.wait(JOIN_TIMEOUT_S)

    def result(self):
        self._done.wait()
        if self._exc is not None:
            exc, self._exc = self._exc, None
            raise exc
        value, self._value = self._value, None  # the caller owns it now
        return value


class _End:
    def __init__(self, exc: BaseException | None = None) -> None:
        self.exc = exc


def prefetch(items: Iterable[T], depth: int, weight: Callable[[T], int] | None = None,
             max_weight: int = 0, name: str = "prefetch") -> Iterator[T]:
    """Yield ``items`` in order while a thread produces them ahead, bounded as above.

    ``depth`` < 1 means no thread: the items are produced inline (a switch for measuring what
    the thread buys, and for debugging). ``weight``/``max_weight`` (0: unbounded) add the
    second bound.
    """
    if depth < 1:
        yield from items
        return
    buffer: collections.deque = collections.deque()
    held = [0]  # total weight in the buffer
    cond = threading.Condition()
    stop = threading.Event()

    def has_room(w: int) -> bool:
        if not buffer:
            return True
        if len(buffer) >= depth:
            return False
        return not max_weight or held[0] + w <= max_weight

    def put(value: object, w: int) -> bool:
        with cond:
            while not stop.is_set() and not has_room(w):
                cond.wait()
            if stop.is_set():
                return False
            buffer.append((value, w))
            held[0] += w
            cond.notify_all()
            return True

    def produce() -> None:
        try:
            for item in items:
                if not put(item, weight(item) if weight else 0):
                    return
        except BaseException as exc:  # re-raised in the consumer's thread
            put(_End(exc), 0)
            return
        put(_End(), 0)

    done = _ReaderThread.run(produce, name)
    try:
        while True:
            with cond:
                while not buffer:
                    cond.wait()
                value, w = buffer.popleft()
                held[0] -= w
                cond.notify_all()
            if isinstance(value, _End):
                if value.exc is not None:
                    raise value.exc
                return
            yield value
    finally:
        with cond:
            stop.set()
            buffer.clear()
            cond.notify_all()
        done.wait(JOIN_TIMEOUT_S)
