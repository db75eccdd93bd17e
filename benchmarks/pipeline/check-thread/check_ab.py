"""Wall and CPU time of one shard through ``encode_shard``, check thread on and off, alternated.

    python benchmarks/pipeline/check-thread/check_ab.py [--codec webp] [--rows 256] [--reps 6]
        [--torch-threads 1] [--images DIR]

One tar of ``--rows`` Kodak images (in order, repeated; ``../batch-memory/measure.make_tars``) is
coded ``--reps`` times each way in one process, the order reversed every other rep, with the
reader thread on and a worker's allocator settings. The bare loop (encode, then decode and PSNR
one image at a time, on already decoded pixels) is timed in the same process between reps, so
each way's efficiency is a ratio within the run. Why: session 19 moved the decode that checks
each stream into a thread of its own (``Batching.check_thread``); this measures what it buys.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks" / "pipeline" / "batch-memory"))
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")  # as in a worker, before pyarrow loads

from measure import make_tars  # noqa: E402  (../batch-memory: the same Kodak tars)

from models.allocator import keep_freed_memory  # noqa: E402
from models.registry import get_codec  # noqa: E402
from pipeline.images import prepare, psnr  # noqa: E402
from pipeline.shard_encode import Batching, Guard, encode_shard  # noqa: E402
from pipeline.sources import Shard  # noqa: E402
from pipeline.tars import iter_samples  # noqa: E402


def _bare(codec, tar_path: Path, batch: int) -> float:
    """Seconds of encode + decode + PSNR on pixels decoded beforehand (not timed)."""
    with open(tar_path, "rb") as f:
        images = [prepare(s.members[0][1], 10**9)[0] for s in iter_samples(f, "bare")]
    started = time.perf_counter()
    for i in range(0, len(images), batch):
        part = images[i:i + batch]
        for image, stream in zip(part, codec.encode_batch(part), strict=True):
            (decoded,) = codec.decode_batch([stream])
            psnr(image, decoded.image)
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codec", default="webp")
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--reps", type=int, default=6)
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "datasets" / "kodak")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.torch_threads)
    keep_freed_memory()
    times: dict[str, list[tuple[float, float]]] = {"on": [], "off": [], "bare": []}
    with tempfile.TemporaryDirectory(prefix="lar-check-") as tmp:
        tar_path = Path(make_tars(args.images, Path(tmp), 1, args.rows)[0])
        codec = get_codec(args.codec)
        samples = Batching().resolved(codec)[0]
        for rep in range(args.reps):
            for way in ("on", "off") if rep % 2 == 0 else ("off", "on"):
                wall, cpu = time.perf_counter(), time.process_time()
                encode_shard(Shard(str(tar_path), f"s{rep}-{way}", tar_path.name),
                             str(Path(tmp) / f"arc-{rep}-{way}"), codec, guard=Guard(size=False),
                             batching=Batching(check_thread=way == "on"))
                times[way].append((time.perf_counter() - wall, time.process_time() - cpu))
                print(f"rep {rep} check thread {way}: {times[way][-1][0]:.2f} s, "
                      f"CPU {times[way][-1][1]:.2f} s", flush=True)
            cpu = time.process_time()
            wall = _bare(codec, tar_path, samples)
            times["bare"].append((wall, time.process_time() - cpu))
            print(f"rep {rep} bare loop: {wall:.2f} s", flush=True)
    bare = statistics.median(w for w, _ in times["bare"])
    out = {"codec": args.codec, "rows": args.rows, "reps": args.reps, "batch": samples,
           "torch_threads": args.torch_threads, "times": times}
    buf = io.StringIO()
    for way in ("on", "off"):
        wall = statistics.median(w for w, _ in times[way])
        cpu = statistics.median(c for _, c in times[way])
        out[f"efficiency_{way}"] = round(bare / wall, 3)
        print(f"check thread {way}: median {wall:.2f} s (CPU {cpu:.2f} s); bare loop median "
              f"{bare:.2f} s; in-worker efficiency {bare / wall:.3f}", file=buf)
    print(buf.getvalue(), end="")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
