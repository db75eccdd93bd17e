"""Sort a stream of Arrow tables larger than memory: sorted runs spilled to local disk, merged.

Why: ``_index.parquet`` is sorted by key, and the driver built it by holding every row of the
archive at once (about 150 bytes a row at its peak: 1.5 GB for 10 M images, and an archive of
100 M would not fit). Here at most ``max_rows`` rows are sorted in memory; beyond that each
full buffer is sorted and written to a local temp file (a "run"), and the runs are merged,
batch by batch, so the rows held are about ``max_rows`` whatever the total. An input that fits
is sorted in memory, with no run written. More than ``MAX_OPEN_RUNS`` runs are merged in groups
first (each group into one longer run): one open file per run being merged, and one batch
each, so neither the file limit nor the memory grows with the total.

The merge is vectorized, not row by row: each run contributes its current batch; the smallest
of the batches' last rows is a bound below which every run's rows are already in memory (runs
are sorted), so all rows up to it are taken from every batch, sorted together and emitted.
Each round empties at least the batch that set the bound.

The spill directory is ``latentarc-sort-<pid>-*`` in ``TMPDIR``, locked (``flock``) while in
use; one left by a killed process is removed by the next sort on that machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.storage import fcntl, pid_exists

# rows per row group in a spilled run: what one run's reader holds beyond its current batch
_RUN_ROW_GROUP = 4096
# runs merged at once (open files, and batches held)
MAX_OPEN_RUNS = 64
_DIR = re.compile(r"latentarc-sort-(\d+)-.+")
_LOCK = ".lock"


def sorted_tables(tables: Iterable[pa.Table], keys: list[str], max_rows: int,
                  schema: pa.Schema) -> Iterator[pa.Table]:
    """The rows of ``tables``, sorted ascending by the columns ``keys`` (strings in byte
    order, or integers below 2**63; no nulls: ValueError), as a stream of tables. Rows equal
    in every key column come out in no particular order (the index sorts on all its columns).

    Rows held in memory: about ``max_rows``, plus one table of the input. Runs are spilled
    to a temporary directory, removed when the stream ends, however it ends (see the module's
    docstring for a killed process)."""
    order = [(k, "ascending") for k in keys]
    buffer: list[pa.Table] = []
    held = 0
    with _spill_dir() as tmp:
        runs: list[str] = []
        for table in tables:
            for key in keys:
                if table.column(key).null_count:
                    raise ValueError(f"sorted_tables: column {key!r} has nulls")
            buffer.append(table)
            held += table.num_rows
            if held >= max_rows:
                runs.append(_spill([_concat(buffer, schema).sort_by(order)], tmp, len(runs)))
                buffer, held = [], 0
        if not runs:
            if held:
                yield _concat(buffer, schema).sort_by(order)
            return
        if held:
            runs.append(_spill([_concat(buffer, schema).sort_by(order)], tmp, len(runs)))
        buffer = []
        made = len(runs)
        while len(runs) > MAX_OPEN_RUNS:  # merge groups of runs into longer ones first
            merged = []
            for start in range(0, len(runs), MAX_OPEN_RUNS):
                group = runs[start:start + MAX_OPEN_RUNS]
                merged.append(_spill(_merge(group, keys, order, _batch(max_rows, len(group))),
                                     tmp, made))
                made += 1
                for path in group:
                    os.unlink(path)
            runs = merged
        yield from _merge(runs, keys, order, _batch(max_rows, len(runs)))


def _batch(max_rows: int, runs: int) -> int:
    """Rows read from each run at a time: the merge holds one batch per run, and up to one
    batch per run taken in a round."""
    return max(1024, max_rows // (2 * runs))


@contextlib.contextmanager
def _spill_dir() -> Iterator[str]:
    """A new spill directory, locked while in use; dead processes' ones are removed first."""
    parent = tempfile.gettempdir()
    _remove_dead_spills(parent)
    path = tempfile.mkdtemp(prefix=f"latentarc-sort-{os.getpid()}-", dir=parent)
    try:
        with open(os.path.join(path, _LOCK), "wb") as lock:
            if fcntl is not None:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # held until closed, or the process dies
            yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _remove_dead_spills(parent: str) -> None:
    """Remove spill directories whose process is gone (a SIGKILL, an out-of-memory kill):
    its PID (in the name) does not exist and nobody holds its lock (a process in another PID
    namespace sharing this directory would). Without a lock file yet: left alone."""
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    for entry in entries:
        match = _DIR.fullmatch(entry.name)
        if not match or int(match.group(1)) == os.getpid() or pid_exists(int(match.group(1))):
            continue
        try:
            fd = os.open(os.path.join(entry.path, _LOCK), os.O_RDONLY)
        except OSError:
            continue
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(entry.path, ignore_errors=True)
        except OSError:  # held: its owner is alive
            continue
        finally:
            os.close(fd)


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _spill(tables: Iterable[pa.Table], directory: str, n: int) -> str:
    """Write sorted ``tables`` as one run; returns its path."""
    path = os.path.join(directory, f"run-{n:06d}.parquet")
    writer = None
    try:
        for table in tables:
            if writer is None:  # fast to write and read back: runs live only for the merge
                writer = pq.ParquetWriter(path, table.schema, compression="lz4",
                                          write_statistics=False)
            writer.write_table(table, row_group_size=_RUN_ROW_GROUP)
    finally:
        if writer is not None:
            writer.close()
    return path


def _merge(runs: list[str], keys: list[str], order: list[tuple[str, str]],
           batch_rows: int) -> Iterator[pa.Table]:
    readers = [_read_run(path, batch_rows) for path in runs]
    try:
        yield from _merge_readers(readers, keys, order)
    finally:  # the runs' files closed, whatever ended the merge, before they are removed
        for reader in readers:
            reader.close()


def _merge_readers(readers: list[Iterator[pa.Table]], keys: list[str],
                   order: list[tuple[str, str]]) -> Iterator[pa.Table]:
    def refill(i: int) -> pa.Table | None:
        return next(readers[i], None)

    heads = [refill(i) for i in range(len(readers))]
    while True:
        live = [i for i, head in enumerate(heads) if head is not None]
        if not live:
            return
        bound = min(tuple(heads[i].column(k)[-1].as_py() for k in keys) for i in live)
        taken = []
        for i in live:
            head = heads[i]
            n = _rows_up_to(head, keys, bound)
            if n:
                taken.append(head.slice(0, n))
            heads[i] = head.slice(n) if n < head.num_rows else refill(i)
        yield pa.concat_tables(taken).sort_by(order)


def _read_run(path: str, batch_rows: int) -> Iterator[pa.Table]:
    """A spilled run in tables of about ``batch_rows`` rows, read a row group at a time:
    pyarrow's ``iter_batches`` held about 17 MB per open run whatever the batch size, which
    made the merge's memory grow with the number of runs."""
    with pq.ParquetFile(path) as parquet:
        pending: list[pa.Table] = []
        held = 0
        for rg in range(parquet.num_row_groups):
            pending.append(parquet.read_row_group(rg, use_threads=False))
            held += pending[-1].num_rows
            if held >= batch_rows:
                yield pa.concat_tables(pending)
                pending, held = [], 0
        if held:
            yield pa.concat_tables(pending)


def _rows_up_to(table: pa.Table, keys: list[str], bound: tuple) -> int:
    """How many of a sorted table's first rows are <= ``bound`` (a prefix, since it is sorted),
    comparing the ``keys`` columns lexicographically."""
    def row(i: int) -> tuple:
        return tuple(table.column(k)[i].as_py() for k in keys)

    if row(-1) <= bound:  # all of it, or none: most batches, without a pass over the rows
        return table.num_rows
    if row(0) > bound:
        return 0
    at_most = None  # rows <= bound on keys[j:], built from the last column back
    for key, value in reversed(list(zip(keys, bound, strict=True))):
        column = table.column(key)
        if at_most is None:
            at_most = pc.less_equal(column, value)
        else:
            at_most = pc.or_(pc.less(column, value), pc.and_(pc.equal(column, value), at_most))
    return int(pc.sum(at_most).as_py() or 0)


def exact_batches(tables: Iterable[pa.Table], rows: int) -> Iterator[pa.Table]:
    """The same rows cut into tables of exactly ``rows`` rows (the last may be shorter): a
    Parquet writer starts a row group at every ``write_table``, so row groups of a fixed size
    (the index's statistics are per row group) need the stream re-cut."""
    pending: list[pa.Table] = []
    held = 0
    for table in tables:
        pending.append(table)
        held += table.num_rows
        if held < rows:
            continue
        whole = pa.concat_tables(pending)
        start = 0
        while whole.num_rows - start >= rows:
            yield whole.slice(start, rows)
            start += rows
        pending = [whole.slice(start)] if start < whole.num_rows else []
        held = whole.num_rows - start
    if held:
        yield pa.concat_tables(pending)
