"""Sort a stream of Arrow tables larger than memory: sorted runs spilled to local disk, merged.

Why: ``_index.parquet`` is sorted by key, and the driver built it by holding every row of the
archive at once (about 150 bytes a row at its peak: 1.5 GB for 10 M images, and an archive of
100 M would not fit). Here at most ``max_rows`` rows are sorted in memory; beyond that each
full buffer is sorted and written to a local temp file (a "run"), and the runs are merged,
batch by batch, so the rows held are about ``max_rows`` whatever the total. An input that fits
is sorted in memory, with no temp file: the same result as before.

The merge is vectorized, not row by row: each run contributes its current batch; the smallest
of the batches' last rows is a bound below which every run's rows are already in memory (runs
are sorted), so all rows up to it are taken from every batch, sorted together and emitted.
Each round empties at least the batch that set the bound.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# rows per row group in a spilled run: what one run's reader holds beyond its current batch
_RUN_ROW_GROUP = 4096


def sorted_tables(tables: Iterable[pa.Table], keys: list[str], max_rows: int,
                  schema: pa.Schema) -> Iterator[pa.Table]:
    """The rows of ``tables``, sorted ascending by the columns ``keys`` (byte order for
    strings; ties in input order within a run), as a stream of tables.

    Rows held in memory: about ``max_rows``, plus one table of the input. Runs are spilled
    to a temporary directory (``TMPDIR``), removed when the stream ends, however it ends."""
    order = [(k, "ascending") for k in keys]
    buffer: list[pa.Table] = []
    held = 0
    with tempfile.TemporaryDirectory(prefix="latentarc-sort-") as tmp:
        runs: list[str] = []
        for table in tables:
            buffer.append(table)
            held += table.num_rows
            if held >= max_rows:
                runs.append(_spill(_concat(buffer, schema).sort_by(order), tmp, len(runs)))
                buffer, held = [], 0
        if not runs:
            if held:
                yield _concat(buffer, schema).sort_by(order)
            return
        if held:
            runs.append(_spill(_concat(buffer, schema).sort_by(order), tmp, len(runs)))
        buffer = []
        # the merge holds one batch per run, and up to one batch per run taken in a round
        yield from _merge(runs, keys, order, max(1024, max_rows // (2 * len(runs))))


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _spill(table: pa.Table, directory: str, n: int) -> str:
    path = os.path.join(directory, f"run-{n:05d}.parquet")
    # fast to write and read back: these live only for the merge
    pq.write_table(table, path, row_group_size=_RUN_ROW_GROUP, compression="lz4",
                   write_statistics=False)
    return path


def _merge(runs: list[str], keys: list[str], order: list[tuple[str, str]],
           batch_rows: int) -> Iterator[pa.Table]:
    readers = [_read_run(path, batch_rows) for path in runs]

    def refill(i: int) -> pa.Table | None:
        return next(readers[i], None)

    heads = [refill(i) for i in range(len(runs))]
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
    parquet = pq.ParquetFile(path)
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
