"""Restore's output encoders: several threads, results in order, bounded work in flight, errors
at their place, nothing left running; and a restore with them writes the same bytes."""

import threading
import time

import pytest
from conftest import read_tar, sample, write_shards

from models.registry import get_codec
from pipeline.ordered_map import ordered_map
from pipeline.restore import MAX_WRITERS, restore_shard, writer_threads
from pipeline.rows import RowDecoder
from pipeline.shard_encode import Guard, encode_shard
from pipeline.sources import Shard
from pipeline.storage import StorageOptions


class _Tracker:
    """Counts calls running at once, and the items taken from the source but not yet yielded."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most_running = 0
        self.threads: set[str] = set()

    def fn(self, i: int) -> int:
        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.threads.add(threading.current_thread().name)
        time.sleep(0.02 if i % 3 == 0 else 0.002)  # uneven: later items finish first
        with self.lock:
            self.running -= 1
        return i * 10


def test_results_come_in_order_from_several_threads():
    t = _Tracker()
    assert list(ordered_map(t.fn, range(40), workers=4)) == [i * 10 for i in range(40)]
    assert t.most_running > 1 and t.most_running <= 4
    assert len(t.threads) > 1 and threading.current_thread().name not in t.threads


def test_one_worker_runs_in_the_callers_thread():
    t = _Tracker()
    assert list(ordered_map(t.fn, range(5), workers=1)) == [0, 10, 20, 30, 40]
    assert t.threads == {threading.current_thread().name}


def test_items_in_flight_stay_within_count_and_weight():
    taken: list[int] = []

    def source(n):
        for i in range(n):
            taken.append(i)
            yield i

    weights = [5, 5, 100, 5, 5, 5, 5, 5, 5, 5]
    ahead_count, ahead_weight = [], []
    out = []
    for r in ordered_map(lambda i: i, source(len(weights)), workers=3,
                         weight=lambda i: weights[i], max_weight=12):
        out.append(r)
        # taken from the source and not yet yielded; the last one may be the item held while
        # it waits for room, the others are in the pool
        pending = taken[len(out):]
        ahead_count.append(len(pending))
        ahead_weight.append(sum(weights[i] for i in pending[:-1]))
    assert out == list(range(len(weights)))
    assert max(ahead_count) <= 2 * 3  # the one held waiting counts among the 2 * workers
    # the 100 passes alone (one item always does); otherwise the bound holds
    assert all(w <= 12 or w == 100 for w in ahead_weight), ahead_weight

    taken.clear()
    seen = []
    for r in ordered_map(lambda i: i, source(50), workers=3):
        seen.append(len(taken) - r - 1)
    assert max(seen) <= 2 * 3  # without a weight bound: 2 * workers


def test_the_weight_bound_still_lets_several_run_at_once():
    """In-flight weight is given back as results come out: after many items the map still runs
    items side by side (a bound that only grew would serialize it)."""
    t = _Tracker()
    late = _Tracker()

    def fn(i: int) -> int:
        return (late if i >= 30 else t).fn(i)

    out = list(ordered_map(fn, range(40), workers=4, weight=lambda i: 1, max_weight=4))
    assert out == [i * 10 for i in range(40)]
    assert late.most_running > 1


@pytest.mark.parametrize("workers", [1, 3])
def test_the_source_is_closed_when_fn_fails_without_waiting_for_gc(workers):
    """A failed result's traceback holds the map's frame; the source (restore: the prefetch
    reader and its open file) must not live on in that cycle."""
    import gc

    closed = []

    def source():
        try:
            yield from range(20)
        finally:
            closed.append(True)

    def fn(i: int) -> int:
        if i == 2:
            raise ValueError("encode failed")
        return i

    gc.disable()
    try:
        with pytest.raises(ValueError):
            list(ordered_map(fn, source(), workers=workers))
        assert closed == [True]
    finally:
        gc.enable()


def test_an_error_arrives_at_its_place_and_nothing_is_left_running():
    started: list[int] = []
    finished: list[int] = []

    def fn(i: int) -> int:
        started.append(i)
        if i == 7:
            raise KeyError("shard s: key k7 does not decode")
        time.sleep(0.01)
        finished.append(i)
        return i

    got = []
    with pytest.raises(KeyError, match="k7 does not decode"):
        for r in ordered_map(fn, range(100), workers=4):
            got.append(r)
    assert got == list(range(7))  # every earlier result first
    # cancelled or waited for: nothing runs after the generator has finished
    n_started, n_finished = len(started), len(finished)
    time.sleep(0.1)
    assert (len(started), len(finished)) == (n_started, n_finished)
    assert n_started < 100


def test_a_source_error_arrives_after_the_results_before_it():
    def source():
        yield from range(5)
        raise OSError("shard s: truncated at key k5")

    got = []
    with pytest.raises(OSError, match="truncated at key k5"):
        for r in ordered_map(lambda i: (time.sleep(0.01), i)[1], source(), workers=3):
            got.append(r)
    assert got == [0, 1, 2, 3, 4]


def test_a_consumer_that_stops_early_leaves_nothing_running():
    finished: list[int] = []

    def fn(i: int) -> int:
        time.sleep(0.01)
        finished.append(i)
        return i

    gen = ordered_map(fn, range(100), workers=4)
    assert [next(gen) for _ in range(3)] == [0, 1, 2]
    gen.close()
    n = len(finished)
    time.sleep(0.1)
    assert len(finished) == n < 100


def test_writer_threads_leave_one_cpu_to_the_reader_and_stay_capped():
    assert [writer_threads(c) for c in (None, 1, 2, 3, 5)] == [1, 1, 1, 2, 4]
    assert writer_threads(16) == MAX_WRITERS


@pytest.mark.parametrize("image_format", [None, "png"])
def test_restore_with_several_writers_writes_the_same_bytes(tmp_path, image_format):
    samples = [sample(f"k{i:03d}", i) for i in range(13)]
    src = write_shards(tmp_path / "src", [samples])[0]
    archive = str(tmp_path / "archive")
    encode_shard(Shard(str(src), "shard-000000", src.name), archive, get_codec("webp"),
                 guard=Guard(size=False))
    outs = {}
    for writers in (1, 4):
        out = tmp_path / f"out{writers}" / "shard-000000.tar"
        result = restore_shard(archive, "shard-000000", str(out), None, image_format, 95,
                               StorageOptions(), RowDecoder(), writers=writers)
        assert result["samples"] == 13
        outs[writers] = out.read_bytes()
    assert outs[1] == outs[4]
    assert list(read_tar(tmp_path / "out4" / "shard-000000.tar")) == [f"k{i:03d}" for i in range(13)]


def _archive(tmp_path, n: int = 13) -> str:
    src = write_shards(tmp_path / "src", [[sample(f"k{i:03d}", i) for i in range(n)]])[0]
    archive = str(tmp_path / "archive")
    encode_shard(Shard(str(src), "shard-000000", src.name), archive, get_codec("webp"),
                 guard=Guard(size=False))
    return archive


def test_restore_with_several_writers_fails_a_shard_whole(tmp_path, monkeypatch):
    import pipeline.restore as restore

    archive = _archive(tmp_path)
    original = restore._image_member

    def failing(row, *args):
        if row["key"] == "k005":
            raise ValueError("cannot encode k005")
        return original(row, *args)

    monkeypatch.setattr(restore, "_image_member", failing)
    out = tmp_path / "out" / "shard-000000.tar"
    with pytest.raises(ValueError, match="k005"):
        restore_shard(archive, "shard-000000", str(out), None, "png", 95, StorageOptions(),
                      RowDecoder(), writers=3)
    assert not out.exists() and not list((tmp_path / "out").glob("*"))


def test_restore_to_files_with_several_writers_writes_the_same_files(tmp_path):
    archive = _archive(tmp_path)
    trees = {}
    for writers in (1, 3):
        out = tmp_path / f"files{writers}"
        restore_shard(archive, "shard-000000", str(out), None, None, 95, StorageOptions(),
                      RowDecoder(), layout="files", writers=writers)
        trees[writers] = {p.relative_to(out).as_posix(): p.read_bytes()
                          for p in sorted(out.rglob("*")) if p.is_file()}
    assert len(trees[1]) == 13 and trees[1] == trees[3]
