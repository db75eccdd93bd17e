"""One ``compress`` run to profile: Kodak images packed as WebDataset shards, in-process Ray.

Meant to run under ``py-spy record --subprocesses`` (see README.md here): py-spy then samples
the driver, the Ray workers the raylet starts and the Ray Data actor that holds the codec, so
the flame graph shows where a compress run's time goes, pipeline plumbing included. Shards
are built the way ``jobs.pipeline_benchmark`` builds them (copy k > 0 of an image is shifted
by (5k, 7k) pixels and saved as PNG), in a separate call (``--build DIR``) so that building
them stays out of the profile; compress runs with the same size guard off.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from jobs.pipeline_benchmark import (  # noqa: E402
    DEFAULT_IMAGES,
    _start_ray,
    load_images,
    sequence,
    write_layout,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--count", type=int, default=128, help="images in the run")
    parser.add_argument("--rows", type=int, default=128, help="rows per shard")
    parser.add_argument("--build", type=Path, help="only write the shards into this folder")
    parser.add_argument("--src", type=Path, help="compress the shards in this folder")
    parser.add_argument("--codec", default="webp")
    parser.add_argument("--quality", type=float)
    args = parser.parse_args(argv)

    from pipeline.compress import compress
    from pipeline.runner import RayOptions
    from pipeline.shard_encode import Guard

    if args.build:
        write_layout(sequence(load_images(args.images), args.count), args.rows, args.build)
        return 0
    if args.src is None:
        parser.error("give --build DIR or --src DIR")
    work = Path(tempfile.mkdtemp(prefix="latentarc-profile-"))
    try:
        _start_ray()
        started = time.monotonic()
        report = compress([str(args.src)], str(work / "archive"), args.codec, args.quality,
                          ray_options=RayOptions(actors=1), progress=False,
                          guard=Guard(size=False))
        seconds = time.monotonic() - started
        stats = json.loads((work / "archive" / "_stats.json").read_text())
        in_worker = sum(s.get("seconds", 0.0) for s in stats["shards"].values())
        print(json.dumps({"ok": report.ok, "images": report.totals.get("samples"),
                          "seconds": round(seconds, 2), "in_worker_seconds": round(in_worker, 2),
                          "images_per_s": round(report.totals["samples"] / seconds, 2)}))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
