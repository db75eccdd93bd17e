"""Two checkouts' ``compress`` alternated on the same shards: did a runner change cost time?

    git worktree add /tmp/wtold e0d3e5e      # Ray Data stage
    git worktree add /tmp/wtnew 8d8721a      # core actor pool
    python benchmarks/pipeline/ray-overhead/runner_ab.py /tmp/wtold /tmp/wtnew --pairs 3

Each trial is a fresh process, run in the checkout (its directory and PYTHONPATH, so Ray's
workers import that checkout too). It starts in-process Ray (127.0.0.1, its own temp dir, every
core), then runs ``pipeline.compress.compress`` on 2 shards x 256 Kodak images (webp at its
default quality, one actor of 1.5 CPUs, size guard off). It prints the call's wall seconds and
the shards' seconds inside the actor (``_stats.json``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

CHILD = r"""
import json, os, sys, time
from pathlib import Path
from pipeline.runner import RayOptions, prefer_loopback
prefer_loopback()
import ray
ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
         _node_ip_address="127.0.0.1", _temp_dir=sys.argv[3])
from pipeline.compress import compress
from pipeline.shard_encode import Guard
t0 = time.perf_counter()
report = compress(sys.argv[1].split(","), sys.argv[2], "webp", None, progress=False,
                  ray_options=RayOptions(actors=1, num_cpus=1.5), guard=Guard(size=False))
wall = time.perf_counter() - t0
assert report.ok, report.failed
stats = json.loads((Path(sys.argv[2]) / "_stats.json").read_text())
print(round(wall, 2), round(sum(s["seconds"] for s in stats["shards"].values()), 2))
ray.shutdown()
"""


def _make_tars():
    """``make_tars`` of ``../batch-memory/measure.py`` (this folder has a ``measure`` of its
    own, so it is loaded by path)."""
    spec = importlib.util.spec_from_file_location(
        "batch_memory_measure", ROOT / "benchmarks" / "pipeline" / "batch-memory" / "measure.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_tars


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old", type=Path, help="checkout A")
    p.add_argument("new", type=Path, help="checkout B")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "datasets" / "kodak")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="lar-abr-") as tmp:
        work = Path(tmp)
        tars = ",".join(_make_tars()(args.images, work, 2, 256))
        for pair in range(args.pairs):
            for name, repo in (("old", args.old), ("new", args.new)):
                temp = tempfile.mkdtemp(prefix="lar-", dir="/tmp")  # short: Ray's socket paths
                env = {**os.environ, "RAY_TMPDIR": temp, "PYTHONPATH": str(repo)}
                out = subprocess.run([sys.executable, "-c", CHILD, tars, str(work / f"a{pair}-{name}"), temp],
                                     capture_output=True, text=True, cwd=repo, env=env)
                shutil.rmtree(temp, ignore_errors=True)
                if out.returncode:
                    raise SystemExit(out.stderr[-3000:])
                wall, inside = out.stdout.split()[-2:]
                print(f"pair {pair} {name} ({repo}): compress() {wall} s wall, shards {inside} s "
                      "inside the actor", flush=True)


if __name__ == "__main__":
    main()
