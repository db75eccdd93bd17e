"""Worker peak RSS by shard size, repeated: does one run's big/small ratio say anything?

    python benchmarks/pipeline/rss-repeats/trials.py [--reps 3] [--actors 1] [--codec msh-n96-v2]
        [--quality Q] [--rows-big 176] [--rows-small 8] [--out results.json]

The pipeline benchmark (`python -m jobs.benchmark --pipeline`) measures each worker's peak RSS
once per layout, and its big/small ratio has landed on either side of the 1.10 target from run
to run (1.06 in run 9, 1.115 and 1.141 in runs 10-11), with single peaks moving by tens of MiB.
This script runs only the memory part, through the same code (`run_pipeline`: the real
`compress` and `restore` on in-process Ray, one actor reserving 1.5 CPUs or, with `--actors 2`,
two of 0.75; the RSS sampler from the driver), on the same two layouts of the same Kodak images
(one 176-row shard, 3x the 64 MiB budget in decoded pixels, or 22 shards of 8), `--reps` times
each, alternating which layout goes first. It prints and writes every peak, the medians and
each rep's paired ratio.
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

from jobs.pipeline_benchmark import (  # noqa: E402
    DEFAULT_IMAGES,
    _start_ray,
    cpus_per_actor,
    load_images,
    run_pipeline,
    sequence,
    write_layout,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--codec", default="msh-n96-v2")
    parser.add_argument("--quality", type=float, default=None)
    parser.add_argument("--rows-big", type=int, default=176)
    parser.add_argument("--rows-small", type=int, default=8)
    parser.add_argument("--actors", type=int, default=1,
                        help="actors per run, each reserving (cores - 0.5) / actors CPUs as the "
                             "benchmark's --cpus-per-actor auto does; 2: the benchmark's '2 actors' "
                             "rows, where the one big shard still means one actor")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"))
    args = parser.parse_args()

    from models.allocator import keep_freed_memory

    keep_freed_memory()  # as the pipeline benchmark's driver does (workers set their own)
    images = load_images(args.images)
    work = Path(tempfile.mkdtemp(prefix="latentarc-rss-"))
    layouts = {"small": args.rows_small, "big": args.rows_big}
    runs = []
    num_cpus = cpus_per_actor("auto", args.actors)
    started_ray = False
    try:
        seq = sequence(images, args.rows_big)
        for name, rows in layouts.items():
            write_layout(seq, rows, work / f"src-{name}")
        started_ray = _start_ray()
        for rep in range(args.reps):
            order = list(layouts) if rep % 2 == 0 else list(reversed(layouts))
            for name in order:
                t0 = time.monotonic()
                r = run_pipeline(work / f"src-{name}", work, f"{name}{rep}", args.actors, args.codec,
                                 args.quality, 0.1, True, num_cpus)
                shutil.rmtree(work / f"arc-{name}{rep}-{args.actors}", ignore_errors=True)
                row = {"rep": rep, "layout": name, "seconds": round(time.monotonic() - t0, 1)}
                for step in ("compress", "restore"):
                    m = r[f"{step}_memory"]
                    row[step] = {k: m[k] for k in ("peak_rss_mib", "peak_hwm_mib", "ready_rss_mib",
                                                   "growth_mib", "workers")}
                runs.append(row)
                print(f"rep {rep} {name:5s}: compress peak {row['compress']['peak_rss_mib']:.0f} MiB "
                      f"(ready {row['compress']['ready_rss_mib']:.0f}), restore peak "
                      f"{row['restore']['peak_rss_mib']:.0f} MiB (ready "
                      f"{row['restore']['ready_rss_mib']:.0f}), {row['seconds']:.0f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if started_ray:
            import ray

            ray.shutdown()

    summary: dict = {"command": " ".join(["python", *sys.argv]), "settings": vars(args) | {
        "images": str(args.images), "out": str(args.out), "cpus_per_actor": num_cpus},
        "runs": runs, "ratios": {}}
    for step in ("compress", "restore"):
        for key in ("peak_rss_mib", "peak_hwm_mib"):
            by = {name: [r[step][key] for r in runs if r["layout"] == name] for name in layouts}
            paired = [round(b / s, 3) for s, b in zip(by["small"], by["big"], strict=True)]
            med = {name: statistics.median(v) for name, v in by.items()}
            summary["ratios"][f"{step} {key}"] = {
                "small": by["small"], "big": by["big"], "median_small": med["small"],
                "median_big": med["big"], "ratio_of_medians": round(med["big"] / med["small"], 3),
                "paired_ratios": paired}
            print(f"{step} {key}: small {by['small']} big {by['big']} -> ratio of medians "
                  f"{med['big'] / med['small']:.3f}, paired {paired}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
