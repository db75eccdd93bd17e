"""Run a fully convolutional transform over a large image tile by tile, with halos.

Why: a learned codec's float transforms hold activations of N channels at half the image's
resolution; for msh-n96 each layer's output is about 0.1 GB per megapixel in float32 (the
whole-image peak measured 0.4 GB per megapixel, benchmarks/pipeline/tiling), so a 24 MP photo
would need about 10 GB. Tiled, a transform never holds more than one tile's
activations, so the memory a worker needs no longer grows with the photo.

Each tile is computed on its core plus ``halo`` grid units of context on every side (clipped
at the image border, where the whole-image pass sees the same zero padding), and only the
core of the output is kept. With the halo at least the transform's receptive-field radius, a
tile's core comes out as in the whole-image pass up to float rounding (different kernel
blocking sums in a different order). That is harmless here by design: only integers (latent
symbols, entropy parameters from models.intnet) cross from encoder to decoder; g_a's output is
rounded to symbols (a value within float noise of a rounding boundary may land either side,
which costs nothing but an encoder's choice), and g_s's pixels may differ by a level, as they
may across machines anyway.

Grid units: g_a maps 16 input pixels to 1 latent, g_s 1 latent to 16 pixels; a tile's core and
halo are given in the coarser of the two (latents), so tiles line up with the stride exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# Tiles of 64 x 64 latents (1024 x 1024 pixels) plus a halo of 4 latents (64 pixels). g_a's
# receptive field is 61 px (four 5x5 stride-2 convs: 1 + 4 * (1 + 2 + 4 + 8)), a radius of
# 30 px; g_s's is under 2 latents. Whole-image passes below TILE_ABOVE_PIXELS are unchanged.
TILE_LATENTS = 64
HALO_LATENTS = 4
TILE_ABOVE_PIXELS = 4 << 20


def tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, unit_in: int,
          unit_out: int, core: int = TILE_LATENTS, halo: int = HALO_LATENTS) -> torch.Tensor:
    """``fn(x)`` for a (1, C, H, W) ``x`` whose H and W are multiples of ``unit_in``, computed
    in tiles of ``core`` grid units with ``halo`` units of context; ``fn`` maps ``unit_in``
    input pixels to ``unit_out`` output pixels along each axis."""
    if x.shape[0] != 1:
        raise ValueError("tiled() takes one image at a time")
    n_h, n_w = x.shape[2] // unit_in, x.shape[3] // unit_in
    out: torch.Tensor | None = None
    for a in range(0, n_h, core):
        b = min(n_h, a + core)
        ia, ib = max(0, a - halo), min(n_h, b + halo)
        for c in range(0, n_w, core):
            d = min(n_w, c + core)
            ic, id_ = max(0, c - halo), min(n_w, d + halo)
            part = fn(x[:, :, ia * unit_in:ib * unit_in, ic * unit_in:id_ * unit_in])
            if out is None:
                out = part.new_empty((1, part.shape[1], n_h * unit_out, n_w * unit_out))
            out[:, :, a * unit_out:b * unit_out, c * unit_out:d * unit_out] = part[
                :, :, (a - ia) * unit_out:(b - ia) * unit_out, (c - ic) * unit_out:(d - ic) * unit_out]
            del part
    assert out is not None
    return out


def maybe_tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, unit_in: int,
                unit_out: int, pixels: int) -> torch.Tensor:
    """``fn(x)`` in one pass for images up to TILE_ABOVE_PIXELS (``pixels``: the image's, in
    full-resolution pixels), tiled above it. Small images keep their exact whole-image
    arithmetic, so stored bitstreams and benchmarks of them do not change."""
    if pixels <= TILE_ABOVE_PIXELS:
        return fn(x)
    # a transform with a wider receptive field (models.synthesis) says how much context it needs
    halo = max(HALO_LATENTS, int(getattr(fn, "halo_latents", HALO_LATENTS)))
    return tiled(fn, x, unit_in, unit_out, TILE_LATENTS, halo)
