"""The index at scale: its sort in bounded memory (runs spilled to disk and merged give the
in-memory order, byte for byte), and lookups that bisect its row groups."""

import hashlib
import os
import random
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.archive import INDEX_ROW_GROUP, INDEX_SCHEMA, Archive, write_index
from pipeline.external_sort import exact_batches, sorted_tables

KEYS = ["key", "shard", "row_group"]
ORDER = [(k, "ascending") for k in KEYS]


def _tables(seed: int, count: int, rows: int) -> list[pa.Table]:
    """Shards' index entries with many ties: keys from a small set, repeated across shards and
    within one (two row groups of a shard holding the same key), names out of byte order."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        n = rng.randrange(rows + 1)
        out.append(pa.table({
            "key": [rng.choice(["a", "b", "B", "é", "a0", "a\x00", "zz", "k" * 30]) for _ in range(n)],
            "shard": [f"s{rng.randrange(4)}"] * n,
            "row_group": pa.array([rng.randrange(3) for _ in range(n)], pa.int32()),
        }, schema=INDEX_SCHEMA))
    return out


@pytest.mark.parametrize("max_rows", [1, 2, 7, 50, 10_000])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spilled_runs_merge_to_the_in_memory_sort(seed, max_rows, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    tables = _tables(seed, 30, 40)
    expected = pa.concat_tables(tables).sort_by(ORDER)
    out = list(sorted_tables(iter(tables), KEYS, max_rows, INDEX_SCHEMA))
    got = pa.concat_tables(out) if out else INDEX_SCHEMA.empty_table()
    assert got.equals(expected)
    assert os.listdir(tmp_path) == []  # the runs are gone with the stream


def test_a_stream_closed_early_removes_its_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stream = sorted_tables(iter(_tables(3, 20, 40)), KEYS, 10, INDEX_SCHEMA)
    next(stream)
    assert len(os.listdir(tmp_path)) == 1 and os.listdir(tmp_path / os.listdir(tmp_path)[0])
    stream.close()
    assert os.listdir(tmp_path) == []


def test_more_runs_than_may_be_open_are_merged_in_groups(tmp_path, monkeypatch):
    """One open file per run being merged: past MAX_OPEN_RUNS (here 3) runs are merged in
    groups first, so a sort of any size stays under the open-file limit."""
    import pipeline.external_sort as external_sort

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(external_sort, "MAX_OPEN_RUNS", 3)
    open_now, most = 0, 0
    read_run = external_sort._read_run

    def counted(path, batch_rows):
        nonlocal open_now, most
        open_now += 1
        most = max(most, open_now)
        try:
            yield from read_run(path, batch_rows)
        finally:
            open_now -= 1

    monkeypatch.setattr(external_sort, "_read_run", counted)
    tables = _tables(5, 40, 30)
    expected = pa.concat_tables(tables).sort_by(ORDER)
    got = pa.concat_tables(list(sorted_tables(iter(tables), KEYS, 20, INDEX_SCHEMA)))
    assert got.equals(expected)
    assert most == 3 and open_now == 0
    assert os.listdir(tmp_path) == []


def test_nulls_in_a_key_column_are_refused():
    table = pa.table({"key": ["a", None], "shard": ["s", "s"],
                      "row_group": pa.array([0, 0], pa.int32())}, schema=INDEX_SCHEMA)
    with pytest.raises(ValueError, match="column 'key' has nulls"):
        list(sorted_tables(iter([table]), KEYS, 1, INDEX_SCHEMA))


def test_a_killed_sorts_spill_is_removed_by_the_next_sort(tmp_path):
    """Runs of a process killed mid-sort (SIGKILL, out of memory) were left in TMPDIR for
    good; the next sort on the machine removes them, not those of a live process."""
    import subprocess
    import sys

    killed = subprocess.run([sys.executable, "-c", f"""
import os, signal, tempfile
tempfile.tempdir = {str(tmp_path)!r}
import pyarrow as pa
from pipeline.external_sort import sorted_tables
schema = pa.schema([("k", pa.int64())])
stream = sorted_tables(iter([pa.table({{"k": list(range(100))}}, schema=schema)] * 5), ["k"], 100,
                       schema)
next(stream)
os.kill(os.getpid(), signal.SIGKILL)
"""], cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert killed.returncode == -9
    left = os.listdir(tmp_path)
    assert len(left) == 1 and left[0].startswith("latentarc-sort-")
    assert len(os.listdir(tmp_path / left[0])) == 6  # the lock and 5 runs
    live = tmp_path / f"latentarc-sort-{os.getpid()}-mine"  # this process's: alive
    live.mkdir()
    (live / ".lock").touch()
    tempfile_dir = tempfile.tempdir
    try:
        tempfile.tempdir = str(tmp_path)
        assert pa.concat_tables(list(sorted_tables(iter(_tables(0, 3, 5)), KEYS, 2, INDEX_SCHEMA)))
    finally:
        tempfile.tempdir = tempfile_dir
    assert os.listdir(tmp_path) == [live.name]


def test_exact_batches_recut_a_stream():
    tables = [pa.table({"x": pa.array(range(n), pa.int64())}) for n in (3, 0, 9, 1, 4)]
    cut = list(exact_batches(tables, 5))
    assert [t.num_rows for t in cut] == [5, 5, 5, 2]
    assert pa.concat_tables(cut).equals(pa.concat_tables(tables))
    assert list(exact_batches([], 5)) == []


def _key_only_archive(root, files: int, per_file: int, seed: int = 0, pad: int = 0) -> list[str]:
    """An archive directory whose shard files hold only the key column (all write_index reads),
    keys in random order across files, some repeated across files (``pad`` characters more)."""
    rng = random.Random(seed)
    (root / "shards").mkdir(parents=True)
    names = []
    for i in range(files):
        keys = [f"k{rng.randrange(files * per_file):08d}{'x' * pad}" for _ in range(per_file)]
        pq.write_table(pa.table({"key": keys}), root / "shards" / f"p{i:03d}.parquet",
                       row_group_size=300)
        names.append(f"p{i:03d}")
    return names


@pytest.mark.parametrize("pad", [0, 100])
def test_write_index_spilled_is_byte_identical_with_capped_row_groups(pad, tmp_path, monkeypatch):
    """An index sorted in runs (here 8, plus ties) is the same file as one sorted in memory,
    and its row groups keep the INDEX_ROW_GROUP cap that get's one-row-group read relies on.
    Long keys (pad 100) pass the writer's dictionary limit within a row group, where the
    merge's chunks changed the bytes until each row group was written as one chunk."""
    names = _key_only_archive(tmp_path / "arc", 40, 1000, pad=pad)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    digests, tables = [], []
    for sort_rows in (None, 5000, 333):
        assert write_index(str(tmp_path / "arc"), names, sort_rows=sort_rows) == 40_000
        data = (tmp_path / "arc" / "_index.parquet").read_bytes()
        digests.append(hashlib.sha256(data).hexdigest())
        meta = pq.ParquetFile(tmp_path / "arc" / "_index.parquet").metadata
        assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [
            INDEX_ROW_GROUP, INDEX_ROW_GROUP, 40_000 - 2 * INDEX_ROW_GROUP]
        tables.append(pq.read_table(tmp_path / "arc" / "_index.parquet"))
    assert digests[1] == digests[0] and digests[2] == digests[0]
    assert tables[0].equals(tables[0].sort_by(ORDER))
    assert os.listdir(tmp_path / "tmp") == []


def test_write_index_of_no_rows_is_an_empty_index(tmp_path):
    (tmp_path / "arc" / "shards").mkdir(parents=True)
    pq.write_table(pa.table({"key": pa.array([], pa.string())}), tmp_path / "arc" / "shards" / "e.parquet")
    assert write_index(str(tmp_path / "arc"), ["e"]) == 0
    assert write_index(str(tmp_path / "arc"), []) == 0
    table = pq.read_table(tmp_path / "arc" / "_index.parquet")
    assert table.num_rows == 0 and table.schema.equals(INDEX_SCHEMA)


@pytest.mark.usefixtures("ray_local")
def test_a_spilled_index_serves_gets(tmp_path, monkeypatch):
    """The real thing end to end: an archive whose index was sorted in many runs finds every
    key (and names both shards of a repeated one)."""
    from conftest import sample, write_shards

    from pipeline.compress import compress
    from pipeline.shard_encode import Guard

    src = tmp_path / "src"
    write_shards(src, [[sample(f"k{i}{j}", i + j) for j in range(4)] for i in range(3)])
    write_shards(src, [[sample("k00", 9)]], prefix="extra")
    url = str(tmp_path / "arc")
    assert compress([str(src)], url, "webp", 80, progress=False, guard=Guard(size=False)).ok
    index = tmp_path / "arc" / "_index.parquet"
    whole = index.read_bytes()
    shards = [e["shard"] for e in Archive.open(url).manifest["shards"]]
    assert write_index(url, shards, sort_rows=2) == 13
    assert index.read_bytes() == whole
    arc = Archive.open(url)
    assert arc.get("k21").shape[2] == 3
    with pytest.raises(KeyError, match="k00' is in 2 shards"):
        arc.get("k00")


def test_locating_a_key_bisects_the_index_row_groups(tmp_path):
    """A get found its index row groups by looking at every row group's statistics (6 ms a
    get at 10 M rows); now by bisecting the kept key ranges. The same row groups, for keys at
    and between the boundaries, a key spanning three row groups, keys outside every range;
    and every row group where the ranges are out of order (not written by write_index)."""
    from pipeline.archive import _groups_holding, _key_ranges

    keys = sorted([f"k{i:03d}" for i in range(0, 200, 3)] + ["k100"] * 40)
    path = tmp_path / "index.parquet"
    pq.write_table(pa.table({"key": keys, "shard": ["s"] * len(keys),
                             "row_group": pa.array([0] * len(keys), pa.int32())},
                            schema=INDEX_SCHEMA), path, row_group_size=16)
    meta = pq.ParquetFile(path).metadata
    ranges = _key_ranges(meta)
    assert ranges is not None
    for probe in sorted(set(keys)) + ["a", "k0", "k001", "k1000", "k100a", "k2", "z"]:
        expected = [rg for rg in range(meta.num_row_groups)
                    if meta.row_group(rg).column(0).statistics.min <= probe
                    <= meta.row_group(rg).column(0).statistics.max]
        assert list(_groups_holding(ranges, probe, meta.num_row_groups)) == expected, probe
    assert len(list(_groups_holding(ranges, "k100", meta.num_row_groups))) == 3

    pq.write_table(pa.table({"key": ["b", "c", "a", "d"], "shard": ["s"] * 4,
                             "row_group": pa.array([0] * 4, pa.int32())}, schema=INDEX_SCHEMA),
                   path, row_group_size=2)
    meta = pq.ParquetFile(path).metadata
    assert _key_ranges(meta) is None
    assert list(_groups_holding(None, "a", meta.num_row_groups)) == [0, 1]
