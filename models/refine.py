"""Encode-time latent refinement for hyperprior codecs (``--effort STEPS``).

The analysis transform's latent is a one-shot guess; a few gradient steps on that one image's
rate-distortion loss (Campos et al. 2019, "Content adaptive optimization for neural image
compression") find a latent that costs fewer bits for the same quality. Only the encoder
changes: the hyper latent z, hence the means and scale indexes the decoder derives exactly
(``models.intnet``), is that of the plain encode, and the refined latent is quantized and coded
as usual, so refined streams decode with the shipped decoder and keep the bitstream format.

Loss per step: bits of the continuous latent under the (fixed) Gaussian entropy model, per
pixel, + lambda * 255^2 * MSE of the faithful synthesis of the rounded latent (straight-through).
lambda is the training lambda at the stream's quality. Measured on Kodak:
benchmarks/kodak-effort/.

Aimed at a realistic decoder (``--effort-for realistic``), the steps run through that decoder's
g_s and add ``PERCEPTUAL_WEIGHT`` x LPIPS-alex (its own training loss) to the loss: the stream is
searched for what that decoder makes of it. The format is still unchanged and the faithful
decoder still reads it, but the symbols now suit one decoder: restored faithfully, such a
stream is about 0.2 dB below an unrefined one of its size (realism-trials/README.md, 3d).
Measured on whole Kodak images: benchmarks/perceptual/kodak-v5/.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.entropy_models import gaussian_likelihood
from models.layers import ste_round
from models.tiling import HALO_LATENTS, Tile, tile_plan

# Adam step on the latent (gain units). 0.006 lost PSNR at low qualities, and 0.01 and 0.05 were
# worse in earlier trials (benchmarks/kodak/latent-refinement/).
LR = 0.003
# Padded pixels one refinement pass may hold: the synthesis backward pass holds full-resolution
# activations. Peak RSS of one encode on a CPU, effort 0 vs 20: 438 vs 795 MiB for a Kodak image,
# 710 vs 1,473 MiB at 1024x1024 (latent-refinement/memory.py). Larger images are refined tile by
# tile (``tile_plan``), each tile with its context at most this, which bounds the synthesis and
# LPIPS activations whatever the photo's size. What still grows with the photo is the whole
# latent's state (y, its gradient, Adam's two buffers, mean, scale): about 20 bytes per pixel.
MAX_PIXELS = 1 << 20
# The same cap for refinement through a realistic decoder, whose wider g_s and LPIPS-alex hold
# more. Peak RSS of one encode, effort 40 for the realistic decoder vs 20 for the faithful one:
# 1,068 vs 818 MiB for a Kodak image (0.39 MP), 2,097 vs 1,481 MiB at 1024x1024
# (latent-refinement/memory.py). Half the pixels keeps it near the faithful cap's 1.5 GiB;
# Kodak-sized images are refined in one pass.
PERCEPTUAL_MAX_PIXELS = 1 << 19
# On a GPU, PERCEPTUAL_MAX_PIXELS (set for a CPU worker's memory) cuts the refinement into passes
# too small to keep the device busy. Aimed at the realistic decoder on an H200: a 4 MP photo took
# 12.4 s in 0.52 MP tiles and 1.4 s in one pass of this size, a 16 MP photo 41.8 s against 7.1 s;
# the passes peaked at 5.0 GB of GPU memory against 1.7 GB (latent-refinement/README.md, session
# 21). Refinement for the faithful decoder keeps MAX_PIXELS there: not measured larger, and it
# cost 0.2 s per MP in all at 16 MP.
GPU_PERCEPTUAL_MAX_PIXELS = 1 << 22
# Images above this many pixels (unpadded) are coded unrefined by a CPU worker, whatever --effort
# says (``--effort-max-mp``'s default there). Refinement's memory is bounded by the tiles above,
# but its time grows with the pixels: on 2 CPU cores about 30 s per MP for 20 faithful steps
# (12 s per Kodak image, benchmarks/kodak-effort/) and about 225 s per MP for 40 steps aimed at
# the realistic decoder (benchmarks/perceptual/wikipedia-tiled/: 1 MP photos in 4 tiles), so one
# 24 MP photo would hold a worker for 12 or 90 minutes. 16 MP refines the usual camera and phone
# photos (12 MP) and bounds one image's refinement to about an hour on such a CPU at the
# realistic setting. A choice, not an optimum. A GPU worker has no such default limit
# (``max_refined_pixels``).
MAX_REFINED_PIXELS = 16_000_000
# k in "+ k x LPIPS-alex" for a realistic decoder: 1 and 3 were tried on three held-out crops,
# 3 was better by a point of DISTS (realism-trials/README.md, section 3b).
PERCEPTUAL_WEIGHT = 3.0
# Steps when --effort-for names a realistic decoder and --effort is not given: the setting
# measured (40 steps at LR: realism-trials/README.md, sections 3b and 3c).
PERCEPTUAL_STEPS = 40


def pass_max_pixels(perceptual: bool, device_type: str) -> int:
    """Padded pixels one refinement pass holds on a device ("cpu", "cuda"): larger images are
    refined tile by tile. ``perceptual``: the refinement aims at a realistic decoder."""
    if not perceptual:
        return MAX_PIXELS
    return PERCEPTUAL_MAX_PIXELS if device_type == "cpu" else GPU_PERCEPTUAL_MAX_PIXELS


def max_refined_pixels(device_type: str) -> float:
    """``--effort-max-mp``'s default on a device: ``MAX_REFINED_PIXELS`` on a CPU, no limit on
    a GPU. There, with GPU_PERCEPTUAL_MAX_PIXELS, the realistic setting took 0.35-0.44 s per MP
    on an H200 (7.1 s for 16 MP), so the largest image compress codes by default (40 MP,
    ``--max-pixels``) would take about 18 s; a limit would only leave large photos unrefined."""
    return MAX_REFINED_PIXELS if device_type == "cpu" else math.inf


def _whole_gradient(g_s: nn.Module, x: torch.Tensor, y: torch.Tensor, mean: torch.Tensor,
                    scale: torch.Tensor, inv_gain: torch.Tensor, lmbda: float,
                    perceptual: nn.Module | None, weight: float) -> torch.Tensor:
    """d loss / d y for the whole image in one pass (``y`` requires grad)."""
    h, w = x.shape[2], x.shape[3]
    bits = -torch.log2(gaussian_likelihood(y, mean, scale)).sum()
    x_hat = g_s((ste_round(y - mean) + mean) * inv_gain)[..., :h, :w]
    loss = bits / (h * w) + lmbda * 255**2 * torch.mean((x_hat - x) ** 2)
    if perceptual is not None:
        loss = loss + weight * perceptual(x_hat.clamp(0, 1), x).mean()
    (grad,) = torch.autograd.grad(loss, [y])
    return grad


def _tiled_gradient(g_s: nn.Module, x: torch.Tensor, y: torch.Tensor, mean: torch.Tensor,
                    scale: torch.Tensor, inv_gain: torch.Tensor, lmbda: float,
                    perceptual: nn.Module | None, weight: float, tiles: list[Tile],
                    margin: int) -> torch.Tensor:
    """The whole-image loss's gradient, assembled tile by tile: each tile decodes its context,
    and its core's latents get the gradient of their own bits plus the distortion of the pixels
    within ``margin`` latents of the core (the pixels they shape), normalised by the whole
    image's pixel count as in ``_whole_gradient``. LPIPS, a spatial mean over a deep network, is
    taken on each tile's region and weighted by its area. Measured against ``_whole_gradient``
    on kodim23, msh-n96-v2 at quality 0, in 2 to 24 tiles
    (benchmarks/kodak/latent-refinement/tiled_gradient.py): with the margin equal to the halo,
    the faithful g_s's gradient agrees to 1e-6 (relative), the realistic g_s's to 1e-6 without
    LPIPS and to 0.9 % (2 tiles) and 3.6 % (12 tiles) with it, cosine 0.99995 or more; half
    the margin gave 2.2 and 9.8 %. tests/test_tiled_refinement.py checks both."""
    h, w = x.shape[2], x.shape[3]
    grad = torch.zeros_like(y)
    for (a, b, c, d), (ia, ib, ic, id_) in tiles:
        y_t = y[:, :, ia:ib, ic:id_].detach().requires_grad_(True)
        mean_t = mean[:, :, ia:ib, ic:id_]
        core = (slice(None), slice(None), slice(a - ia, b - ia), slice(c - ic, d - ic))
        bits = -torch.log2(gaussian_likelihood(y_t[core], mean_t[core],
                                               scale[:, :, a:b, c:d])).sum()
        x_hat = g_s((ste_round(y_t - mean_t) + mean_t) * inv_gain)
        # the loss region: the core plus a margin, in pixels of the unpadded image
        r0, r1 = max(ia, a - margin) * 16, min(ib * 16, (b + margin) * 16, h)
        c0, c1 = max(ic, c - margin) * 16, min(id_ * 16, (d + margin) * 16, w)
        x_hat = x_hat[..., r0 - ia * 16:r1 - ia * 16, c0 - ic * 16:c1 - ic * 16]
        x_ref = x[..., r0:r1, c0:c1].clone()  # (x may be an inference tensor)
        loss = bits / (h * w) + lmbda * 255**2 * torch.sum((x_hat - x_ref) ** 2) / (3 * h * w)
        if perceptual is not None:
            area = (r1 - r0) * (c1 - c0) / (h * w)
            loss = loss + weight * area * perceptual(x_hat.clamp(0, 1), x_ref).mean()
        (g,) = torch.autograd.grad(loss, [y_t])
        grad[core[:2] + (slice(a, b), slice(c, d))] = g[core]
    return grad


def refine_latent(g_s: nn.Module, x: torch.Tensor, y: torch.Tensor, mean: torch.Tensor,
                  scale: torch.Tensor, inv_gain: torch.Tensor, lmbda: float, steps: int,
                  lr: float = LR, perceptual: nn.Module | None = None,
                  weight: float = PERCEPTUAL_WEIGHT, max_pixels: int | None = None,
                  cosine: bool = False) -> torch.Tensor:
    """``steps`` Adam steps on one image's latent ``y`` (1, M, h, w); returns the refined latent.

    ``x``: the unpadded image (1, 3, H, W) in [0, 1]; ``mean``/``scale``: the entropy model's
    parameters for y, as the decoder will derive them; ``g_s``: the decoder aimed at;
    ``perceptual``: a distance ``(x_hat, x) -> (N,)`` (LPIPS-alex) added ``weight`` times, or
    None. ``max_pixels``: padded pixels one pass may hold; a larger image's gradient is
    computed in tiles (``tile_plan``; one Adam step on the whole latent still follows each
    gradient, so the steps are those of the whole-image refinement). ``cosine`` decays the
    step size from ``lr`` to a tenth of it over the steps (a trial setting). Runs with gradients even
    when called under ``torch.inference_mode`` (tensors made there are copied first), and
    computes no parameter gradients, so other threads may use the same modules meanwhile."""
    halo = max(HALO_LATENTS, int(getattr(g_s, "halo_latents", HALO_LATENTS)))  # as maybe_tiled
    tiles = None if max_pixels is None else tile_plan(y.shape[2], y.shape[3], max_pixels, halo)
    with torch.inference_mode(False), torch.enable_grad():
        mean, scale, inv_gain = (t.detach().clone() for t in (mean, scale, inv_gain))
        # (tiles copy their own region of the image: no whole-image copy for a large photo)
        x = x.detach().clone() if tiles is None else x
        y = y.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([y], lr=lr)
        decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1), lr / 10) if cosine else None
        for _ in range(steps):
            if tiles is None:
                y.grad = _whole_gradient(g_s, x, y, mean, scale, inv_gain, lmbda, perceptual,
                                         weight)
            else:
                y.grad = _tiled_gradient(g_s, x, y, mean, scale, inv_gain, lmbda, perceptual,
                                         weight, tiles, halo)
            opt.step()
            if decay is not None:
                decay.step()
    return y.detach()
