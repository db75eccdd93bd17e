"""What the pipeline benchmark's RSS sampler costs the compress it measures, on 2 cores.

    python benchmarks/pipeline/sampler-cost/sampler_ab.py [--codec msh-n96-v2] [--rows 48]
        [--actors 1] [--cpus 1.5] [--reps 3] [--ways none walk0.1 walk1] [--json OUT]

Part 1, the sampler alone: the driver's CPU over 15 s of in-process Ray with one idle actor,
with no sampler, with a walk of every descendant each 0.1 s (the benchmark until session 22),
and with the walk each 1 s and cheap /proc reads of the known actors each 0.1 s (since).

Part 2, its effect: one tar of ``--rows`` Kodak images (``../batch-memory/measure.make_tars``)
compressed by the real ``compress`` on in-process Ray (2 CPUs, 127.0.0.1), ``--actors`` actors
reserving ``--cpus`` each, under each sampler way in turn, the order rotated every rep. Per
call: wall seconds (actor start included), the shard's own seconds from ``_stats.json`` (what
the benchmark's "inside the actor" row sums), and the sampler thread's CPU seconds.

Why: the benchmark's Ray runs had a sampler in the driver (nice 0) beside nice-15 actors, and
its in-worker runs had none; the gap between the two was the unexplained part of the
pipeline's efficiency (``../msh-n96-v2/README.md``).
"""

from __future__ import annotations

import argparse
import contextlib
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

WAYS = {"none": None, "walk0.1": 0.1, "walk1": 1.0}  # seconds between full walks


def sampler_alone(seconds: float = 15.0) -> dict[str, float]:
    """The driver's CPU (% of one core) with each way running and one idle actor."""
    import ray

    from jobs.pipeline_benchmark import RssSampler

    @ray.remote(num_cpus=0.5)
    class Idle:
        def ping(self) -> int:
            return 0

    out = {}
    for way, walk in WAYS.items():
        c0, t0 = time.process_time(), time.perf_counter()
        if walk is None:
            time.sleep(seconds)
        else:
            with RssSampler("Idle", 0.1, walk) as s:
                actor = Idle.remote()  # started inside the window: the sampler finds it
                ray.get(actor.ping.remote())
                time.sleep(seconds)
            ray.kill(actor)
            assert s.workers, "the sampler did not find the actor"
        out[way] = round(100 * (time.process_time() - c0) / (time.perf_counter() - t0), 2)
        print(f"sampler alone, {way}: driver {out[way]}% of one core", flush=True)
        time.sleep(2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codec", default="msh-n96-v2")
    p.add_argument("--rows", type=int, default=48)
    p.add_argument("--actors", type=int, default=1)
    p.add_argument("--cpus", type=float, default=1.5)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--ways", nargs="+", default=list(WAYS), choices=list(WAYS))
    p.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "datasets" / "kodak")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    from pipeline.runner import RayOptions, prefer_loopback

    prefer_loopback()
    import ray

    from jobs.pipeline_benchmark import RssSampler
    from pipeline.compress import compress
    from pipeline.shard_encode import Batching, Guard

    work = Path(tempfile.mkdtemp(prefix="lar-samp-"))
    try:
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(work / "ray"),
                 _node_ip_address="127.0.0.1")
        alone = sampler_alone()
        src = work / "src"
        src.mkdir()
        make_tars(args.images, src, 1, args.rows)
        options = RayOptions(actors=args.actors, num_cpus=args.cpus, num_gpus=0)
        trials = []
        for rep in range(args.reps):
            order = args.ways[rep % len(args.ways):] + args.ways[:rep % len(args.ways)]
            for way in order:
                archive = work / f"arc-{rep}-{way}"
                walk = WAYS[way]
                sampler = RssSampler("CompressWorker", 0.1, walk) if walk else None
                started = time.perf_counter()
                with sampler or contextlib.nullcontext():
                    report = compress([str(src)], str(archive), args.codec, ray_options=options,
                                      progress=False, guard=Guard(size=False), batching=Batching())
                wall = time.perf_counter() - started
                if not report.ok:
                    raise SystemExit(f"compress failed: {report.failed}")
                stats = json.loads((archive / "_stats.json").read_text())
                shard_s = sum(s["seconds"] for s in stats["shards"].values())
                trials.append({"rep": rep, "way": way, "wall_s": round(wall, 2),
                               "shard_s": round(shard_s, 2),
                               "sampler_cpu_s": round(sampler.sampler_cpu_seconds, 2) if sampler else 0.0,
                               "peak_rss_mib": sampler.summary()["peak_rss_mib"] if sampler else None})
                print(json.dumps(trials[-1]), flush=True)
                shutil.rmtree(archive)
                time.sleep(3)  # the pool's actors exit
        summary = {}
        for way in args.ways:
            mine = [t for t in trials if t["way"] == way]
            summary[way] = {k: statistics.median(t[k] for t in mine)
                            for k in ("wall_s", "shard_s", "sampler_cpu_s")}
            print(f"{way}: median wall {summary[way]['wall_s']:.2f} s, shard "
                  f"{summary[way]['shard_s']:.2f} s ({args.rows / summary[way]['shard_s']:.3f} img/s "
                  f"inside the actor), sampler CPU {summary[way]['sampler_cpu_s']:.2f} s")
        if args.json:
            args.json.write_text(json.dumps({"args": {**vars(args), "images": str(args.images),
                                                      "json": str(args.json)},
                                             "sampler_alone_pct_of_a_core": alone,
                                             "trials": trials, "medians": summary}, indent=1) + "\n")
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
