"""Compress through Ray with the check thread on and off, alternated in one Ray session.

    python benchmarks/pipeline/check-thread/ray_ab.py [--codec msh-n96-v2] [--rows 176]
        [--shards 1] [--actors 1] [--cpus 1.5] [--reps 2] [--json OUT]

``--shards`` tars of ``--rows`` Kodak images each (``../batch-memory/measure.make_tars``) are
compressed by the real ``compress`` on in-process Ray (2 CPUs, 127.0.0.1) with ``--actors``
actors reserving ``--cpus`` each, with ``Batching(check_thread=True)`` and ``False``, the order
reversed every other rep. Wall seconds per call, actor start included. Why: in-process A/Bs
(check_ab.py) put the thread ahead, but the first pipeline benchmark with it (msh-n96-v2 run
16, one actor with two torch threads) was slower than earlier runs on other days; this
compares the two ways within one session.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks" / "pipeline" / "batch-memory"))

from measure import make_tars  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codec", default="msh-n96-v2")
    p.add_argument("--rows", type=int, default=176)
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--actors", type=int, default=1)
    p.add_argument("--cpus", type=float, default=1.5)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "datasets" / "kodak")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    from pipeline.runner import RayOptions, prefer_loopback

    prefer_loopback()
    import ray

    from pipeline.compress import compress
    from pipeline.shard_encode import Batching, Guard

    work = Path(tempfile.mkdtemp(prefix="lar-rayab-"))
    try:
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(work / "ray"))
        src = work / "src"
        src.mkdir()
        make_tars(args.images, src, args.shards, args.rows)
        options = RayOptions(actors=args.actors, num_cpus=args.cpus)
        times: dict[str, list[float]] = {"on": [], "off": []}
        for rep in range(args.reps):
            for way in ("on", "off") if rep % 2 == 0 else ("off", "on"):
                archive = work / f"arc-{rep}-{way}"
                started = time.perf_counter()
                report = compress([str(src)], str(archive), args.codec, ray_options=options,
                                  progress=False, guard=Guard(size=False),
                                  batching=Batching(check_thread=way == "on"))
                times[way].append(round(time.perf_counter() - started, 2))
                if not report.ok:
                    raise SystemExit(f"compress failed: {report.failed}")
                shutil.rmtree(archive)
                print(f"rep {rep} check thread {way}: {times[way][-1]} s", flush=True)
                time.sleep(2)  # the pool's actors exit
        images = args.rows * args.shards
        for way in ("on", "off"):
            m = statistics.median(times[way])
            print(f"check thread {way}: median {m:.2f} s, {images / m:.2f} images/s")
        if args.json:
            args.json.write_text(json.dumps({**vars(args), "images": str(args.images),
                                             "json": str(args.json), "times": times}, indent=1) + "\n")
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
