"""A worker's memory when each shard's reader runs on a fresh thread vs a reused one.

Restore decodes rows in its reader thread. This decodes one Kodak image twice per "shard", for
12 shards, in one of two ways, each in a fresh process: ``fresh`` starts a new thread per shard
(what ``pipeline.prefetch`` did before), ``reused`` goes through ``pipeline.prefetch`` (one
long-lived reader thread). Prints the RSS after every third shard and the process's peak.

    python benchmarks/pipeline/reader-threads/measure.py --image ../shared/datasets/kodak/kodim01.png
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

CHILD = r"""
import resource, sys, threading
import numpy as np, torch
from PIL import Image
sys.path.insert(0, {root!r})
from models.registry import get_codec
from pipeline.prefetch import prefetch
torch.set_num_threads(2)
codec = get_codec({codec!r})
stream = codec.encode_batch([np.array(Image.open({image!r}).convert("RGB"))])[0]

def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024

def rows():
    for _ in range(2):
        yield codec.decode_batch([stream])[0]

for shard in range(12):
    if {mode!r} == "fresh":
        t = threading.Thread(target=lambda: list(rows()))
        t.start()
        t.join()
    else:
        for _ in prefetch(rows(), depth=2):
            pass
    if shard % 3 == 2:
        print(f"{mode}: after shard {{shard + 1}}: RSS {{rss()}} MiB", flush=True)
print(f"{mode}: peak RSS {{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}} MiB")
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", type=Path, required=True)
    p.add_argument("--codec", default="msh-n96-v2")
    a = p.parse_args()
    for mode in ("fresh", "reused"):
        code = CHILD.format(root=str(ROOT), codec=a.codec, image=str(a.image.resolve()), mode=mode)
        subprocess.run([sys.executable, "-c", code], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
