"""Alternated worker_bench runs with PSNR computed through OpenBLAS (``np.dot``, the code before
session 10) and without (today's ``pipeline.images.psnr``), in one process on one machine.

Why: on the 2-core CPU machine a ``np.dot`` between two decodes left OpenBLAS threads spinning,
and the next decode ran 28 % slower (benchmarks/pipeline/profile/README.md, session 10). This
checks whether the same explains the GPU worker's lower efficiency in session 9 (0.87 / 0.75
against 1.01 in session 5), where the machine has 16 cores and OpenBLAS as many threads.

    python benchmarks/pipeline/gpu/blas_ab.py --images data/device/kodak12 --device cuda \
        --reps 2 --out $OUT/blas-ab

Writes ``<out>/<rep>-<variant>/worker_bench.json`` per run and prints each run's table.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import pipeline.images as images  # noqa: E402
import pipeline.shard_encode as shard_encode  # noqa: E402
from jobs import worker_bench  # noqa: E402

_SLICE = 1 << 20


def psnr_blas(reference: np.ndarray, decoded: np.ndarray) -> float:
    """The PSNR before session 10, verbatim in effect: float64 ``np.dot`` per slice."""
    a, b = reference.reshape(-1), decoded.reshape(-1)
    total = 0.0
    for start in range(0, a.size, _SLICE):
        d = np.subtract(a[start:start + _SLICE], b[start:start + _SLICE],
                        dtype=np.int16).astype(np.float64)
        total += float(np.dot(d, d))
    mse = total / a.size
    return math.inf if mse == 0 else 10.0 * math.log10(255.0 * 255.0 / mse)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True)
    parser.add_argument("--codec", default="msh-n96-v2")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--batches", default="8 32")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    current = images.psnr
    for rep in range(args.reps):
        order = ("blas", "integer") if rep % 2 == 0 else ("integer", "blas")
        for variant in order:
            fn = psnr_blas if variant == "blas" else current
            images.psnr = shard_encode.psnr = fn  # bare_loop imports it from pipeline.images
            worker_bench.main(["--images", args.images, "--codec", args.codec, "--device",
                               args.device, "--n", str(args.n), "--rows", str(args.n // 2),
                               "--batches", *args.batches.split(),
                               "--out", str(args.out / f"{rep}-{variant}")])
    images.psnr = shard_encode.psnr = current
    return 0


if __name__ == "__main__":
    sys.exit(main())
