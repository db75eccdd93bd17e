"""Trials of the codec's own ``--effort`` (``models.refine``) on a few Kodak images.

    python benchmarks/kodak/latent-refinement/effort_trials.py STEPS [LR] [IMAGES] [QUALITIES]

Encodes each image at each quality with the default codec and STEPS refinement steps (Adam
step LR, default ``models.refine.LR``), decodes with the codec and prints real bpp, PSNR and
encode seconds. STEPS 0 is the plain encode. Defaults: kodim01,kodim15 at qualities 1,4,7.
Two torch threads.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from models import refine  # noqa: E402
from models.registry import DEFAULT_CODEC, get_codec  # noqa: E402
from pipeline.images import psnr  # noqa: E402


def main() -> None:
    torch.set_num_threads(2)
    steps = int(sys.argv[1])
    if len(sys.argv) > 2:
        refine.LR = float(sys.argv[2])
    names = (sys.argv[3] if len(sys.argv) > 3 else "kodim01,kodim15").split(",")
    qualities = [float(q) for q in (sys.argv[4] if len(sys.argv) > 4 else "1,4,7").split(",")]
    for name in names:
        path = ROOT.parent / "shared" / "datasets" / "kodak" / f"{name}.png"
        image = np.asarray(Image.open(path).convert("RGB"))
        for q in qualities:
            codec = get_codec(DEFAULT_CODEC, q, effort=steps)
            t0 = time.perf_counter()
            stream = codec.encode_batch([image])[0]
            seconds = time.perf_counter() - t0
            decoded = codec.decode_batch([stream])[0].image
            print(f"{name} q={q:g} steps={steps} lr={refine.LR:g}: "
                  f"{8 * len(stream) / image[..., 0].size:.4f} bpp {psnr(image, decoded):.3f} dB "
                  f"{seconds:.1f} s", flush=True)


if __name__ == "__main__":
    main()
