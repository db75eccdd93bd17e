"""The prefetch thread of compress: reading and source decoding run ahead of the codec, within
bounds, and change nothing about what is written (order, rows, errors)."""

import threading
import time

import pyarrow.parquet as pq
import pytest
from conftest import sample, write_shards

import pipeline.shard_encode as shard_encode
from models.registry import get_codec
from pipeline.archive_format import shard_url
from pipeline.prefetch import prefetch, reader_threads
from pipeline.shard_encode import Batching, Guard, encode_shard
from pipeline.sources import Shard


def _counting(n: int, produced: list[int], fail_at: int | None = None):
    for i in range(n):
        if i == fail_at:
            raise KeyError(f"shard s: truncated at key k{i}")
        produced.append(i)
        yield i


def test_items_come_in_order_and_the_reader_stays_within_depth():
    produced: list[int] = []
    ahead = []
    out = []
    for item in prefetch(_counting(50, produced), depth=3):
        time.sleep(0.002)  # a slow consumer: the reader fills the buffer
        ahead.append(len(produced) - len(out))
        out.append(item)
    assert out == list(range(50))
    # in hand (1) + buffered (3) + the one the reader holds while it waits for room (1)
    assert max(ahead) <= 5 and max(ahead) >= 3


def test_weight_bound_lets_one_heavy_item_through():
    weights = [5, 5, 100, 5, 5, 5, 5]
    produced: list[int] = []
    held = []
    out = []
    for w in prefetch(_counting(len(weights), produced), depth=10,
                      weight=lambda i: weights[i], max_weight=12):
        time.sleep(0.01)
        # produced after the one in hand; all but the last are surely in the buffer (the
        # last may be the one the reader holds while it waits for room)
        held.append(produced[len(out) + 1:][:-1])
        out.append(w)
    assert out == list(range(len(weights)))  # the 100 passed although above the bound
    assert all(sum(weights[j] for j in b) <= 12 or b == [2] for b in held), held


def test_a_reader_error_arrives_in_order_with_its_type_and_message():
    produced: list[int] = []
    got = []
    with pytest.raises(KeyError, match="truncated at key k7"):
        for item in prefetch(_counting(20, produced, fail_at=7), depth=4):
            got.append(item)
    assert got == list(range(7))


def test_a_consumer_that_stops_early_stops_the_reader():
    produced: list[int] = []
    it = prefetch(_counting(10_000, produced), depth=2, name="test-reader")
    for item in it:
        if item == 5:
            assert any(t.name == "test-reader" for t in threading.enumerate())
            break
    it.close()
    assert not any(t.name == "test-reader" for t in threading.enumerate())
    assert len(produced) <= 5 + 1 + 2 + 1
    stopped_at = len(produced)
    time.sleep(0.05)
    assert len(produced) == stopped_at


def test_reader_threads_are_reused_across_calls():
    """One shard after another reuses one reader thread: a fresh thread per shard grew a
    worker's memory with the number of shards (torch's per-thread state, glibc arenas)."""
    list(prefetch(iter(range(3)), depth=2))  # at least one reader exists and is idle again
    before_threads, before_readers = threading.active_count(), reader_threads()
    for _ in range(20):
        assert list(prefetch(iter(range(50)), depth=4)) == list(range(50))
        early = prefetch(iter(range(50)), depth=4)
        assert next(early) == 0
        early.close()
    assert reader_threads() == before_readers
    assert threading.active_count() == before_threads


def test_depth_zero_reads_inline():
    produced: list[int] = []
    it = prefetch(_counting(5, produced), depth=0)
    assert next(it) == 0 and produced == [0]  # nothing read ahead


def _rows(tmp_path, name: str, prefetch_on: bool, check_thread: bool = True) -> list[dict]:
    src = tmp_path / "src" / "shard-000000.tar"
    archive = str(tmp_path / name)
    encode_shard(Shard(str(src), "shard-000000", src.name), archive, get_codec("webp"),
                 guard=Guard(size=False),
                 batching=Batching(prefetch=prefetch_on, check_thread=check_thread))
    return pq.read_table(shard_url(archive, "shard-000000")).to_pylist()


@pytest.fixture
def batches(monkeypatch) -> list[int]:
    """The size of every codec batch encode_shard makes, in order."""
    sizes: list[int] = []
    real = shard_encode._encode_stage

    def spy(chunk, *args, **kwargs):
        sizes.append(len(chunk))
        return real(chunk, *args, **kwargs)

    monkeypatch.setattr(shard_encode, "_encode_stage", spy)
    return sizes


def test_shard_rows_are_the_same_with_and_without_prefetch(tmp_path, monkeypatch, batches):
    write_shards(tmp_path / "src", [[sample(f"k{i:03d}", i) for i in range(19)]])
    # a pixel budget of two 64x96 images: batches of 2 rather than CHUNK_SAMPLES
    monkeypatch.setattr(shard_encode, "CHUNK_PIXELS", 2 * 64 * 96)
    with_thread = _rows(tmp_path, "a", True)
    assert batches == [1] + [2] * 9  # ramping up from 1, then held at the pixel bound
    without = _rows(tmp_path, "b", False)
    assert [r["key"] for r in with_thread] == [f"k{i:03d}" for i in range(19)]
    assert with_thread == without
    # the check thread (decode, PSNR, rows) changes when work happens, not what is written
    assert _rows(tmp_path, "c", True, check_thread=False) == with_thread
    assert _rows(tmp_path, "d", False, check_thread=False) == with_thread


def test_batch_bounds_are_options_with_defaults(tmp_path, batches):
    write_shards(tmp_path / "src", [[sample(f"k{i:03d}", i) for i in range(7)]])
    src = tmp_path / "src" / "shard-000000.tar"
    for prefetch_on, expected in ((False, [3, 3, 1]), (True, [1, 2, 3, 1])):
        # with the reader thread a shard's batches ramp up, so the codec starts after one sample
        batches.clear()
        encode_shard(Shard(str(src), "shard-000000", src.name), str(tmp_path / f"a{prefetch_on}"),
                     get_codec("webp"), guard=Guard(size=False),
                     batching=Batching(samples=3, prefetch=prefetch_on))
        assert batches == expected
    assert Batching().resolved() == (shard_encode.CHUNK_SAMPLES, shard_encode.CHUNK_PIXELS)
    # what the user set is kept; only the bounds left at 0 get the defaults
    assert Batching(samples=5, prefetch=False).resolved() == (5, shard_encode.CHUNK_PIXELS)
    # a codec that codes one image at a time asks for smaller batches; an option still wins
    webp = get_codec("webp")
    assert 0 < webp.batch_samples < shard_encode.CHUNK_SAMPLES
    assert Batching().resolved(webp) == (webp.batch_samples, shard_encode.CHUNK_PIXELS)
    assert Batching(samples=5).resolved(webp)[0] == 5
    assert Batching().resolved(get_codec("msh-n96-v2"))[0] == shard_encode.CHUNK_SAMPLES


def test_a_one_image_codec_is_fed_its_own_batch_size(tmp_path, batches):
    write_shards(tmp_path / "src", [[sample(f"k{i:03d}", i) for i in range(13)]])
    src = tmp_path / "src" / "shard-000000.tar"
    codec = get_codec("webp")
    encode_shard(Shard(str(src), "shard-000000", src.name), str(tmp_path / "a"), codec,
                 guard=Guard(size=False))
    assert max(batches) == codec.batch_samples and sum(batches) == 13


def _prefetch_in_child(conn) -> None:
    conn.send(list(prefetch(iter(range(5)), depth=2)))


def test_a_forked_child_starts_its_own_reader():
    """A DataLoader worker forked after the parent used a reader has no such thread; it must
    not hand its work to the inherited (dead) idle reader and wait forever."""
    import multiprocessing

    assert list(prefetch(iter(range(3)), depth=2)) == [0, 1, 2]  # an idle reader now exists
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_prefetch_in_child, args=(child,))
    proc.start()
    try:
        assert parent.poll(30), "the forked child's prefetch hung"
        assert parent.recv() == [0, 1, 2, 3, 4]
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
