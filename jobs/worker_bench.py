"""`python -m jobs.worker_bench`: one compress worker's throughput on a device, without Ray.

    python -m jobs.worker_bench --codec msh-n96 --device cuda --batches 8 32 --out DIR

Why: ``--pipeline`` needs Ray, which a GPU machine of this project does not have installed,
and a GPU worker's limits are not a CPU worker's (the device's transforms are fast; the range
coder, the integer hyper-decoder, PNG decoding and PSNR stay on the CPU). This measures the part
that decides whether the device waits: in one process, on the same images,

- the bare codec loop (source decode, encode, decode, PSNR: what compress does per image),
- ``encode_shard`` (tar read, source decode, codec, Parquet write) with the reader thread off
  and on,

for each codec batch size asked. ``efficiency`` = encode_shard images/s over the bare loop's
at the same batch size. Ray's per-shard scheduling comes on top (measured on CPU by
``jobs.benchmark --pipeline``). Results: ``worker_bench.json`` and ``worker_bench.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from jobs.pipeline_benchmark import DEFAULT_IMAGES, load_images, sequence, write_layout
from models.allocator import TRIM_ENV


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def bare_loop(codec, data: list[bytes], batch: int, device: str) -> dict[str, Any]:
    """Source decode, encode, decode and PSNR in the caller's thread, ``batch`` images at a
    time; seconds per step (device synchronised at each step's end)."""
    from pipeline.images import prepare, psnr

    steps = {"source_decode": 0.0, "encode": 0.0, "decode": 0.0, "psnr": 0.0}
    total = time.perf_counter()
    nbytes = 0
    for start in range(0, len(data), batch):
        t0 = time.perf_counter()
        images = [prepare(d, 1 << 40)[0] for d in data[start:start + batch]]
        t1 = time.perf_counter()
        streams = codec.encode_batch(images)
        _sync(device)
        t2 = time.perf_counter()
        decoded = codec.decode_batch(streams)
        _sync(device)
        t3 = time.perf_counter()
        for im, d in zip(images, decoded, strict=True):
            psnr(im, d.image)
        t4 = time.perf_counter()
        for k, a, b in zip(steps, (t0, t1, t2, t3), (t1, t2, t3, t4), strict=True):
            steps[k] += b - a
        nbytes += sum(len(s) for s in streams)
    seconds = time.perf_counter() - total
    return {"batch": batch, "images": len(data), "seconds": round(seconds, 3),
            "images_per_s": round(len(data) / seconds, 2), "bitstream_bytes": nbytes,
            "step_seconds": {k: round(v, 3) for k, v in steps.items()}}


def worker_runs(codec, shards: list[Path], work: Path, batch: int,
                prefetches: tuple[bool, ...] = (False, True)) -> list[dict[str, Any]]:
    """``encode_shard`` over every shard, reader thread off then on."""
    from pipeline.shard_encode import Batching, Guard, encode_shard
    from pipeline.sources import Shard

    out = []
    for prefetch in prefetches:
        archive = work / f"b{batch}-{int(prefetch)}"
        t0 = time.perf_counter()
        images = 0
        for path in shards:
            stats = encode_shard(Shard(str(path), path.stem, path.name), str(archive), codec,
                                 guard=Guard(size=False),
                                 batching=Batching(batch, 64_000_000, prefetch))
            images += stats["samples"]
        seconds = time.perf_counter() - t0
        shutil.rmtree(archive, ignore_errors=True)
        trim = os.environ.get(TRIM_ENV, "on") or "on"
        out.append({"batch": batch, "prefetch": prefetch, "images": images, "trim": trim,
                    "seconds": round(seconds, 3), "images_per_s": round(images / seconds, 2)})
        print(f"[worker-bench] encode_shard batch {batch} prefetch {'on' if prefetch else 'off'} "
              f"trim {trim}: {images / seconds:.2f} img/s", flush=True)
    return out


def trim_trials(codec, data: list[bytes], shards: list[Path], work: Path, batch: int,
                device: str, reps: int) -> list[dict[str, Any]]:
    """Alternated trials of the bare loop and ``encode_shard`` (reader thread on) with the
    per-batch ``malloc_trim`` on and off (``LATENTARC_MALLOC_TRIM``): whether handing freed
    memory back after every batch costs throughput (the next batch faults it in again)."""
    rows = []
    before = os.environ.get(TRIM_ENV)
    try:
        for rep in range(reps):
            order = ("on", "off") if rep % 2 == 0 else ("off", "on")
            bare = bare_loop(codec, data, batch, device)
            rows.append({"rep": rep, "run": "bare", **bare})
            for trim in order:
                os.environ[TRIM_ENV] = trim
                (run,) = worker_runs(codec, shards, work, batch, (True,))
                rows.append({"rep": rep, "run": f"encode_shard trim {trim}", **run,
                             "efficiency": round(run["images_per_s"] / bare["images_per_s"], 3)})
    finally:
        if before is None:
            os.environ.pop(TRIM_ENV, None)
        else:
            os.environ[TRIM_ENV] = before
    return rows


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name()
    return platform.processor() or platform.machine()


def to_markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"# One compress worker on {summary['device']} ({summary['device_name']})",
        "",
        f"Command: `{summary['command']}`",
        "",
        f"Codec {summary['codec']} q{summary['quality']}, {summary['images']} images "
        f"({summary['shards']} shards), torch {summary['torch']}, {summary['cpus']} CPUs.",
        "",
        "| batch | bare codec img/s | encode_shard, thread off | thread on | efficiency (on / bare) |"
        " bare: source decode / encode / decode / PSNR s |",
        "|---|---|---|---|---|---|",
    ]
    if summary.get("trim_trials"):
        lines[-2:] = ["| rep | batch | run | seconds | images/s | efficiency |", "|---|---|---|---|---|---|"]
        for r in summary["trim_trials"]:
            lines.append(f"| {r['rep']} | {r['batch']} | {r['run']} | {r['seconds']:.2f} | "
                         f"{r['images_per_s']:.2f} | {r.get('efficiency', '')} |")
    for bare in summary["bare"]:
        b = bare["batch"]
        runs = {r["prefetch"]: r for r in summary["worker"] if r["batch"] == b}
        on, off = runs[True]["images_per_s"], runs[False]["images_per_s"]
        st = bare["step_seconds"]
        lines.append(f"| {b} | {bare['images_per_s']:.2f} | {off:.2f} | {on:.2f} | "
                     f"{on / bare['images_per_s']:.2f} | {st['source_decode']:.2f} / "
                     f"{st['encode']:.2f} / {st['decode']:.2f} / {st['psnr']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--codec", default="msh-n96")
    parser.add_argument("--quality", type=float)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--n", type=int, default=96, help="images in all (the folder repeated)")
    parser.add_argument("--rows", type=int, default=48, help="rows per shard")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--trim-trials", type=int, default=0, metavar="REPS",
                        help="instead: REPS alternated trials per batch size of the bare loop and "
                             "encode_shard with the per-batch malloc_trim on and off")
    args = parser.parse_args(argv)

    import torch

    from models.allocator import keep_freed_memory
    from models.registry import get_codec

    keep_freed_memory()  # as a compress worker's process does
    codec = get_codec(args.codec, args.quality).to(args.device)
    seq = sequence(load_images(args.images), args.n)
    work = Path(tempfile.mkdtemp(prefix="worker-bench-"))
    try:
        write_layout(seq, args.rows, work / "src")
        shards = sorted((work / "src").glob("*.tar"))
        bare_loop(codec, [it.data for it in seq[:4]], 4, args.device)  # warm-up (cudnn, caches)
        bare, worker, trials = [], [], []
        for batch in args.batches if args.trim_trials else ():
            trials += trim_trials(codec, [it.data for it in seq], shards, work, batch,
                                  args.device, args.trim_trials)
        for batch in args.batches if not args.trim_trials else ():
            bare.append(bare_loop(codec, [it.data for it in seq], batch, args.device))
            print(f"[worker-bench] bare codec batch {batch}: {bare[-1]['images_per_s']:.2f} img/s",
                  flush=True)
            worker += worker_runs(codec, shards, work, batch)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {
        "command": "python -m jobs.worker_bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "codec": codec.id, "quality": codec.quality, "device": args.device,
        "device_name": _device_name(args.device), "torch": torch.__version__,
        "cpus": os.cpu_count(), "images": len(seq), "shards": len(shards),
        "bare": bare, "worker": worker, "trim_trials": trials,
    }
    if bare:
        summary["mean_bitstream_bytes"] = float(np.mean([b["bitstream_bytes"] for b in bare])) / len(seq)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "worker_bench.json").write_text(json.dumps(summary, indent=1))
    (args.out / "worker_bench.md").write_text(to_markdown(summary))
    print(to_markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
