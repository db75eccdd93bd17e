"""Wall time of one shard through ``encode_shard`` by codec batch size, alternated in one process.

    python benchmarks/pipeline/batch-memory/batch_ab.py [--codec webp] [--rows 256]
        [--sizes 8,4,2] [--reps 6] [--images DIR]

One tar of ``--rows`` Kodak images (in order, repeated) is coded ``--reps`` times at each batch
size, the order reversed every other rep, with the worker's allocator settings (glibc's malloc
kept and trimmed after each batch; Arrow through malloc unless
``ARROW_DEFAULT_MEMORY_POOL`` says otherwise). Prints each time and the medians.
Why: a smaller batch holds fewer decoded images, but the trim after each batch makes the next
images fault their pages in again; this measures what that costs (session 18).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")  # as in a worker, before pyarrow loads

from measure import make_tars  # noqa: E402  (this directory: the same Kodak tars)

from models.allocator import keep_freed_memory  # noqa: E402
from models.registry import get_codec  # noqa: E402
from pipeline.shard_encode import Batching, Guard, encode_shard  # noqa: E402
from pipeline.sources import Shard  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codec", default="webp")
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--sizes", default="8,4,2", help="batch sizes, comma-separated")
    p.add_argument("--reps", type=int, default=6)
    p.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "datasets" / "kodak")
    args = p.parse_args()
    import pyarrow as pa

    print(f"malloc kept: {keep_freed_memory()}; Arrow pool: {pa.default_memory_pool().backend_name}")
    sizes = [int(s) for s in args.sizes.split(",")]
    times: dict[int, list[float]] = {s: [] for s in sizes}
    with tempfile.TemporaryDirectory(prefix="lar-ab-") as tmp:
        tar_path = Path(make_tars(args.images, Path(tmp), 1, args.rows)[0])
        codec = get_codec(args.codec)
        for rep in range(args.reps):
            for size in sizes if rep % 2 == 0 else sizes[::-1]:
                started = time.perf_counter()
                encode_shard(Shard(str(tar_path), f"s{rep}-{size}", tar_path.name),
                             str(Path(tmp) / f"arc-{rep}-{size}"), codec, guard=Guard(size=False),
                             batching=Batching(samples=size))
                times[size].append(round(time.perf_counter() - started, 2))
    for size in sizes:
        print(f"batch {size}: {times[size]} s, median {statistics.median(times[size]):.2f}")


if __name__ == "__main__":
    main()
