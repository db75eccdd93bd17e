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

The tile geometry of the codec lives here, for both of its users, as ``Tile`` lists: the
transforms above go in square cores (``square_tiles``: a fixed core, whatever the device), and
encode-time refinement (models.refine) in the least context area under a pixel cap
(``tile_plan``: its cap depends on the device and on the decoder aimed at).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch

# Tiles of 64 x 64 latents (1024 x 1024 pixels) plus a halo of 4 latents (64 pixels). g_a's
# receptive field is 61 px (four 5x5 stride-2 convs: 1 + 4 * (1 + 2 + 4 + 8)), a radius of
# 30 px; g_s's is under 2 latents. Whole-image passes below TILE_ABOVE_PIXELS are unchanged.
TILE_LATENTS = 64
HALO_LATENTS = 4
TILE_ABOVE_PIXELS = 4 << 20


# (core, context) in latents: ((a, b, c, d), (ia, ib, ic, id)), rows a:b and columns c:d of
# the core, computed from rows ia:ib and columns ic:id.
Tile = tuple[tuple[int, int, int, int], tuple[int, int, int, int]]


def bands(n: int, parts: int, halo: int) -> list[tuple[int, int, int, int]]:
    """``n`` latents in ``parts`` even cores: (core start, end, context start, end)."""
    cuts = [n * k // parts for k in range(parts + 1)]
    return [(a, b, max(0, a - halo), min(n, b + halo)) for a, b in itertools.pairwise(cuts)]


def square_tiles(n_h: int, n_w: int, core: int, halo: int) -> list[Tile]:
    """Cores of ``core`` x ``core`` latents from the top-left corner (the last row and column
    shorter), each with ``halo`` latents of context on every side, clipped at the border."""
    def runs(n: int) -> list[tuple[int, int, int, int]]:
        return [(a, min(n, a + core), max(0, a - halo), min(n, a + core + halo))
                for a in range(0, n, core)]

    return [((a, b, c, d), (ia, ib, ic, id_)) for a, b, ia, ib in runs(n_h)
            for c, d, ic, id_ in runs(n_w)]


def tile_plan(n_h: int, n_w: int, max_pixels: int, halo: int) -> list[Tile] | None:
    """Cores and contexts covering an ``n_h`` x ``n_w`` latent grid so that no context (core
    plus ``halo`` latents on every side, clipped at the border) exceeds ``max_pixels``
    full-resolution pixels; None when the whole image fits in one pass.

    Of the even splits into rows x columns of cores that respect the cap, the one with the
    least context area in all, which is what a refinement step costs: a 1024 x 1024 image aimed
    at the realistic decoder (halo 9, 0.52 MP) goes in 2 x 2 tiles, 1.6x its own area, where
    square cores sized for an interior tile would take 3 x 3, 3.3x."""
    if n_h * n_w * 256 <= max_pixels:
        return None
    if n_h > n_w:  # the search below loops over row counts: make that the shorter side
        return [((c, d, a, b), (ic, id_, ia, ib))
                for (a, b, c, d), (ia, ib, ic, id_) in tile_plan(n_w, n_h, max_pixels, halo)]
    cap = max_pixels // 256  # latents
    best: tuple[int, list, list] | None = None
    for parts_h in range(1, n_h + 1):
        rows = bands(n_h, parts_h, halo)
        tall = max(ib - ia for _, _, ia, ib in rows)
        if tall > cap:
            continue
        # the fewest columns that fit is the cheapest; a context is at least its core
        for parts_w in range(-(-n_w // max(1, cap // tall)), n_w + 1):
            cols = bands(n_w, parts_w, halo)
            if tall * max(id_ - ic for _, _, ic, id_ in cols) <= cap:
                break
        else:
            continue
        area = sum(ib - ia for _, _, ia, ib in rows) * sum(id_ - ic for _, _, ic, id_ in cols)
        if best is None or area < best[0]:
            best = (area, rows, cols)
    if best is None:
        raise ValueError(f"refinement tiles: no tiling of {n_h} x {n_w} latents with a halo of "
                         f"{halo} fits in {max_pixels} pixels")
    _, rows, cols = best
    return [((a, b, c, d), (ia, ib, ic, id_)) for a, b, ia, ib in rows for c, d, ic, id_ in cols]


def tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, unit_in: int,
          unit_out: int, core: int = TILE_LATENTS, halo: int = HALO_LATENTS) -> torch.Tensor:
    """``fn(x)`` for a (1, C, H, W) ``x`` whose H and W are multiples of ``unit_in``, computed
    in tiles of ``core`` grid units with ``halo`` units of context (``square_tiles``); ``fn``
    maps ``unit_in`` input pixels to ``unit_out`` output pixels along each axis."""
    if x.shape[0] != 1:
        raise ValueError("tiled() takes one image at a time")
    n_h, n_w = x.shape[2] // unit_in, x.shape[3] // unit_in
    out: torch.Tensor | None = None
    i, o = unit_in, unit_out
    for (a, b, c, d), (ia, ib, ic, id_) in square_tiles(n_h, n_w, core, halo):
        part = fn(x[:, :, ia * i:ib * i, ic * i:id_ * i])
        if out is None:
            out = part.new_empty((1, part.shape[1], n_h * o, n_w * o))
        out[:, :, a * o:b * o, c * o:d * o] = part[
            :, :, (a - ia) * o:(b - ia) * o, (c - ic) * o:(d - ic) * o]
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
