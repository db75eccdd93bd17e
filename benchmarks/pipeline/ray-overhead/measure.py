"""Where the learned pipeline's last 15-20% goes on 2 cores: the codec in a Ray actor, or Ray?

    python benchmarks/pipeline/ray-overhead/measure.py [--images ../shared/datasets/kodak]

Three timings of the same work, ``encode_shard`` of msh-n96-v2 at quality 4 on one tar of the
24 Kodak images (4 copies, renamed, in the third), size guard off, reader thread on:
1. in this process (2 torch threads), twice;
2. in a bare Ray actor reserving 1.5 CPUs (``use_reserved_cpus``: 2 threads), twice;
3. inside ``latentarc compress`` (Ray Data, one actor of 1.5 CPUs), the shard's own seconds
   from ``_stats.json``, plus a snapshot of the CPU share of every process it started.
Each prints seconds per image. In-process Ray binds to 127.0.0.1 with its own temp dir.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))


def make_tar(images: Path, path: Path, copies: int) -> int:
    files = sorted(images.glob("*.png"))[:24]
    with tarfile.open(path, "w") as tar:
        for c in range(copies):
            for f in files:
                data = f.read_bytes()
                info = tarfile.TarInfo(f"c{c}_{f.stem}.png")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return len(files) * copies


def shard_seconds(tar: str, reps: int = 2) -> list[float]:
    """encode_shard of ``tar`` ``reps`` times with one codec object; seconds per image each."""
    from models.registry import get_codec
    from pipeline.runner import use_reserved_cpus
    from pipeline.shard_encode import Batching, Guard, encode_shard
    from pipeline.sources import Shard

    use_reserved_cpus()
    codec = get_codec("msh-n96-v2", 4.0)
    out = tempfile.mkdtemp(prefix="lar-ro-")
    per_image = []
    try:
        for rep in range(reps):
            t0 = time.perf_counter()
            stats = encode_shard(Shard(tar, f"s{rep}", "s.tar"), out, codec, guard=Guard(size=False),
                                 batching=Batching(prefetch=True))
            per_image.append(round((time.perf_counter() - t0) / stats["samples"], 3))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return per_image


def in_actor(tar: str, temp: str) -> list[float]:
    import ray

    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
             _node_ip_address="127.0.0.1", _temp_dir=temp, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1.5)(shard_seconds)
        return ray.get(remote.remote(tar))
    finally:
        ray.shutdown()


def in_compress(tar: str, temp: str) -> tuple[float, list[str]]:
    archive = str(Path(temp) / "archive")
    env = {**os.environ, "RAY_TMPDIR": temp}
    cli = [sys.executable, "-c", "from pipeline.cli import run; run()", "compress", tar, archive,
           "--codec", "msh-n96-v2", "--no-size-guard", "--actors", "1", "--cpus-per-actor", "1.5", "-q"]
    proc = subprocess.Popen(cli, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(40)  # into the shard: the actor is encoding
    snapshot = subprocess.run(["ps", "-eo", "pid,ni,pcpu,etimes,comm", "--sort=-pcpu"],
                              capture_output=True, text=True).stdout.splitlines()[:14]
    proc.wait()
    stats = json.loads((Path(archive) / "_stats.json").read_text())
    shard = next(iter(stats["shards"].values()))
    return round(shard["seconds"] / shard["samples"], 3), snapshot


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "datasets" / "kodak")
    args = p.parse_args()
    import torch

    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="lar-ro-"))
    try:
        small, big = str(work / "k24.tar"), str(work / "k96.tar")
        make_tar(args.images, Path(small), 1)
        make_tar(args.images, Path(big), 4)
        print("1. in this process, s/image:", shard_seconds(small), flush=True)
        print("2. in a bare Ray actor (1.5 CPUs), s/image:", in_actor(small, str(work)), flush=True)
        seconds, snapshot = in_compress(big, str(work))
        print("3. inside `latentarc compress` (96 images, one shard), s/image:", seconds)
        print("   processes 40 s in (ps: pid, nice, %CPU of one core, seconds, name):")
        print("\n".join("   " + line for line in snapshot))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
