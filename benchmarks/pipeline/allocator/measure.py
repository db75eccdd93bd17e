"""The learned codec under each malloc setting of ``models.allocator``.

    python benchmarks/pipeline/allocator/measure.py [--rows 48] [--pairs 2] [--settings ...]

Alternated fresh processes, each running ``encode_shard`` (msh-n96-v2 quality 4, 2 torch
threads, reader thread on, size guard off) on one tar of the first ``--rows`` Kodak images in
order, once per setting per round, the order reversed every other round:
- ``defaults``: glibc's defaults, no end-of-batch trim (what workers did before session 9);
- ``trim``: glibc's defaults and ``malloc_trim`` after each codec batch;
- ``keep``: mmap off and trimming at 1 GiB (``models.allocator``), no end-of-batch trim;
- ``keep+trim``: both (the package's default since session 9).
Each prints the shard's seconds, the process's page faults per second, its user and kernel CPU
(cores) over the shard, and its peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks" / "pipeline" / "batch-memory"))
from measure import make_tars  # noqa: E402

SETTINGS = {
    "defaults": {"LATENTARC_MALLOC": "glibc", "LATENTARC_MALLOC_TRIM": "off"},
    "trim": {"LATENTARC_MALLOC": "glibc"},
    "keep": {"LATENTARC_MALLOC": "keep", "LATENTARC_MALLOC_TRIM": "off"},
    "keep+trim": {"LATENTARC_MALLOC": "keep"},
}

CHILD = """
import resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(2)
from models.registry import get_codec
from pipeline.shard_encode import Batching, Guard, encode_shard
from pipeline.sources import Shard
from models.allocator import keep_freed_memory
keep_freed_memory()  # as a compress worker does
codec = get_codec("msh-n96-v2", 4.0)
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
encode_shard(Shard(sys.argv[3], "s", "s.tar"), sys.argv[2], codec, guard=Guard(size=False),
             batching=Batching(prefetch=True))
r1, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(round(t, 1), round((r1.ru_minflt - r0.ru_minflt) / t), round((r1.ru_utime - r0.ru_utime) / t, 2),
      round((r1.ru_stime - r0.ru_stime) / t, 2), round(hwm / 1024))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "datasets" / "kodak")
    p.add_argument("--rows", type=int, default=48)
    p.add_argument("--pairs", type=int, default=2, help="rounds (each runs every setting once)")
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    args = p.parse_args()
    print("| malloc | seconds | page faults/s | user cores | kernel cores | peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="lar-alloc-") as tmp:
        work = Path(tmp)
        (tar,) = make_tars(args.images, work, 1, args.rows)
        for pair in range(args.pairs):
            for setting in args.settings if pair % 2 == 0 else args.settings[::-1]:
                env = {k: v for k, v in os.environ.items() if not k.startswith("LATENTARC_MALLOC")}
                env.update({"OMP_NUM_THREADS": "2", **SETTINGS[setting]})
                archive = str(work / f"a{pair}{setting}")
                out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), archive, tar],
                                     capture_output=True, text=True, env=env, check=True).stdout.split()
                print(f"| {setting} | " + " | ".join(out[-5:]) + " |", flush=True)


if __name__ == "__main__":
    main()
