"""How big a learned codec's analysis (g_a) batch should be on this CPU: time and peak RSS.

Each setting of ``models.learned.BATCH_PIXELS["cpu"]`` runs in a fresh process (so the
kernel's peak RSS, ru_maxrss, is that setting's alone): the first N images of a folder are
encoded with ``encode_batch``, ``--per-call`` images per call as the pipeline passes them, and
the settings alternate over ``--reps`` rounds. Writes ``OUT/results.json`` and
``OUT/results.md``.

    python benchmarks/pipeline/analysis-batch/measure.py --images ../shared/datasets/kodak \\
        --out benchmarks/pipeline/analysis-batch
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
from PIL import Image
sys.path.insert(0, {root!r})
import models.learned as L
L.BATCH_PIXELS["cpu"] = {limit}
torch.set_num_threads({threads})
from models.registry import get_codec
codec = get_codec({codec!r})
files = sorted(p for p in __import__("pathlib").Path({images!r}).iterdir()
               if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:{n}]
imgs = [np.array(Image.open(p).convert("RGB")) for p in files]
ready = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
streams = []
for k in range(0, len(imgs), {per_call}):
    streams += codec.encode_batch(imgs[k:k + {per_call}])
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"seconds": seconds, "ready_mib": ready / 1024, "peak_mib": peak / 1024,
                  "bytes": sum(len(s) for s in streams), "images": len(imgs)}}))
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--codec", default="msh-n96-v2")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--per-call", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limits", type=int, nargs="+", default=[4 << 20, 1 << 20, 1 << 19])
    p.add_argument("--reps", type=int, default=2)
    a = p.parse_args()
    rows = []
    for rep in range(a.reps):
        for limit in a.limits:
            code = CHILD.format(root=str(ROOT), limit=limit, threads=a.threads, codec=a.codec,
                                images=str(a.images.resolve()), n=a.n, per_call=a.per_call)
            out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                 text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            r = {"rep": rep, "batch_pixels": limit, **json.loads(out.stdout.strip().splitlines()[-1])}
            rows.append(r)
            print(r, flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    cmd = "python benchmarks/pipeline/analysis-batch/measure.py " + " ".join(sys.argv[1:])
    (a.out / "results.json").write_text(json.dumps({"command": cmd, "rows": rows}, indent=2) + "\n")
    lines = [f"# Analysis batch of `{a.codec}` on this CPU", "", f"Command: `{cmd}`", "",
             f"{a.n} images encoded, {a.per_call} per `encode_batch` call, torch threads {a.threads}; "
             "each row a fresh process. Peak = the process's ru_maxrss (after loading the codec "
             "and the images: ready).", "",
             "| rep | BATCH_PIXELS (cpu) | images per g_a pass (768x512) | seconds | ready MiB "
             "| peak MiB | bytes |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        per_pass = min(a.per_call, max(1, r["batch_pixels"] // (768 * 512)))
        lines.append(f"| {r['rep']} | {r['batch_pixels']} | {per_pass} | {r['seconds']:.2f} | "
                     f"{r['ready_mib']:.0f} | {r['peak_mib']:.0f} | {r['bytes']} |")
    (a.out / "results.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
