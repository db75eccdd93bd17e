"""Does the realistic refinement's tile halo change what it produces? One image, end to end.

    python benchmarks/kodak/latent-refinement/halo_outcome.py [--image kodim23.png] [--grid 3x4]

``tiled_gradient.py`` shows that with LPIPS-alex the tiled gradient is approximate (1.8 % off
the whole-image gradient in 2 x 2 tiles with the realistic g_s's halo of 9 latents, 3.7 % in
3 x 4) and that a wider halo narrows it, at the cost of larger tile contexts. This measures
what that does to the refined stream: msh-n96-v2 at quality -1, ``--effort-for realistic``
(40 steps), encoded with the whole image in one pass and with the image's latent cut into a
fixed grid of tiles with halos of 9 and 18 latents; each stream is decoded with the realistic
decoder and scored (bytes, DISTS, LPIPS-vgg, PSNR). A small Kodak image is tiled here only
because the grid is forced; the package tiles above 0.52 MP. Kodak is evaluation data; nothing
is trained here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from models import refine, tiling  # noqa: E402
from models.perceptual import perceptual_scores  # noqa: E402
from models.registry import DEFAULT_CODEC, get_codec  # noqa: E402
from pipeline.images import psnr  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default="kodim23.png")
    parser.add_argument("--grid", default="3x4", help="rows x columns of tile cores")
    parser.add_argument("--halos", type=int, nargs="+", default=[9, 18])
    args = parser.parse_args()
    torch.set_num_threads(2)
    parts_h, parts_w = map(int, args.grid.split("x"))
    image = np.asarray(Image.open(ROOT.parent / "shared/datasets/kodak" / args.image).convert("RGB"))
    codec = get_codec(DEFAULT_CODEC, -1.0, decoder="realistic", effort_for="realistic")
    g_s = codec.refine_synthesis
    own_halo = g_s.halo_latents
    plan = refine.tile_plan

    def fixed_grid(halo: int):
        def tiles(n_h: int, n_w: int, max_pixels: int, _halo: int):
            rows, cols = tiling.bands(n_h, parts_h, halo), tiling.bands(n_w, parts_w, halo)
            return [((a, b, c, d), (ia, ib, ic, id_))
                    for a, b, ia, ib in rows for c, d, ic, id_ in cols]
        return tiles

    cases = [("whole image, one pass", None, lambda *a: None)]
    cases += [(f"{parts_h}x{parts_w} tiles, halo {h}", h, fixed_grid(h)) for h in args.halos]
    print(f"{args.image}, {DEFAULT_CODEC} quality -1, effort {codec.effort} for the realistic "
          f"decoder, decoded with it", flush=True)
    try:
        for name, halo, tiles in cases:
            refine.tile_plan = tiles
            g_s.halo_latents = own_halo if halo is None else halo  # the margin follows it
            started = time.monotonic()
            stream = codec.encode_batch([image])[0]
            seconds = time.monotonic() - started
            decoded = codec.decode_batch([stream])[0].image
            scores = perceptual_scores(image, decoded, ("dists", "lpips-vgg"))
            bpp = 8 * len(stream) / (image.shape[0] * image.shape[1])
            print(f"{name:24s} {len(stream):6d} B  {bpp:.4f} bpp  DISTS {scores['dists']:.4f}  "
                  f"LPIPS-vgg {scores['lpips-vgg']:.4f}  PSNR {psnr(image, decoded):.2f} dB  "
                  f"encode {seconds:.0f} s", flush=True)
    finally:
        refine.tile_plan, g_s.halo_latents = plan, own_halo


if __name__ == "__main__":
    main()
