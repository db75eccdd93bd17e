"""Does the codec actor's priority matter? One shard through `compress`, Ray's workers at
nice 15 (Ray's default) and at nice 0, alternated.

    python benchmarks/pipeline/ray-overhead/nice.py [--pairs 3] [--copies 2]

Each trial is a fresh process that starts in-process Ray (127.0.0.1, its own temp dir, every
core) with ``worker_niceness`` set, then runs ``pipeline.compress.compress`` on one tar of the 24
Kodak images x ``--copies`` with msh-n96-v2 (quality 4), one actor of 1.5 CPUs (2 torch
threads), size guard off. It prints the shard's seconds per image from ``_stats.json`` (time
inside the worker's ``encode_shard``: Ray start-up and actor construction left out).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from measure import make_tar  # noqa: E402

CHILD = """
import json, os, sys, tempfile
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from pipeline.runner import RayOptions, prefer_loopback
prefer_loopback()
import ray
ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
         _node_ip_address="127.0.0.1", _temp_dir=sys.argv[4],
         _system_config={"worker_niceness": int(sys.argv[5])})
from pipeline.compress import compress
from pipeline.shard_encode import Guard
report = compress([sys.argv[2]], sys.argv[3], "msh-n96-v2", 4.0, progress=False,
                  ray_options=RayOptions(actors=1, num_cpus=1.5), guard=Guard(size=False))
assert report.ok, report.failed
stats = json.loads((Path(sys.argv[3]) / "_stats.json").read_text())
shard = next(iter(stats["shards"].values()))
print(round(shard["seconds"] / shard["samples"], 3))
ray.shutdown()
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, default=ROOT.parents[3] / "shared" / "datasets" / "kodak")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--copies", type=int, default=2)
    args = p.parse_args()
    results: dict[int, list[float]] = {15: [], 0: []}
    with tempfile.TemporaryDirectory(prefix="lar-nice-") as tmp:
        work = Path(tmp)
        tar = work / "shard.tar"
        n = make_tar(args.images, tar, args.copies)
        print(f"{n} images in one shard; seconds per image inside the worker:")
        for pair in range(args.pairs):
            for nice in (15, 0):
                temp = tempfile.mkdtemp(prefix="lar-", dir="/tmp")  # short: Ray's socket paths
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, str(ROOT.parents[2]), str(tar),
                     str(work / f"arc-{pair}-{nice}"), temp, str(nice)],
                    capture_output=True, text=True, env={**os.environ, "RAY_TMPDIR": temp})
                shutil.rmtree(temp, ignore_errors=True)
                if out.returncode:
                    raise SystemExit(out.stderr[-3000:])
                results[nice].append(float(out.stdout.split()[-1]))
                print(f"pair {pair}, workers at nice {nice:2d}: {results[nice][-1]}", flush=True)
    for nice, values in results.items():
        print(f"nice {nice:2d}: mean {sum(values) / len(values):.3f} s/image over {len(values)}")


if __name__ == "__main__":
    main()
