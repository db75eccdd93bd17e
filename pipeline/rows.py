"""Read archive rows back and check them: the shared core of restore, verify and Archive.get.

Every decoded row is checked before it is used: CRC32C of the bitstream, the codec's own
framing checks, and the content hash of what decoding yields. A row that fails any check
raises ``RowError`` naming shard and key; nothing unchecked is ever returned as good.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import crc32c

from models.codec import Codec, CodecError, Decoded
from models.registry import get_codec
from pipeline.archive_format import STATUS_OK, STATUS_PASSTHROUGH, open_shard_file, shard_meta
from pipeline.storage import StorageOptions
from pipeline.where import Condition, row_group_may_match, row_matches


class RowError(ValueError):
    """A row is damaged or does not decode to what was written."""

    def __init__(self, shard: str, key: str, problem: str) -> None:
        super().__init__(f"shard {shard} key {key!r}: {problem}")
        self.shard, self.key, self.problem = shard, key, problem


def iter_rows(
    archive: str, shard: str, storage: StorageOptions | None = None,
    where: list[Condition] | None = None, skipped: list[int] | None = None,
) -> Iterator[dict[str, Any]]:
    """Stream a shard file's rows one row group at a time (metadata is checked first).

    With ``where``, row groups whose statistics rule it out are not read (their numbers are
    appended to ``skipped``) and only matching rows are yielded.
    """
    f, parquet = open_shard_file(archive, shard, storage)
    with f:
        shard_meta(parquet, f"shard file {shard}")
        for i in range(parquet.num_row_groups):
            if where and not row_group_may_match(where, parquet.metadata.row_group(i)):
                if skipped is not None:
                    skipped.append(i)
                continue
            for row in parquet.read_row_group(i).to_pylist():
                if not where or row_matches(where, row):
                    yield row


class RowDecoder:
    """Decodes rows with codecs instantiated once per codec id."""

    def __init__(self) -> None:
        self._codecs: dict[str, Codec] = {}

    def codec(self, codec_id: str) -> Codec:
        if codec_id not in self._codecs:
            self._codecs[codec_id] = get_codec(codec_id)
        return self._codecs[codec_id]

    def decode(self, row: dict[str, Any]) -> Decoded:
        """Check and decode an ``ok`` row; raise ``RowError`` on any mismatch."""
        shard, key = row["shard"], row["key"]
        stream = row["bitstream"]
        if stream is None:
            raise RowError(shard, key, "row has status ok but no bitstream")
        if crc32c.crc32c(stream) != row["crc32c"]:
            raise RowError(shard, key, "bitstream CRC32C mismatch (the stored bytes are damaged)")
        codec = self.codec(row["codec"])
        if row["weights"] is not None and row["weights"] != codec.weights_sha256():
            raise RowError(
                shard, key,
                f"written with weights sha256 {row['weights'][:16]}..., but codec {codec.id} here has "
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
