"""Random access to an archive: ``Archive.open(url).get(key)``.

``_index.parquet`` maps every key to its shard file and row group, sorted by key, in row groups
of ``INDEX_ROW_GROUP`` rows, so a lookup reads the index's footer (row-group key ranges from the
column statistics), one index row group, then the footer and one row group of one shard file.
An ``Archive`` keeps the footers it read (``FOOTERS_KEPT``), so its next get of a file that has
not changed since reads only the row groups. Every returned image is checked (CRC, framing,
content hash) like a restore.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models.registry import codec_decoders
from pipeline.archive_format import (
    INDEX,
    STATUS_OK,
    Footers,
    FormatError,
    check_against_manifest,
    open_shard_file,
    read_manifest,
    reading,
    shard_url,
)
from pipeline.external_sort import exact_batches, sorted_tables
from pipeline.images import Unsupported, prepare
from pipeline.ordered_map import ordered_map
from pipeline.rows import RowDecoder, check_decoder_for
from pipeline.storage import (
    REQUEST_THREADS,
    StorageOptions,
    join,
    open_random_access,
    write_atomic,
)

INDEX_ROW_GROUP = 16384
# Index rows the driver sorts in memory at once (about 150 bytes each at the peak, so about
# 160 MB); an archive with more is sorted in runs spilled to local disk (write_index)
INDEX_SORT_ROWS = 1 << 20
REBUILD_INDEX = "rerun the compress command to rebuild it"
# A passthrough image is decoded for get() whatever its size (the caller asked for this one
# image); Pillow's decompression-bomb limit still applies.
PASSTHROUGH_MAX_PIXELS = 1 << 62
# Parquet footers an Archive keeps for its next gets: the index's and recent shard files'
FOOTERS_KEPT = 64
INDEX_SCHEMA = pa.schema([("key", pa.string()), ("shard", pa.string()), ("row_group", pa.int32())])


class ArchiveKeyError(KeyError):
    """A key is missing, or repeats across shards and needs a shard to be named."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def passthrough_pixels(row: dict[str, Any]) -> np.ndarray | None:
    """A passthrough row's original image as uint8 RGB pixels (``Unsupported`` where it is
    not 8-bit RGB or grey: alpha, 16-bit, animated, undecodable), or None without an image
    member. Whatever its size: the caller asked for this image; Pillow's bomb limit holds."""
    for member in row["members"]:
        if member["name"] == row["image_name"]:
            return prepare(member["data"], max_pixels=PASSTHROUGH_MAX_PIXELS)[0]
    return None


def writable(image: np.ndarray) -> np.ndarray:
    """The image as an array the caller may write to: Pillow's decodes (webp, passthrough) are
    read-only views, the learned codecs' are not, and torch warns on read-only arrays."""
    return image if image.flags.writeable else image.copy()


def index_digest(entries: Iterable[tuple[str, int]]) -> str:
    """An order-independent digest of (key, row group) pairs: one shard's entries in
    ``_index.parquet``, or the same pairs read from the shard file, which ``verify`` compares."""
    total = 0
    for key, row_group in entries:
        total = _digest_add(total, key, row_group)
    return f"{total:032x}"


def _digest_add(total: int, key: str, row_group: int) -> int:
    h = hashlib.blake2b(f"{row_group}\0{key}".encode(), digest_size=16).digest()
    return (total + int.from_bytes(h, "big")) % (1 << 128)


def _open_index(archive: str, storage: StorageOptions | None):
    """The open ``_index.parquet`` (FormatError naming the fix if there is none)."""
    try:
        return open_random_access(join(archive, INDEX), storage)
    except FileNotFoundError:
        raise FormatError(f"{archive} has no {INDEX}; {REBUILD_INDEX}") from None


def shard_index_entries(parquet: pq.ParquetFile) -> Iterator[tuple[str, int]]:
    """(key, row group) of every row of an open shard file, from its key column alone."""
    for rg in range(parquet.num_row_groups):
        for key in parquet.read_row_group(rg, columns=["key"]).column("key").to_pylist():
            yield key, rg


def index_digests(archive: str, storage: StorageOptions | None = None) -> dict[str, str]:
    """``index_digest`` of each shard's entries in ``_index.parquet`` (FormatError if none)."""
    totals: dict[str, int] = {}  # a running digest per shard: the index is never held whole
    with _open_index(archive, storage) as f, reading(join(archive, INDEX), REBUILD_INDEX):
        index = pq.ParquetFile(f, page_checksum_verification=True)
        for batch in index.iter_batches(batch_size=INDEX_ROW_GROUP,
                                        columns=["key", "shard", "row_group"], use_threads=False):
            for key, shard, rg in zip(*(batch.column(c).to_pylist()
                                        for c in ("key", "shard", "row_group")), strict=True):
                totals[shard] = _digest_add(totals.get(shard, 0), key, rg)
    return {shard: f"{total:032x}" for shard, total in totals.items()}


def shards_holding(archive: str, keys: Iterable[str],
                   storage: StorageOptions | None = None) -> dict[str, set[str]]:
    """The shards that hold each of ``keys`` that the archive has, from ``_index.parquet``.

    The index is sorted by key, so only its row groups whose key range holds a wanted key are
    read: a restore of a few keys from a large archive reads the footer, a few index row groups
    and then only the shards that hold them. FormatError if the archive has no index."""
    wanted = sorted(set(keys))
    found: dict[str, set[str]] = {}
    with _open_index(archive, storage) as f:
        index = pq.ParquetFile(f, page_checksum_verification=True)
        for rg in range(index.num_row_groups):
            stats = index.metadata.row_group(rg).column(0).statistics
            here = wanted  # the wanted keys in this row group's key range
            if stats is not None and stats.has_min_max:
                here = wanted[bisect.bisect_left(wanted, stats.min):
                              bisect.bisect_right(wanted, stats.max)]
                if not here:
                    continue
            table = index.read_row_group(rg, columns=["key", "shard"])
            table = table.filter(pc.is_in(table.column("key"), value_set=pa.array(here)))
            for key, shard in zip(table.column("key").to_pylist(), table.column("shard").to_pylist(),
                                  strict=True):
                found.setdefault(key, set()).add(shard)
    return found


def write_index(archive: str, shards: list[str], storage: StorageOptions | None = None,
                sort_rows: int | None = None) -> int:
    """Build ``_index.parquet`` from the key column of every shard file; returns its row count.

    The driver holds about ``sort_rows`` index rows (default ``INDEX_SORT_ROWS``) whatever
    the archive's size: more are sorted in runs on local disk (``TMPDIR``; about 20 bytes a
    row for 24-character keys, benchmarks/pipeline/index-sort) and merged
    (``pipeline.external_sort``). Row groups are ``INDEX_ROW_GROUP`` rows either way."""
    def entries(shard: str) -> pa.Table:
        f, parquet = open_shard_file(archive, shard, storage)
        with f:
            out = []
            for rg in range(parquet.num_row_groups):
                keys = parquet.read_row_group(rg, columns=["key"]).column("key")
                out.append(pa.table({
                    "key": keys,
                    "shard": pa.repeat(pa.scalar(shard, pa.string()), len(keys)),
                    "row_group": pa.repeat(pa.scalar(rg, pa.int32()), len(keys)),
                }, schema=INDEX_SCHEMA))
            return pa.concat_tables(out) if out else INDEX_SCHEMA.empty_table()

    # footers and key columns only, several files at once (on an object store each is a round
    # trip), in order, a bounded number in flight
    tables = ordered_map(entries, shards, workers=REQUEST_THREADS)
    rows = sorted_tables(tables, ["key", "shard", "row_group"], sort_rows or INDEX_SORT_ROWS,
                         INDEX_SCHEMA)
    written = 0

    def write(out) -> None:
        nonlocal written
        with contextlib.closing(rows), pq.ParquetWriter(
                out, INDEX_SCHEMA, compression="zstd", write_statistics=True,
                write_page_checksum=True) as writer:
            for group in exact_batches(rows, INDEX_ROW_GROUP):
                # one chunk, as the in-memory sort gives: the writer's dictionary fallback
                # (keys past ~1 MiB a row group) is decided per chunk, so chunks change bytes
                writer.write_table(group.combine_chunks(), row_group_size=INDEX_ROW_GROUP)
                written += group.num_rows
            if not written:  # as pyarrow writes an empty table: one row group of no rows
                writer.write_table(INDEX_SCHEMA.empty_table())

    write_atomic(join(archive, INDEX), write, storage)
    return written


def _key_ranges(meta: pq.FileMetaData) -> tuple[list[str], list[str]] | None:
    """The index's key range per row group, (mins, maxs), from the column statistics; None
    where a row group has none, or where the ranges are out of order (not an index that
    write_index wrote): then every row group is a candidate."""
    mins, maxs = [], []
    for rg in range(meta.num_row_groups):
        stats = meta.row_group(rg).column(0).statistics
        if stats is None or not stats.has_min_max:
            return None
        mins.append(stats.min)
        maxs.append(stats.max)
    ordered = all(lo <= hi for lo, hi in zip(mins, maxs, strict=True)) and all(
        a <= b for a, b in zip(mins, mins[1:], strict=False)) and all(
        a <= b for a, b in zip(maxs, maxs[1:], strict=False))
    return (mins, maxs) if ordered else None


def _groups_holding(ranges: tuple[list[str], list[str]] | None, key: str,
                    row_groups: int) -> Iterable[int]:
    """The index row groups whose key range holds ``key``: a bisection over the kept ranges,
    not a look at each row group's statistics (6 ms a get at 10 M rows, 611 row groups)."""
    if ranges is None:
        return range(row_groups)
    mins, maxs = ranges
    start = bisect.bisect_left(maxs, key)  # the first row group whose max is >= key
    end = bisect.bisect_right(mins, key, lo=start)  # past the last whose min is <= key
    return range(start, end)


class Archive:
    """A finished archive, opened for lookups."""

    def __init__(self, url: str, manifest: dict[str, Any], storage: StorageOptions) -> None:
        self.url = url
        self.manifest = manifest
        self.storage = storage
        self._decoders: dict[str, RowDecoder] = {}
        # samples of each shard, from the manifest: every get checks its shard file against it
        self._samples = {e["shard"]: e["samples"] for e in manifest["shards"]}
        # the index's footer and recent shard files': a get of an unchanged file reads none
        self._footers = Footers(FOOTERS_KEPT)

    @classmethod
    def open(cls, url: str, storage: StorageOptions | None = None) -> Archive:
        storage = storage or StorageOptions()
        url = url.rstrip("/")
        return cls(url, read_manifest(url, storage), storage)

    def locate(self, key: str, shard: str | None = None) -> tuple[str, list[int]]:
        """(shard, its row groups holding ``key``); a key in several shards needs ``shard``.

        Usually one row group; more than one only where the key repeats within the shard."""
        for name, value in (("key", key), ("shard", shard)):
            if not isinstance(value, str) and (name == "key" or value is not None):
                raise TypeError(f"get: the {name} must be a str, not {type(value).__name__}")
        url = join(self.url, INDEX)
        with _open_index(self.url, self.storage) as f, reading(url, REBUILD_INDEX):
            index, derived = self._footers.open(url, f)
            if "key_ranges" not in derived:
                derived["key_ranges"] = _key_ranges(index.metadata)
            hits: list[tuple[str, int]] = []
            for rg in _groups_holding(derived["key_ranges"], key, index.num_row_groups):
                table = index.read_row_group(rg)
                mask = pc.equal(table.column("key"), key)
                for row in table.filter(mask).to_pylist():
                    hits.append((row["shard"], row["row_group"]))
        elsewhere = sorted({s for s, _ in hits})
        if shard is not None:
            hits = [h for h in hits if h[0] == shard]
        if not hits:
            if shard is not None and shard not in self._samples:
                raise ArchiveKeyError(f"the archive has no shard {shard!r} (looking up key {key!r})")
            if shard is None:
                raise ArchiveKeyError(f"key {key!r} is not in the archive")
            there = f"it is in {', '.join(elsewhere)}" if elsewhere else "nor in any other shard"
            raise ArchiveKeyError(f"key {key!r} is not in shard {shard} ({there})")
        shards = sorted({s for s, _ in hits})
        if len(shards) > 1:
            raise ArchiveKeyError(f"key {key!r} is in {len(shards)} shards ({', '.join(shards)}); "
                            "call get(shard, key)")
        return shards[0], sorted({rg for _, rg in hits})

    def row(self, key: str, shard: str | None = None, index: int | None = None,
            members: bool = True) -> dict[str, Any]:
        """The archive row of (shard, key), read from one row group of one shard file (more
        than one only where the key repeats within the shard).

        A key that repeats within its shard needs ``index``, the sample's position in the
        source shard (the rows' ``index`` column); without it the error lists the candidates.
        ``members=False`` leaves a coded row's kept members out (its ``members`` is None) and
        does not read their column for it: the image decodes without them, and they may be
        most of the row group's bytes. A passthrough row's are read (its image is one)."""
        shard, groups = self.locate(key, shard)
        with reading(f"shard {shard} ({shard_url(self.url, shard)})"):
            f, parquet = open_shard_file(self.url, shard, self.storage, self._footers)
            with f:
                # a file copied or renamed from another shard that has the key too would give
                # that shard's image as this one's
                check_against_manifest(parquet, shard, self._samples.get(shard, -1),
                                       f"shard {shard}")
                columns = None if members else [
                    c for c in parquet.schema_arrow.names if c != "members"]
                rows = []
                for rg in groups:
                    table = parquet.read_row_group(rg, columns=columns)
                    mask = pc.equal(table.column("key"), key)
                    found = table.filter(mask).to_pylist()
                    if not members:
                        kept = ([None] * len(found) if all(r["status"] == STATUS_OK for r in found)
                                else parquet.read_row_group(rg, columns=["members"]).filter(mask)
                                .column("members").to_pylist())
                        for r, m in zip(found, kept, strict=True):
                            r["members"] = None if r["status"] == STATUS_OK else m
                    rows += found
        if not rows:
            raise FormatError(f"{INDEX} places key {key!r} in row group(s) {groups} of shard "
                              f"{shard}, but it is not there: the index is stale or damaged "
                              "(`latentarc verify` checks it); rerun the compress command to "
                              "rebuild it")
        if index is not None:
            rows = [r for r in rows if r["index"] == index]
            if not rows:
                raise ArchiveKeyError(f"key {key!r} has no sample with index {index} in shard {shard}")
        if len(rows) > 1:
            indexes = ", ".join(str(r["index"]) for r in rows)
            raise ArchiveKeyError(f"key {key!r} appears {len(rows)} times in shard {shard} "
                                  f"(sample indexes {indexes}); call get(shard, key, index=N)")
        return rows[0]

    def decoders(self) -> tuple[str, ...]:
        """The decoders this archive's codec has ("faithful", and e.g. "realistic")."""
        return codec_decoders(self.manifest["codec"])

    def _row_decoder(self, decoder: str) -> RowDecoder:
        if decoder not in self._decoders:
            if decoder != "faithful":
                check_decoder_for(self.manifest["codec"], decoder)
            self._decoders[decoder] = RowDecoder(decoder)
        return self._decoders[decoder]

    def get(self, *args: str, decoder: str = "faithful", index: int | None = None) -> np.ndarray:
        """``get(key)`` or ``get(shard, key)``: the decoded image, uint8 HxWx3 (writable), checked.

        ``decoder="realistic"`` decodes the same bitstream with the codec's realistic synthesis
        (``CodecError`` naming the codec's decoders if it has none). ``index`` picks one sample
        of a key that repeats within a shard. A passthrough sample whose image is not 8-bit
        RGB or grey (alpha, 16-bit, animated, undecodable) raises ``ArchiveKeyError``: an RGB
        array would not be that image; ``row(...)["members"]`` holds its original bytes."""
        if len(args) == 1:
            shard, key = None, args[0]
        elif len(args) == 2:
            shard, key = args
        else:
            raise TypeError("get(key) or get(shard, key)")
        rows = self._row_decoder(decoder)  # refuse an unknown decoder before any read
        row = self.row(key, shard, index, members=False)  # a passthrough row's image is a member
        decoded = rows.check(row)
        if row["status"] == STATUS_OK:
            return writable(decoded.image)
        where = f"sample {key!r} in shard {row['shard']} (index {row['index']})"
        try:
            image = passthrough_pixels(row)
        except Unsupported as exc:
            why = "" if str(exc) == row["reason"] else f" ({exc})"
            raise ArchiveKeyError(
                f"{where} is stored as it was ({row['reason']}), and get cannot return "
                f"it as RGB pixels{why}; row(...)['members'] has its original bytes"
            ) from None
        if image is None:
            raise ArchiveKeyError(f"{where} has no image ({row['reason']})")
        return writable(image)
