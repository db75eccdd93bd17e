"""CPU time of ``Archive.locate`` (the index part of every get) on a large local index.

    python benchmarks/pipeline/index-sort/locate.py --out /tmp/loc [--code DIR] [--rows 10000000]

Writes an ``_index.parquet`` of ``--rows`` keys (as write_index lays it out: sorted, row groups
of INDEX_ROW_GROUP) and a manifest beside it, then, in a fresh interpreter with the code of
``--code`` (default: this checkout), opens it once and locates 200 random keys, twice
(``first``: the first 200 gets through the Archive; ``again``: 200 more). Prints ms per locate.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def step(root: str, rows: int) -> dict:
    import numpy as np

    from pipeline.archive import Archive

    arc = Archive.open(root)
    rng = np.random.default_rng(0)
    out = {}
    for label in ("first", "again"):
        keys = [f"k{i:010d}" for i in rng.integers(0, rows, 200)]
        started = time.process_time()
        for key in keys:
            arc.locate(key)
        out[label] = (time.process_time() - started) / len(keys) * 1e3
    return out


def build(root: Path, rows: int) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, str(REPO))
    from pipeline.archive import INDEX_ROW_GROUP, INDEX_SCHEMA

    root.mkdir(parents=True, exist_ok=True)
    keys = np.char.add("k", np.char.zfill(np.arange(rows).astype(str), 10))
    table = pa.table({"key": pa.array(keys.tolist()), "shard": pa.repeat(pa.scalar("s"), rows),
                      "row_group": pa.array(np.zeros(rows, np.int32))}, schema=INDEX_SCHEMA)
    pq.write_table(table, root / "_index.parquet", row_group_size=INDEX_ROW_GROUP,
                   compression="zstd", write_statistics=True, write_page_checksum=True)
    (root / "_archive.json").write_text(json.dumps({
        "format": "latentarc-archive", "format_version": 1, "codec": "webp",
        "shards": [{"shard": "s", "source_file": "s.tar", "samples": rows}], "totals": {}}))
    meta = pq.ParquetFile(root / "_index.parquet").metadata
    return {"rows": rows, "row_groups": meta.num_row_groups, "footer_bytes": meta.serialized_size}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="work directory")
    parser.add_argument("--code", type=Path, default=REPO)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--step", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        print(json.dumps(step(args.step[0], int(args.step[1]))))
        return 0
    index = build(args.out, args.rows)
    done = subprocess.run([sys.executable, __file__, "--out", str(args.out), "--step",
                           str(args.out), str(args.rows)], cwd=args.code,
                          env={"PYTHONPATH": str(args.code), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, check=True)
    result = {**index, "code": str(args.code),
              "commit": subprocess.run(["git", "-C", str(args.code), "rev-parse", "--short",
                                        "HEAD"], capture_output=True, text=True).stdout.strip(),
              "ms_per_locate": json.loads(done.stdout.strip().splitlines()[-1])}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
