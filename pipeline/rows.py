"""Read archive rows back and check them: the shared core of restore, verify and Archive.get.

Every decoded row is checked before it is used: CRC32C of the bitstream, the codec's own
framing checks, and the content hash of what decoding yields. A row that fails any check
raises ``RowError`` naming shard and key; nothing unchecked is ever returned as good.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import crc32c
import pyarrow as pa
import pyarrow.parquet as pq

from models.codec import Codec, CodecError, Decoded, parse_decoder
from models.registry import codec_decoders, get_codec
from pipeline.archive_format import (
    STATUS_OK,
    STATUS_PASSTHROUGH,
    check_against_manifest,
    shard_meta,
    shard_url,
)
from pipeline.storage import StorageOptions, open_random_access
from pipeline.where import Condition, row_group_may_match, row_matches


class RowError(ValueError):
    """A row is damaged or does not decode to what was written."""

    def __init__(self, shard: str, key: str | None = None, problem: str | None = None) -> None:
        # One argument: a whole message. PyTorch's DataLoader re-raises a worker's error as
        # type(exc)(message); with three required arguments that failed, and the error came
        # as a RuntimeError that `except RowError` did not catch.
        super().__init__(shard if key is None and problem is None
                         else f"shard {shard} key {key!r}: {problem}")
        self.shard, self.key, self.problem = shard, key, problem


def check_decoder_for(archive_codec: str, decoder: str) -> None:
    """Refuse (``CodecError``) a decoder the archive's codec lacks, naming the ones it has,
    before any row is read: silently restoring faithfully would not be what was asked."""
    decoders = codec_decoders(archive_codec)
    name, _ = parse_decoder(decoder)
    if name not in decoders:
        raise CodecError(f"the archive's codec {archive_codec} has no {name!r} decoder; its "
                         f"decoders: {', '.join(decoders)}")


# Rows are read a few at a time, so that a worker (restore, verify) holds neither a whole row
# group (up to ROW_GROUP_BYTES of payload, plus its decompressed pages and its Python copy) nor
# the shard: its memory does not grow with the row groups, let alone with the shard.
READ_BATCH_ROWS = 8
READ_BUFFER_BYTES = 1 << 20


def iter_rows(
    archive: str, shard: str, storage: StorageOptions | None = None,
    where: list[Condition] | None = None, skipped: list[int] | None = None,
    expected_rows: int | None = None,
    unreadable: Callable[[int, Exception, list[str] | None], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Stream a shard file's rows, ``READ_BATCH_ROWS`` at a time (metadata is checked first,
    page CRCs are verified on read; no pre-buffering and a bounded read buffer).
    ``expected_rows``: the manifest's count; the file must name this shard and hold that many
    (``check_against_manifest``).

    With ``where``, row groups whose statistics rule it out are not read (their numbers are
    appended to ``skipped``) and only matching rows are yielded.

    ``unreadable`` (restore --skip-damaged): a row group that cannot be read to its end (a
    damaged page) is passed to it, with the keys of its rows not yielded where its key column
    still reads (else None), and reading goes on with the next row group. Without it, the error
    ends the iteration.
    """
    url = shard_url(archive, shard)
    # The footer through a handle of its own: read through the streamed one, it brought in the
    # file's last blocks, which the block cache had dropped by the time the last row group
    # needed them (up to 2 blocks fetched twice per file).
    with open_random_access(url, storage) as f:
        metadata, size = pq.ParquetFile(f).metadata, getattr(f, "size", None)
    with open_random_access(url, storage, streamed=True) as f:
        if getattr(f, "size", None) != size:
            raise OSError(f"shard file {url} changed while it was opened; read it again")
        parquet = pq.ParquetFile(f, metadata=metadata, page_checksum_verification=True,
                                 pre_buffer=False, buffer_size=READ_BUFFER_BYTES)
        if expected_rows is None:
            shard_meta(parquet, f"shard file {shard}")
        else:
            check_against_manifest(parquet, shard, expected_rows, f"shard {shard}")
        for i in range(parquet.num_row_groups):
            if where and not row_group_may_match(where, parquet.metadata.row_group(i)):
                if skipped is not None:
                    skipped.append(i)
                continue
            done: set[int] = set()  # the rows of this group read (their index column)
            try:
                for batch in parquet.iter_batches(batch_size=READ_BATCH_ROWS, row_groups=[i],
                                                  use_threads=False):
                    for row in batch.to_pylist():
                        done.add(row["index"])
                        if not where or row_matches(where, row):
                            yield row
            except (OSError, pa.ArrowException) as exc:
                if unreadable is None:
                    raise
                unreadable(i, exc, _lost_keys(parquet, i, done, where))


def _lost_keys(parquet: pq.ParquetFile, row_group: int, done: set[int],
               where: list[Condition] | None) -> list[str] | None:
    """Keys of a damaged row group's rows that were not read (and match ``where``), from the
    small columns (their pages are usually intact); None when they cannot be read either."""
    columns = {"key", "index", *(c.column for c in where or [])} & set(parquet.schema_arrow.names)
    try:
        rows = parquet.read_row_group(row_group, columns=sorted(columns),
                                      use_threads=False).to_pylist()
    except (OSError, pa.ArrowException):
        return None
    return [r["key"] for r in rows if r["index"] not in done and (not where or row_matches(where, r))]


def shard_has_match(archive: str, shard: str, where: list[Condition],
                    storage: StorageOptions | None = None) -> bool:
    """Whether any row of a shard matches ``where``, read from the footer and the filter's
    own columns only (of the row groups the statistics do not rule out): no bitstream or
    member is read. restore asks this of the shards already at its destination, so that a
    ``--where`` restore refuses over only those it would write."""
    with open_random_access(shard_url(archive, shard), storage) as f:
        parquet = pq.ParquetFile(f, pre_buffer=False, buffer_size=READ_BUFFER_BYTES)
        columns = sorted({c.column for c in where})
        if not set(columns) <= set(parquet.schema_arrow.names):
            return False  # a column an older archive lacks (lpips) is null: it matches nothing
        groups = [i for i in range(parquet.num_row_groups)
                  if row_group_may_match(where, parquet.metadata.row_group(i))]
        if not groups:
            return False
        table = parquet.read_row_groups(groups, columns=columns, use_threads=False)
    return any(row_matches(where, row) for row in table.to_pylist())


class RowDecoder:
    """Decodes rows with codecs instantiated once per codec id.

    ``decoder`` picks the decoder of the codecs that have it ("realistic": a synthesis trained
    for appearance); rows of codecs without it (a jpeg-lossless fallback row in a learned
    archive) decode faithfully. The checks are the same either way: every decoder of a codec
    yields the same content (symbols), so the stored content hash still proves the row.
    ``verify`` always uses the faithful decoder.
    """

    def __init__(self, decoder: str = "faithful", device: str = "cpu") -> None:
        self.decoder = decoder
        self.device = device  # where learned codecs run their network (restore on GPU actors)
        self._codecs: dict[str, Codec] = {}

    def codec(self, codec_id: str) -> Codec:
        if codec_id not in self._codecs:
            name, _ = parse_decoder(self.decoder)
            decoder = self.decoder if name in codec_decoders(codec_id) else "faithful"
            self._codecs[codec_id] = get_codec(codec_id, decoder=decoder).to(self.device)
        return self._codecs[codec_id]

    def decode(self, row: dict[str, Any]) -> Decoded:
        """Check and decode an ``ok`` row; raise ``RowError`` on any mismatch."""
        shard, key = row["shard"], row["key"]
        stream = row["bitstream"]
        if stream is None:
            raise RowError(shard, key, "row has status ok but no bitstream")
        if crc32c.crc32c(stream) != row["crc32c"]:
            raise RowError(shard, key, "bitstream CRC32C mismatch (the stored bytes are damaged)")
        try:
            codec = self.codec(row["codec"])
        except CodecError as exc:  # e.g. a codec id this installation does not know
            raise RowError(shard, key, f"cannot decode: {exc}") from exc
        # A learned codec's row must name its weights; a Pillow codec's names none.
        if row["weights"] != codec.weights_sha256():
            written = f"{row['weights'][:16]}..." if row["weights"] else "none"
            raise RowError(
                shard, key,
                f"written with weights sha256 {written}, but codec {codec.id} here has "
                f"{(codec.weights_sha256() or 'none')[:16]}...; refusing to decode with other weights",
            )
        try:
            decoded = codec.decode_batch([stream])[0]
        except CodecError as exc:
            raise RowError(shard, key, f"bitstream does not decode: {exc}") from exc
        if decoded.content_hash != row["content_hash"]:
            raise RowError(
                shard, key,
                "decoded content does not match the stored content hash (damaged bitstream, "
                "or a decoder library whose output differs from the one that wrote the archive)",
            )
        if decoded.image.shape[:2] != (row["height"], row["width"]):
            raise RowError(shard, key, "decoded shape differs from the row's height/width")
        return decoded

    def check_passthrough(self, row: dict[str, Any]) -> None:
        """A passthrough row's stored image member must hash to the recorded sha256."""
        if row["orig_sha256"] is None:
            return
        for member in row["members"]:
            if member["name"] == row["image_name"]:
                if hashlib.sha256(member["data"]).digest() != row["orig_sha256"]:
                    raise RowError(row["shard"], row["key"], "passthrough image bytes changed")
                return
        raise RowError(row["shard"], row["key"], "passthrough row lost its image member")

    def check(self, row: dict[str, Any]) -> Decoded | None:
        if row["status"] == STATUS_OK:
            return self.decode(row)
        if row["status"] == STATUS_PASSTHROUGH:
            self.check_passthrough(row)
            return None
        raise RowError(row["shard"], row["key"], f"unknown row status {row['status']!r}")
