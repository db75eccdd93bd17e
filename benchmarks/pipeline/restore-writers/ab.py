"""Restore with 1 and with N output-encoder threads (``restore_shard(..., writers=N)``),
alternated, in one process on one machine.

Why: on an H200, one restore actor ran at 0.25 of the bare decode loop. Its single writer
thread spent 155 ms per Kodak image writing PNG while the codec waited
(benchmarks/pipeline/gpu/README.md, run 5). No GPU is needed to check the change itself. This
script uses the webp codec, whose decode is a few milliseconds, so restore is bound by PNG
writing here too, as on the GPU machine.

    python benchmarks/pipeline/restore-writers/ab.py --images ../shared/datasets/kodak \
        --writers 2 --reps 3 --out benchmarks/pipeline/restore-writers

Each trial restores the same shard to a local tar. The tars must be byte-identical across
trials; the script checks this and fails otherwise. Writes results.json and results.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from jobs.pipeline_benchmark import load_images, sequence, write_layout  # noqa: E402
from models.registry import get_codec  # noqa: E402
from pipeline.restore import restore_shard  # noqa: E402
from pipeline.rows import RowDecoder  # noqa: E402
from pipeline.shard_encode import Guard, encode_shard  # noqa: E402
from pipeline.sources import Shard  # noqa: E402
from pipeline.storage import StorageOptions  # noqa: E402


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--codec", default="webp")
    parser.add_argument("--n", type=int, default=48, help="images in the shard (default 48)")
    parser.add_argument("--writers", type=int, default=2, help="N to compare with 1 (default 2)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="latentarc-writers-"))
    try:
        write_layout(sequence(load_images(args.images), args.n), args.n, work / "src")
        src = next((work / "src").iterdir())
        archive = str(work / "archive")
        encode_shard(Shard(str(src), "shard-000000", src.name), archive, get_codec(args.codec),
                     guard=Guard(size=False))
        decoder = RowDecoder()
        trials, digest = [], None
        for rep in range(args.reps):
            order = (1, args.writers) if rep % 2 == 0 else (args.writers, 1)
            for writers in order:
                out = work / f"out-{rep}-{writers}.tar"
                wall0, cpu0 = time.perf_counter(), _cpu()
                result = restore_shard(archive, "shard-000000", str(out), None, None, 95,
                                       StorageOptions(), decoder, writers=writers)
                wall, cpu = time.perf_counter() - wall0, _cpu() - cpu0
                data = out.read_bytes()
                if digest is None:
                    digest = data
                elif data != digest:
                    raise SystemExit(f"rep {rep}, writers {writers}: the tar differs from the first")
                out.unlink()
                trials.append({"rep": rep, "writers": writers, "images": result["samples"],
                               "seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
                               "images_per_s": round(result["samples"] / wall, 2)})
                print(f"rep {rep} writers {writers}: {trials[-1]['images_per_s']} images/s, "
                      f"CPU {cpu / wall:.2f} cores", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    by = {w: [t["seconds"] for t in trials if t["writers"] == w] for w in (1, args.writers)}
    speedups = [a / b for a, b in zip(by[1], by[args.writers], strict=True)]
    summary = {
        "command": "python " + " ".join([str(Path(sys.argv[0]))] + sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(), "codec": args.codec, "images": args.n, "trials": trials,
        "speedup_per_rep": [round(s, 3) for s in speedups],
        "speedup_median": round(statistics.median(speedups), 3),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [f"# Restore: 1 vs {args.writers} output-encoder threads", "",
             f"Command: `{summary['command']}`", "",
             f"Date {summary['date']}; {summary['cpus']} CPUs; codec {args.codec}; one shard of "
             f"{args.n} images restored to a local tar in its original format (PNG), in this "
             "process (no Ray). Trials alternate; every tar is byte-identical to the first.", "",
             "| rep | writers | seconds | CPU seconds | images/s |", "|---|---|---|---|---|"]
    lines += [f"| {t['rep']} | {t['writers']} | {t['seconds']} | {t['cpu_seconds']} | "
              f"{t['images_per_s']} |" for t in trials]
    lines += ["", f"Speedup (1-writer seconds / {args.writers}-writer seconds) per rep: "
              f"{', '.join(f'{s:.2f}x' for s in speedups)}; median "
              f"{summary['speedup_median']:.2f}x.", ""]
    (args.out / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
