"""How many worker processes the benchmark's RSS sampler counts for 2 actors, under load.

Runs the small layout of `jobs.pipeline_benchmark.run_pipeline` (4 shards of 2 tiny images,
webp, 2 actors of 0.5 CPU) N times on in-process Ray, while two busy-looping processes load
both cores (`--no-load`: without them), and prints the sampler's worker count per run:

    python benchmarks/pipeline/rss-repeats/sampler_count.py --runs 8

Session 13, this script in a worktree of 536d287 (before the fix): 4 of 8 runs counted 3 or 4
workers (compress or restore). Each worker forked `ldconfig -p` as it started
(ctypes.util.find_library in models.allocator), and the child carried the worker's title until
it exec'd. At 1e1bd63 (the fix), in this checkout: 0 of 8.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def spin() -> None:
    while True:
        pass


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--no-load", action="store_true")
    args = p.parse_args()
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    from conftest import encode_image, synthetic_image

    import jobs.pipeline_benchmark as pb

    work = Path(tempfile.mkdtemp(prefix="lar-count-"))
    hogs = [] if args.no_load else [mp.Process(target=spin, daemon=True) for _ in range(2)]
    for h in hogs:
        h.start()
    try:
        images = work / "images"
        images.mkdir()
        for i in range(4):
            (images / f"im{i}.png").write_bytes(encode_image(synthetic_image(i)))
        pb.write_layout(pb.sequence(pb.load_images(images), 8), 2, work / "src")
        pb._start_ray()
        extra = 0
        for run in range(args.runs):
            r = pb.run_pipeline(work / "src", work, f"small{run}", 2, "webp", None, 0.05,
                                num_cpus=0.5)
            counts = (r["compress_memory"]["workers"], r["restore_memory"]["workers"])
            extra += max(counts) > 2
            print(f"run {run}: workers counted, compress {counts[0]}, restore {counts[1]}", flush=True)
        print(f"{extra} of {args.runs} runs counted more workers than actors")
    finally:
        for h in hogs:
            h.terminate()
        import ray

        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
