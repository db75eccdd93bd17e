"""Streaming with bounded buffers: compress gathers a row group as Arrow record batches (no
Python copy of it), restore reads a few rows at a time. Neither may change what is written or
read: row groups are still cut at about ROW_GROUP_BYTES of payload, rows come back in order,
and ``--where`` still skips row groups by their statistics. (The memory figures themselves are
in benchmarks/pipeline/results.md; RSS is too noisy for a unit test.)"""

from pathlib import Path

import pyarrow.parquet as pq
from conftest import read_tar, sample, write_shards

import pipeline.shard_encode as shard_encode
from models.registry import get_codec
from pipeline.archive_format import shard_url
from pipeline.restore import restore_shard
from pipeline.rows import RowDecoder, iter_rows
from pipeline.shard_encode import Batching, Guard, encode_shard
from pipeline.sources import Shard
from pipeline.storage import StorageOptions
from pipeline.where import parse_where

CAP = 6_000  # bytes of payload per row group in these tests


def _compress(tmp_path: Path, monkeypatch, n: int = 20) -> tuple[str, dict]:
    src = write_shards(tmp_path / "src", [[sample(f"k{i:03d}", i) for i in range(n)]])[0]
    # Small caps: several row groups, each spanning several chunks (codec batches) of 3 rows.
    monkeypatch.setattr(shard_encode, "ROW_GROUP_BYTES", CAP)
    archive = str(tmp_path / "archive")
    stats = encode_shard(Shard(str(src), "shard-000000", src.name), archive, get_codec("webp"),
                         guard=Guard(size=False), batching=Batching(samples=3))
    return archive, stats


def test_row_groups_are_cut_by_payload_and_rows_stay_in_order(tmp_path, monkeypatch):
    archive, stats = _compress(tmp_path, monkeypatch)
    meta = pq.ParquetFile(shard_url(archive, "shard-000000")).metadata
    assert stats["samples"] == meta.num_rows == 20 and meta.num_row_groups > 2
    table = pq.read_table(shard_url(archive, "shard-000000"))
    assert table.column("index").to_pylist() == list(range(20))
    assert table.column("key").to_pylist() == [f"k{i:03d}" for i in range(20)]
    # a row group is cut at the first chunk (3 rows) boundary where the payload reaches the cap
    def payload(start: int, rows: int) -> int:
        part = table.slice(start, rows)
        return sum(part.column("bytes").to_pylist()) + sum(
            len(m["data"]) for ms in part.column("members").to_pylist() for m in ms)

    start = 0
    for g in range(meta.num_row_groups - 1):
        rows = meta.row_group(g).num_rows
        assert rows % 3 == 0
        assert payload(start, rows) >= CAP > payload(start, rows - 3)
        start += rows


def test_streamed_rows_are_the_rows_written(tmp_path, monkeypatch):
    """iter_rows reads a few rows at a time; it must yield exactly what a whole-file read does,
    and skip the row groups a filter rules out."""
    archive, _ = _compress(tmp_path, monkeypatch)
    whole = pq.read_table(shard_url(archive, "shard-000000")).to_pylist()
    assert list(iter_rows(archive, "shard-000000")) == whole
    where = parse_where("index >= 15")
    skipped: list[int] = []
    streamed = list(iter_rows(archive, "shard-000000", None, where, skipped))
    assert streamed == [r for r in whole if r["index"] >= 15]
    assert [r["index"] for r in streamed] == [15, 16, 17, 18, 19]
    assert skipped  # row groups ruled out were not read


def test_restore_of_a_many_row_group_shard_is_whole(tmp_path, monkeypatch):
    archive, _ = _compress(tmp_path, monkeypatch)
    out = tmp_path / "out" / "shard-000000.tar"
    result = restore_shard(archive, "shard-000000", str(out), None, None, 95, StorageOptions(),
                           RowDecoder())
    assert result["samples"] == 20
    restored = read_tar(out)
    assert list(restored) == [f"k{i:03d}" for i in range(20)]
    assert all(set(members) == {"png", "json", "txt"} for members in restored.values())


def test_an_empty_shard_still_gets_one_empty_row_group(tmp_path):
    src = write_shards(tmp_path / "src", [[]])[0]
    archive = str(tmp_path / "archive")
    stats = encode_shard(Shard(str(src), "shard-000000", src.name), archive, get_codec("webp"))
    meta = pq.ParquetFile(shard_url(archive, "shard-000000")).metadata
    assert stats["samples"] == meta.num_rows == 0 and meta.num_row_groups == 1
    assert list(iter_rows(archive, "shard-000000")) == []
