"""Does an environment setting change a compress actor's speed? Alternated compress trials.

    python benchmarks/pipeline/ray-overhead/env_trials.py MALLOC_ARENA_MAX=1 [--pairs 3]

Each trial is a fresh process that starts in-process Ray (127.0.0.1, its own temp dir, every
core, Ray's default worker priority) and runs ``pipeline.compress.compress`` on one tar of the 24
Kodak images x ``--copies`` (msh-n96-v2 quality 4, one actor of 1.5 CPUs = 2 torch threads, size
guard off). Every other trial has the setting in its environment, which Ray's workers inherit.
It prints the shard's seconds per image from ``_stats.json``.
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
import json, os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from pipeline.runner import RayOptions, prefer_loopback
prefer_loopback()
import ray
ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
         _node_ip_address="127.0.0.1", _temp_dir=sys.argv[4])
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
    p.add_argument("setting", help="NAME=VALUE, set for every other trial")
    p.add_argument("--images", type=Path, default=ROOT.parents[3] / "shared" / "datasets" / "kodak")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--copies", type=int, default=2)
    args = p.parse_args()
    name, _, value = args.setting.partition("=")
    results: dict[str, list[float]] = {"without": [], "with": []}
    with tempfile.TemporaryDirectory(prefix="lar-env-") as tmp:
        work = Path(tmp)
        tar = work / "shard.tar"
        n = make_tar(args.images, tar, args.copies)
        print(f"{n} images in one shard; seconds per image inside the worker:")
        for pair in range(args.pairs):
            for case in results:
                temp = tempfile.mkdtemp(prefix="lar-", dir="/tmp")  # short: Ray's socket paths
                env = {k: v for k, v in os.environ.items() if k != name} | {"RAY_TMPDIR": temp}
                if case == "with":
                    env[name] = value
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, str(ROOT.parents[2]), str(tar),
                     str(work / f"arc-{pair}-{case}"), temp], capture_output=True, text=True, env=env)
                shutil.rmtree(temp, ignore_errors=True)
                if out.returncode:
                    raise SystemExit(out.stderr[-3000:])
                results[case].append(float(out.stdout.split()[-1]))
                print(f"pair {pair}, {case} {args.setting}: {results[case][-1]}", flush=True)
    for case, values in results.items():
        print(f"{case} {args.setting}: mean {sum(values) / len(values):.3f} s/image over {len(values)}")


if __name__ == "__main__":
    main()
