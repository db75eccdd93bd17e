"""Tiled refinement against the whole-image pass: how close is the assembled gradient?

    python benchmarks/kodak/latent-refinement/tiled_gradient.py [--image kodim23.png]

For msh-n96-v2 at quality 0 on one Kodak image, computes ``models.refine._whole_gradient`` once
and ``_tiled_gradient`` under two pass caps (26 x 26 and 34 x 34 latents for the realistic
g_s, 16 x 16 and 26 x 26 for the faithful one; ``tiling.tile_plan`` picks the tiles) and loss
margins of half the halo, 6 latents and the whole halo, for three aims: the faithful g_s (rate
+ MSE), the realistic g_s with LPIPS-alex (what --effort-for realistic runs) and the realistic
g_s without it. Prints the relative error and the cosine against the whole-image gradient.
``--realistic-halos 9 13 18`` also tries other halos for the realistic g_s with LPIPS (its own
is 9 latents; its receptive field's radius is about 6.4), margin = halo, on fixed grids of
cores (2 x 2 and 3 x 4), so that only the halo changes; it runs only those trials.
Kodak is evaluation data; nothing is trained here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from models import refine, tiling  # noqa: E402
from models.learned import _lpips_alex  # noqa: E402
from models.registry import DEFAULT_CODEC, get_codec  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default="kodim23.png")
    parser.add_argument("--realistic-halos", type=int, nargs="*", default=[],
                        help="extra halos (latents) for the realistic g_s with LPIPS")
    args = parser.parse_args()
    torch.set_num_threads(2)
    path = ROOT.parent / "shared/datasets/kodak" / args.image
    image = np.asarray(Image.open(path).convert("RGB"))
    codec = get_codec(DEFAULT_CODEC, 0.0, decoder="realistic")
    m = codec.model
    x = torch.tensor(image).permute(2, 0, 1)[None].float() / 255
    gain, _ = m.net.gains(torch.tensor([codec._quality_code() / 1000.0 - 1.0]))
    with torch.no_grad():
        y = m.net.g_a(x) * gain
        z = torch.round(m.net.h_a(y)).to(torch.int64)
    mean, scale, inv_gain, lmbda = codec.refine_inputs(*m.entropy_parameters(z))
    lpips = _lpips_alex()
    for name, g_s, metric in (("faithful", m.net.g_s, None),
                              ("realistic + LPIPS", codec.synthesis, lpips),
                              ("realistic, no LPIPS", codec.synthesis, None)):
        halo = int(getattr(g_s, "halo_latents", refine.HALO_LATENTS))
        with torch.enable_grad():
            whole = refine._whole_gradient(g_s, x, y.clone().requires_grad_(True), mean, scale,
                                           inv_gain, lmbda, metric, refine.PERCEPTUAL_WEIGHT)
        if args.realistic_halos and metric is None:
            continue
        for side in () if args.realistic_halos else (26, 34) if halo > 4 else (16, 26):
            tiles = tiling.tile_plan(y.shape[2], y.shape[3], side * side * 256, halo)
            for margin in sorted({halo // 2, 6, halo}):
                with torch.enable_grad():
                    tiled = refine._tiled_gradient(g_s, x, y.clone(), mean, scale, inv_gain,
                                                   lmbda, metric, refine.PERCEPTUAL_WEIGHT,
                                                   tiles, margin)
                rel = ((tiled - whole).norm() / whole.norm()).item()
                cos = torch.nn.functional.cosine_similarity(tiled.flatten(), whole.flatten(),
                                                            dim=0).item()
                print(f"{name:20s} halo {halo} cap {side}x{side} ({len(tiles):2d} tiles) margin "
                      f"{margin}: relative error {rel:.2e}, cosine {cos:.5f}", flush=True)
        if metric is not None:
            for grid in ((2, 2), (3, 4)):
                for wider in args.realistic_halos:
                    _report(name, g_s, x, y, mean, scale, inv_gain, lmbda, metric, whole, grid,
                            wider)


def _report(name, g_s, x, y, mean, scale, inv_gain, lmbda, metric, whole, grid, halo) -> None:
    """The tiled gradient over a fixed ``grid`` of cores with ``halo`` (margin = halo) against
    the whole-image one, and what its tiles' contexts cost: their latent area over the image's."""
    rows = tiling.bands(y.shape[2], grid[0], halo)
    cols = tiling.bands(y.shape[3], grid[1], halo)
    tiles = [((a, b, c, d), (ia, ib, ic, id_)) for a, b, ia, ib in rows for c, d, ic, id_ in cols]
    with torch.enable_grad():
        tiled = refine._tiled_gradient(g_s, x, y.clone(), mean, scale, inv_gain, lmbda, metric,
                                       refine.PERCEPTUAL_WEIGHT, tiles, halo)
    rel = ((tiled - whole).norm() / whole.norm()).item()
    cos = torch.nn.functional.cosine_similarity(tiled.flatten(), whole.flatten(), dim=0).item()
    area = sum((ib - ia) * (id_ - ic) for _, (ia, ib, ic, id_) in tiles) / (y.shape[2] * y.shape[3])
    print(f"{name:20s} halo {halo} grid {grid[0]}x{grid[1]} (contexts {area:.2f}x the latent) "
          f"margin {halo}: relative error {rel:.2e}, cosine {cos:.5f}", flush=True)


if __name__ == "__main__":
    main()
