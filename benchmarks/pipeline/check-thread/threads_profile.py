"""Where each of a compress worker's threads spends its time, from py-spy (session 19).

    # one shard through encode_shard, in this process, under py-spy (every thread, idle too)
    py-spy record --threads --idle --rate 100 --format raw -o /tmp/raw.txt -- \
        python benchmarks/pipeline/check-thread/threads_profile.py run --codec webp --rows 256
    # the table
    python benchmarks/pipeline/check-thread/threads_profile.py report /tmp/raw.txt

A worker has three threads on a shard: the codec's (it encodes, then waits for the previous
batch's check and writes rows), the reader (tar and source decode, one batch ahead) and the
check thread (decode for PSNR, PSNR, hashes, rows). Each sample is given to a role by the
frames it holds, then to the first step, from the leaf up, that one of its frames names. The
one that is busy while the others wait is what limits throughput. ``breakdown.py`` in
``../profile`` assumed a single work thread, as the pipeline had before the check thread.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

# role -> [(step, pattern on a frame "function (file:line)")], first match from the leaf wins
STEPS = {
    "reader": [
        ("waiting for room (one batch ahead)", r"^(Condition\.)?wait \(.*threading\.py"),
        ("source decode (Pillow)", r"^prepare \(pipeline/images\.py"),
        ("tar read", r"^iter_samples \(pipeline/tars\.py"),
    ],
    "check": [
        ("decode", r"\.decode_batch \(models/|^_decode \(models/"),
        ("PSNR", r"^psnr \(pipeline/images\.py"),
        ("content hash", r"content_hash \(models/"),
        ("metadata of the original", r"^image_metadata \(pipeline/images\.py"),
        ("row (CRC32C, sha256, dict)", r"^_ok_row \(pipeline/shard_encode\.py"),
    ],
    "codec": [
        ("waiting for the check thread", r"^Pending\.result \(pipeline/prefetch\.py"),
        ("waiting for the reader", r"^prefetch \(pipeline/prefetch\.py"),
        ("encode", r"\.encode_batch \(models/|^_encode_stage \(pipeline/"),
        ("trim (malloc_trim)", r"^release_freed_memory \(models/allocator\.py"),
        ("Parquet (rows to Arrow, write)", r"^(_RowGroup\.\w+|ParquetWriter\.\w+) "),
        ("write_atomic", r"^write_atomic \(pipeline/storage\.py"),
    ],
}


def role(frames: list[str]) -> str:
    """The thread's role from its frames (py-spy's thread names lag behind a reused thread's)."""
    if any(f.startswith("_check_stage ") for f in frames):
        return "check"
    if any(".produce (pipeline/prefetch.py" in f for f in frames):
        return "reader"
    if any(f.startswith("encode_shard ") for f in frames):
        return "codec"
    if any(f.startswith("_ReaderThread._loop ") for f in frames):
        return "idle reused thread (no job)"
    return "other"


def step(r: str, frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, pattern in STEPS.get(r, []):
            if re.search(pattern, frame):
                return name
    return "other"


def report(raw: Path) -> None:
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = [f for f in stack.split(";") if not f.startswith(("thread ", "process "))]
        r = role(frames)
        counts[r][step(r, frames)] += int(n)
    codec_total = sum(counts["codec"].values())
    print(f"Samples of the codec's thread while in encode_shard: {codec_total}. Shares below are "
          "of that (a thread busy all along would show 100 %).\n")
    print("| thread | step | samples | share |\n|---|---|---|---|")
    for r in ("codec", "reader", "check"):
        for name, n in counts[r].most_common():
            print(f"| {r} | {name} | {n} | {n / codec_total:.1%} |")
    idle = sum(counts["idle reused thread (no job)"].values())
    print(f"\nReused threads idle between jobs (the check thread between batches): {idle} samples")


def run(codec_id: str, rows: int, images: Path) -> None:
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")  # as in a worker
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks" / "pipeline" / "batch-memory"))
    import torch
    from measure import make_tars

    from models.allocator import keep_freed_memory
    from models.registry import get_codec
    from pipeline.shard_encode import Guard, encode_shard
    from pipeline.sources import Shard

    torch.set_num_threads(1)
    keep_freed_memory()
    with tempfile.TemporaryDirectory(prefix="lar-prof-") as tmp:
        tar_path = Path(make_tars(images, Path(tmp), 1, rows)[0])
        codec = get_codec(codec_id)
        started = time.perf_counter()
        encode_shard(Shard(str(tar_path), "s", tar_path.name), str(Path(tmp) / "arc"), codec,
                     guard=Guard(size=False))
        print(f"encode_shard: {rows} images in {time.perf_counter() - started:.2f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--codec", default="webp")
    r.add_argument("--rows", type=int, default=256)
    r.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "datasets" / "kodak")
    rep = sub.add_parser("report")
    rep.add_argument("raw", type=Path)
    args = p.parse_args()
    if args.cmd == "run":
        run(args.codec, args.rows, args.images)
    else:
        report(args.raw)


if __name__ == "__main__":
    main()
