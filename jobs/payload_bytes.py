"""How many bytes of a shard file are payload (bitstreams, kept members) as stored.

The archive's per-row overhead is what a shard file holds beyond its payload. Payload must be
counted as it is stored, not as it was given: the kept members (a caption, a JSON label)
compress in Parquet's zstd pages, and subtracting their raw size credited that saving to the
overhead (100 B/row where the per-row columns alone took 90; session 14's review). Each part
counts the smaller of its raw bytes and the pages of its column, so neither the compression
of members nor the length prefixes and page headers around incompressible bitstreams are
counted as payload.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

BITSTREAM_COLUMN = "bitstream"
MEMBER_DATA_COLUMN = "members.list.element.data"


def stored_payload(path: Path) -> dict[str, Any]:
    """Rows, raw and stored bytes of the bitstreams and of the kept members of one shard file."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    chunks = {BITSTREAM_COLUMN: 0, MEMBER_DATA_COLUMN: 0}
    md = pf.metadata
    for rg in range(md.num_row_groups):
        group = md.row_group(rg)
        for i in range(group.num_columns):
            column = group.column(i)
            if column.path_in_schema in chunks:
                chunks[column.path_in_schema] += column.total_compressed_size
    table = pf.read(columns=["bytes", "members"])
    bitstreams = sum(b or 0 for b in table.column("bytes").to_pylist())
    members = sum(len(m["data"]) for ms in table.column("members").to_pylist() for m in ms)
    return {"rows": table.num_rows, "bitstream_bytes": bitstreams, "member_bytes": members,
            "stored_bitstream_bytes": min(bitstreams, chunks[BITSTREAM_COLUMN]),
            "stored_member_bytes": min(members, chunks[MEMBER_DATA_COLUMN]),
            "footer_bytes": md.serialized_size + 8}  # footer + its length + the closing magic
