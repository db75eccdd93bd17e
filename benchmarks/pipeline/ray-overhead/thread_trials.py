"""Does running the codec on a non-main thread slow it down? (issue 4's one-actor gap)

    python benchmarks/pipeline/ray-overhead/thread_trials.py [--rounds 2] [--rows 48]

``encode_shard`` of one tar of the first ``--rows`` Kodak images (msh-n96-v2 quality 4, 2 torch
threads, reader thread on, size guard off), run in the main thread or in a ``threading.Thread``
(where a Ray actor may run its methods), a fresh process per trial, the order alternated. Each
line: mode, seconds per image, CPU seconds, wall seconds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks" / "pipeline" / "batch-memory"))
from measure import make_tars  # noqa: E402

CHILD = """
import sys, threading, time
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(2)
from models.registry import get_codec
from pipeline.shard_encode import Batching, Guard, encode_shard
from pipeline.sources import Shard
from models.allocator import keep_freed_memory
keep_freed_memory()  # as a compress worker does
codec = get_codec("msh-n96-v2", 4.0)
mode, archive, tar, rows = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])

def job():
    encode_shard(Shard(tar, "s0", "s0.tar"), archive, codec, guard=Guard(size=False),
                 batching=Batching(prefetch=True))

t0, c0 = time.perf_counter(), time.process_time()
if mode == "main":
    job()
else:
    worker = threading.Thread(target=job)
    worker.start()
    worker.join()
wall = time.perf_counter() - t0
print(round(wall / rows, 3), round(time.process_time() - c0, 1), round(wall, 1))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "datasets" / "kodak")
    p.add_argument("--rows", type=int, default=48)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    print("| thread | s/image | CPU s | wall s |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="lar-thread-") as tmp:
        (tar,) = make_tars(args.images, Path(tmp), 1, args.rows)
        for r in range(args.rounds):
            for mode in ("main", "thread") if r % 2 == 0 else ("thread", "main"):
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, str(ROOT), mode, f"{tmp}/a{r}{mode}", tar,
                     str(args.rows)],
                    capture_output=True, text=True, check=True,
                    env={**os.environ, "OMP_NUM_THREADS": "2"}).stdout.split()
                print(f"| {mode} | " + " | ".join(out[-3:]) + " |", flush=True)


if __name__ == "__main__":
    main()
