"""Peak memory of one compress worker's shard loop, by shard size, without Ray.

    python benchmarks/pipeline/batch-memory/measure.py [--repo CHECKOUT] [--images DIR]
        [--env NAME=VALUE ...] [--layouts ...] [--codec ID] [--quality Q] [--row-group-mib M]
        [--threads N] [--prefetch on|off] [--check-thread on|off] [--batch-samples N]

For each layout (six 8-row shards one after another; one 48-row shard; one 96-row shard) a
fresh Python process loads msh-n96-v2 (quality 4, `--threads` torch threads, default 2) and runs
``encode_shard`` (reader thread on unless ``--prefetch off``, size guard off) over tars of Kodak
images taken in order, then prints its
VmHWM (the kernel's peak RSS since the process started) and the seconds the shards took.
``--layouts`` takes more, as ``SHARDSxROWS`` (``64x8 1x256``); ``--codec``/``--quality`` pick
another codec (session 11: webp); ``--row-group-mib`` changes the row-group cap in the child.
``--batch-samples`` sets the codec batch (session 18), ``--check-thread off`` decodes for PSNR in
the codec's thread (session 20; default on, as the package). The child's environment has
``ARROW_DEFAULT_MEMORY_POOL=system``, as a worker's has since session 18, unless ``--env``
names another pool (``ARROW_DEFAULT_MEMORY_POOL=mimalloc``: Arrow's default). ``--repo``
imports the package from another checkout (a ``git worktree`` of an older commit), so one
machine compares two versions. Why it matters: an 8-row shard never fills an 8-sample codec
batch (the reader ramps 1, 2, 4, then 1), so whatever a worker holds per batch shows up as
"memory that grows with shard size" in the pipeline benchmark.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
LAYOUTS = {"6 x 8 rows": (6, 8), "1 x 48 rows": (1, 48), "1 x 96 rows": (1, 96)}

CHILD = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(int(sys.argv[6]))
from models.registry import get_codec
from pipeline.shard_encode import Batching, Guard, encode_shard
from pipeline.sources import Shard
from models.allocator import keep_freed_memory
keep_freed_memory()  # as a compress worker does
import pipeline.shard_encode
if sys.argv[3] != "-":
    pipeline.shard_encode.ROW_GROUP_BYTES = int(float(sys.argv[3]) * (1 << 20))
codec = get_codec(sys.argv[4], None if sys.argv[5] == "-" else float(sys.argv[5]))
prefetch = sys.argv[7] == "on"
started = time.perf_counter()
for i, tar in enumerate(sys.argv[10:]):
    encode_shard(Shard(tar, f"s{i}", Path(tar).name), sys.argv[2], codec, guard=Guard(size=False),
                 batching=Batching(samples=int(sys.argv[8]), prefetch=prefetch,
                                   check_thread=sys.argv[9] == "on"))
seconds = time.perf_counter() - started
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(round(hwm / 1024), round(seconds, 1))
"""


def make_tars(images: Path, work: Path, shards: int, rows: int) -> list[str]:
    files = sorted(images.glob("*.png"))
    out = []
    for s in range(shards):
        path = work / f"{shards}x{rows}-{s}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(s * rows, (s + 1) * rows):
                data = files[i % len(files)].read_bytes()
                info = tarfile.TarInfo(f"i{i:04d}.png")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        out.append(str(path))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", type=Path, default=ROOT, help="checkout to import latentarc from")
    p.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "datasets" / "kodak")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="set in each child's environment, e.g. LATENTARC_MALLOC_TRIM=off")
    p.add_argument("--layouts", nargs="+", default=list(LAYOUTS),
                   help=f"{', '.join(LAYOUTS)}, or SHARDSxROWS")
    p.add_argument("--codec", default="msh-n96-v2")
    p.add_argument("--quality", default="4", help="'-': the codec's default")
    p.add_argument("--row-group-mib", default="-", help="row-group cap in MiB ('-': the package's)")
    p.add_argument("--threads", type=int, default=2, help="torch threads in the child (default 2)")
    p.add_argument("--prefetch", choices=("on", "off"), default="on",
                   help="the reader thread that prepares the next batch (default on)")
    p.add_argument("--batch-samples", type=int, default=0,
                   help="images per codec batch (default 0: the codec's own, else 8)")
    p.add_argument("--check-thread", choices=("on", "off"), default="on",
                   help="decode for PSNR in a thread beside the next batch's encode (default on)")
    args = p.parse_args()
    rev = subprocess.run(["git", "-C", str(args.repo), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    print(f"latentarc at {rev} ({args.repo}); env: {' '.join(args.env) or 'as inherited'}; "
          f"codec {args.codec} quality {args.quality}; row-group cap MiB {args.row_group_mib}; "
          f"{args.threads} torch thread(s); prefetch {args.prefetch}; "
          f"check thread {args.check_thread}; "
          f"batch samples {args.batch_samples or 'default'}")
    print("| layout | peak RSS (VmHWM) MiB | seconds |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="lar-bm-") as tmp:
        work = Path(tmp)
        for name in args.layouts:
            shards, rows = LAYOUTS.get(name) or map(int, re.fullmatch(r"(\d+)x(\d+)", name).groups())
            tars = make_tars(args.images, work, shards, rows)
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
                   "ARROW_DEFAULT_MEMORY_POOL": "system",  # as in a worker (pipeline.runner.worker_env)
                   **dict(e.split("=", 1) for e in args.env)}
            archive = str(work / f"arc-{shards}x{rows}")
            out = subprocess.run([sys.executable, "-c", CHILD, str(args.repo), archive,
                                  args.row_group_mib, args.codec, args.quality, str(args.threads),
                                  args.prefetch, str(args.batch_samples), args.check_thread,
                                  *tars],
                                 capture_output=True, text=True, env=env, check=True).stdout.split()
            print(f"| {name} | {out[-2]} | {out[-1]} |", flush=True)


if __name__ == "__main__":
    main()
