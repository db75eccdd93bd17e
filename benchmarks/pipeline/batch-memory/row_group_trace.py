"""RSS of one compress shard loop, after each codec batch and around each row-group write.

    python benchmarks/pipeline/batch-memory/row_group_trace.py [--codec webp] [--rows 256]
        [--batch-samples 8] [--images DIR]

Run it with ``LATENTARC_MALLOC=glibc GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072
LATENTARC_MALLOC_TRIM=off`` so that glibc returns every large freed block at once and RSS
follows live memory, and with ``ARROW_DEFAULT_MEMORY_POOL=mimalloc`` or ``=system`` to compare
Arrow's pools. Prints, per batch: rows coded, RSS and the peak so far (MiB, sampled every
2 ms by a thread); before each row-group write also Arrow's pool, its allocated and peak MiB and
the row group's payload MiB. Why: it shows where a big shard's peak comes from (session 18).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402
from measure import make_tars  # noqa: E402  (this directory: the same Kodak tars)

import pipeline.shard_encode as se  # noqa: E402
from models.registry import get_codec  # noqa: E402
from pipeline.sources import Shard  # noqa: E402


def rss_mib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codec", default="webp")
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--batch-samples", type=int, default=8)
    p.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "datasets" / "kodak")
    args = p.parse_args()
    peak = [0]

    def sample() -> None:
        while True:
            peak[0] = max(peak[0], rss_mib())
            time.sleep(0.002)

    encode_chunk, flush = se._encode_chunk, se._RowGroup.flush
    coded = [0]

    def traced_chunk(chunk, *a, **k):
        rows = encode_chunk(chunk, *a, **k)
        coded[0] += len(chunk)
        print(f"{coded[0]:5d} rows  RSS {rss_mib()}  peak {peak[0]}", flush=True)
        return rows

    def traced_flush(self) -> None:
        pool = pa.default_memory_pool()
        print(f"  write: RSS {rss_mib()}  peak {peak[0]}; pool {pool.backend_name} "
              f"{pa.total_allocated_bytes() >> 20} MiB (its peak {pool.max_memory() >> 20}); "
              f"payload {self.payload >> 20} MiB", flush=True)
        flush(self)
        print(f"  written: RSS {rss_mib()}  peak {peak[0]}", flush=True)

    se._encode_chunk, se._RowGroup.flush = traced_chunk, traced_flush
    with tempfile.TemporaryDirectory(prefix="lar-trace-") as tmp:
        tar_path = Path(make_tars(args.images, Path(tmp), 1, args.rows)[0])
        codec = get_codec(args.codec)
        threading.Thread(target=sample, daemon=True).start()
        print(f"start: RSS {rss_mib()}")
        se.encode_shard(Shard(str(tar_path), "s", tar_path.name), str(Path(tmp) / "arc"), codec,
                        guard=se.Guard(size=False), batching=se.Batching(samples=args.batch_samples))
    print(f"peak {peak[0]} MiB")


if __name__ == "__main__":
    main()
