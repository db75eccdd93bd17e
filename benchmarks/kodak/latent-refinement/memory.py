"""Peak RSS of one encode with and without --effort (models.refine.MAX_PIXELS's reason).

    python benchmarks/kodak/latent-refinement/memory.py EFFORT kodak|1mp|1mp-whole|4mp [faithful|realistic]

Encodes kodim01 (512x768), or a 1024x1024 (1mp) or 2048x2048 (4mp) tiling of it, with
msh-n96-v2 at quality 4, after a small warm-up encode, and prints the process's peak RSS
before and after. Run each case in a fresh process. The third argument is --effort-for
(default faithful); "realistic" sets the reason for models.refine.PERCEPTUAL_MAX_PIXELS. "1mp"
refines as the package does (above the cap, in tiles, since session 17); "1mp-whole" lifts the
cap, for a whole-image pass.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from models.registry import DEFAULT_CODEC, get_codec  # noqa: E402


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    torch.set_num_threads(2)
    effort, size = int(sys.argv[1]), sys.argv[2]
    effort_for = sys.argv[3] if len(sys.argv) > 3 else "faithful"
    image = np.asarray(Image.open(ROOT.parent / "shared/datasets/kodak/kodim01.png").convert("RGB"))
    if size.startswith("1mp"):
        image = np.ascontiguousarray(np.tile(image, (2, 2, 1))[:1024, :1024])
    if size == "4mp":
        image = np.ascontiguousarray(np.tile(image, (4, 3, 1))[:2048, :2048])
    if size == "1mp-whole":
        from models import refine

        refine.MAX_PIXELS = refine.PERCEPTUAL_MAX_PIXELS = 1 << 20
    codec = get_codec(DEFAULT_CODEC, 4.0, effort=effort, effort_for=effort_for)
    codec.encode_batch([image[:64, :64]])
    before = peak_mib()
    codec.encode_batch([image])
    print(f"effort {effort} for {effort_for}, {image.shape[1]}x{image.shape[0]}: peak RSS "
          f"{before:.0f} MiB after warm-up, {peak_mib():.0f} MiB after the encode")


if __name__ == "__main__":
    main()
