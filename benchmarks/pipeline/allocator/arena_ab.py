"""One malloc arena per worker or one per thread: compress through Ray, alternated.

    python benchmarks/pipeline/allocator/arena_ab.py [--codec msh-n96-v2] [--rows 96]
        [--shards 1] [--actors 1] [--cpus 1.5] [--reps 3] [--json OUT]

``--shards`` tars of ``--rows`` Kodak images each (``../batch-memory/measure.make_tars``) are
compressed by the real ``compress`` on in-process Ray (2 CPUs, 127.0.0.1) with ``--actors``
actors of ``--cpus`` each, with ``MALLOC_ARENA_MAX=1`` and ``=64`` (in effect glibc's default,
which gives every thread an arena of its own, up to 8 per core) given to the workers through
``pipeline.runner.worker_env``. The order is reversed every other rep. Per call: wall seconds
(actor start included), the seconds per image inside the workers (``_stats.json``), and the
workers' peak RSS and VmHWM (``jobs.pipeline_benchmark.RssSampler``).

It needs ``worker_env`` to pass ``MALLOC_ARENA_MAX`` from the driver's environment to the
workers, which the package does not do (session 20 measured no consistent gain and left the
default alone): apply that change first, as in session 20:
``env[ARENAS_ENV] = os.environ.get(ARENAS_ENV) or "1"`` with ``ARENAS_ENV = "MALLOC_ARENA_MAX"``
in ``pipeline/runner.py``. Without it the two ways would be the same, so the script refuses to run.
"""

from __future__ import annotations

import argparse
import json
import os
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

WAYS = {"one arena": "1", "arena per thread": "64"}
ARENAS_ENV = "MALLOC_ARENA_MAX"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codec", default="msh-n96-v2")
    p.add_argument("--rows", type=int, default=96)
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--actors", type=int, default=1)
    p.add_argument("--cpus", type=float, default=1.5)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "datasets" / "kodak")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    from pipeline.runner import RayOptions, prefer_loopback, worker_env

    prefer_loopback()
    import ray

    from jobs.pipeline_benchmark import RssSampler
    from pipeline.compress import compress
    from pipeline.shard_encode import Guard

    os.environ[ARENAS_ENV] = "7"
    if worker_env().get(ARENAS_ENV) != "7":
        raise SystemExit("pipeline.runner.worker_env does not pass MALLOC_ARENA_MAX on to the "
                         "workers: apply the change in this script's docstring first")
    os.environ.pop(ARENAS_ENV)  # (Ray's own processes start without it)
    work = Path(tempfile.mkdtemp(prefix="lar-arena-"))
    results: dict[str, list[dict]] = {way: [] for way in WAYS}
    try:
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(work / "ray"))
        src = work / "src"
        src.mkdir()
        make_tars(args.images, src, args.shards, args.rows)
        options = RayOptions(actors=args.actors, num_cpus=args.cpus)
        for rep in range(args.reps):
            for way in list(WAYS) if rep % 2 == 0 else list(WAYS)[::-1]:
                os.environ[ARENAS_ENV] = WAYS[way]
                archive = work / f"arc-{rep}-{way.replace(' ', '-')}"
                started = time.perf_counter()
                with RssSampler("CompressWorker") as memory:
                    report = compress([str(src)], str(archive), args.codec, ray_options=options,
                                      progress=False, guard=Guard(size=False))
                wall = time.perf_counter() - started
                if not report.ok:
                    raise SystemExit(f"compress failed: {report.failed}")
                shards = json.loads((archive / "_stats.json").read_text())["shards"].values()
                inside = sum(s["seconds"] for s in shards) / sum(s["samples"] for s in shards)
                mem = memory.summary()
                row = {"wall_s": round(wall, 2), "s_per_image_inside": round(inside, 4),
                       "peak_rss_mib": mem["peak_rss_mib"], "peak_hwm_mib": mem["peak_hwm_mib"]}
                results[way].append(row)
                shutil.rmtree(archive)
                print(f"rep {rep} {way}: {row}", flush=True)
                time.sleep(2)  # the pool's actors exit
        for way, rows in results.items():
            print(f"{way}: median wall {statistics.median(r['wall_s'] for r in rows):.2f} s, "
                  f"inside {statistics.median(r['s_per_image_inside'] for r in rows):.3f} s/image, "
                  f"peak RSS {statistics.median(r['peak_rss_mib'] for r in rows):.0f} MiB, "
                  f"VmHWM {statistics.median(r['peak_hwm_mib'] for r in rows):.0f} MiB")
        if args.json:
            args.json.write_text(json.dumps({**vars(args), "images": str(args.images),
                                             "json": str(args.json), "results": results},
                                            indent=1) + "\n")
    finally:
        os.environ.pop(ARENAS_ENV, None)
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
