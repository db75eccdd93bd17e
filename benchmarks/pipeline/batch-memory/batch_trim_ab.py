"""webp: seconds of one 256-row Kodak shard through ``encode_shard`` at batches of 8, 4 and 2,
alternated in one process (session 11). Run it with and without LATENTARC_MALLOC_TRIM=off:

    python benchmarks/pipeline/batch-memory/batch_trim_ab.py
    LATENTARC_MALLOC_TRIM=off python benchmarks/pipeline/batch-memory/batch_trim_ab.py
"""

from __future__ import annotations

import io
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
KODAK = ROOT.parent / "shared" / "datasets" / "kodak"


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from models.allocator import keep_freed_memory

    keep_freed_memory()  # as a compress worker does
    from models.registry import get_codec
    from pipeline.shard_encode import Batching, Guard, encode_shard
    from pipeline.sources import Shard

    files = sorted(KODAK.glob("*.png"))
    work = Path(tempfile.mkdtemp(prefix="lar-bt-"))
    tar = work / "s.tar"
    with tarfile.open(tar, "w") as t:
        for i in range(256):
            data = files[i % len(files)].read_bytes()
            info = tarfile.TarInfo(f"i{i:04d}.png")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    codec = get_codec("webp")
    for rep in range(2):
        for n in (8, 4, 2):
            t0, c0 = time.perf_counter(), time.process_time()
            encode_shard(Shard(str(tar), "s", "s.tar"), str(work / f"a{rep}-{n}"), codec,
                         guard=Guard(size=False), batching=Batching(samples=n))
            print(f"rep {rep} batch {n}: {time.perf_counter() - t0:.2f} s wall, "
                  f"{time.process_time() - c0:.2f} s CPU", flush=True)


if __name__ == "__main__":
    main()
