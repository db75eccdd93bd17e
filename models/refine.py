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

import torch
from torch import nn

from models.entropy_models import gaussian_likelihood
from models.layers import ste_round

# Adam step on the latent (gain units). 0.006 lost PSNR at low qualities, and 0.01 and 0.05 were
# worse in earlier trials (benchmarks/kodak/latent-refinement/).
LR = 0.003
# Padded pixels above which an image is encoded without refinement: the synthesis backward pass
# holds full-resolution activations. Peak RSS of one encode on a CPU, effort 0 vs 20: 438 vs
# 795 MiB for a Kodak image, 710 vs 1,473 MiB at 1024x1024 (latent-refinement/memory.py). The
# cap keeps a refining worker under about 1.5 GiB; larger images are coded unrefined.
MAX_PIXELS = 1 << 20
# The same cap for refinement through a realistic decoder, whose wider g_s and LPIPS-alex hold
# more. Peak RSS of one encode, effort 40 for the realistic decoder vs 20 for the faithful one:
# 1,068 vs 818 MiB for a Kodak image (0.39 MP), 2,097 vs 1,481 MiB at 1024x1024
# (latent-refinement/memory.py). Half the pixels keeps it near the faithful cap's 1.5 GiB;
# Kodak-sized images are still refined.
PERCEPTUAL_MAX_PIXELS = 1 << 19
# k in "+ k x LPIPS-alex" for a realistic decoder: 1 and 3 were tried on three held-out crops,
# 3 was better by a point of DISTS (realism-trials/README.md, section 3b).
PERCEPTUAL_WEIGHT = 3.0
# Steps when --effort-for names a realistic decoder and --effort is not given: the setting
# measured (40 steps at LR: realism-trials/README.md, sections 3b and 3c).
PERCEPTUAL_STEPS = 40


def refine_latent(g_s: nn.Module, x: torch.Tensor, y: torch.Tensor, mean: torch.Tensor,
                  scale: torch.Tensor, inv_gain: torch.Tensor, lmbda: float, steps: int,
                  lr: float = LR, perceptual: nn.Module | None = None,
                  weight: float = PERCEPTUAL_WEIGHT) -> torch.Tensor:
    """``steps`` Adam steps on one image's latent ``y`` (1, M, h, w); returns the refined latent.

    ``x``: the unpadded image (1, 3, H, W) in [0, 1]; ``mean``/``scale``: the entropy model's
    parameters for y, as the decoder will derive them; ``g_s``: the decoder aimed at;
    ``perceptual``: a distance ``(x_hat, x) -> (N,)`` (LPIPS-alex) added ``weight`` times, or
    None. Runs with gradients even when called under ``torch.inference_mode`` (tensors made
    there are copied first), and computes no parameter gradients, so other threads may use the
    same modules meanwhile."""
    h, w = x.shape[2], x.shape[3]
    with torch.inference_mode(False), torch.enable_grad():
        x, mean, scale, inv_gain = (t.detach().clone() for t in (x, mean, scale, inv_gain))
        y = y.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([y], lr=lr)
        for _ in range(steps):
            bits = -torch.log2(gaussian_likelihood(y, mean, scale)).sum()
            x_hat = g_s((ste_round(y - mean) + mean) * inv_gain)[..., :h, :w]
            loss = bits / (h * w) + lmbda * 255**2 * torch.mean((x_hat - x) ** 2)
            if perceptual is not None:
                loss = loss + weight * perceptual(x_hat.clamp(0, 1), x).mean()
            (y.grad,) = torch.autograd.grad(loss, [y])
            opt.step()
    return y.detach()
