"""A small conditional patch discriminator for GAN-training a codec's synthesis transform.

After HiFiC (Mentzer et al. 2020, "High-Fidelity Generative Image Compression") and Agustsson
et al. 2019 ("Generative Adversarial Networks for Extreme Learned Image Compression"): the
discriminator sees the image together with the quantized latent the decoder was given, so it
judges "is this a plausible image *for this bitstream*" rather than "is this a plausible image".
Without the condition, the cheapest way for the decoder to look real is to invent content that
the bitstream does not support; with it, realism is only rewarded where it is consistent with
what was transmitted.

Kept small on purpose (three strided convolutions, 32-64-128 channels by default) so that a
training step stays around a second on one CPU thread; HiFiC's own is 64-512 channels.
``norm="spectral"`` wraps every convolution in spectral normalisation (Miyato et al. 2018; HiFiC
does) and bounds the discriminator's Lipschitz constant, at the price of a slow start: measured
here, a spectrally normalised D had not begun to separate real crops from the faithful decoder's
after 150 steps at lr 2e-3, while the plain one (``norm="none"``) separates them within 200-300
steps at lr 2e-4. For a CPU budget of a few thousand steps the plain D, a small adversarial
weight and the MSE + LPIPS anchor are what is used (``jobs.train_gan``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class PatchDiscriminator(nn.Module):
    """Image (B, 3, H, W) in [0, 1], optional latent (B, C, H/f, W/f) -> patch logits.

    ``latent_channels=0`` makes it unconditional. ``latent_stride`` is the synthesis transform's
    upsampling factor (16 for the hyperprior codecs). The output has one logit per
    ``2**len(channels)``-pixel patch; losses average over patches.
    """

    def __init__(self, latent_channels: int = 0, channels: tuple[int, ...] = (32, 64, 128),
                 cond_channels: int = 12, latent_stride: int = 16, norm: str = "spectral") -> None:
        super().__init__()
        if norm not in ("spectral", "none"):
            raise ValueError("norm must be 'spectral' or 'none'")
        wrap = spectral_norm if norm == "spectral" else (lambda m: m)
        self.latent_stride = latent_stride
        self.condition = None
        cin = 3
        if latent_channels:
            # HiFiC: a 3x3 conv to 12 channels, then nearest upsampling to image resolution.
            self.condition = wrap(nn.Conv2d(latent_channels, cond_channels, 3, padding=1))
            cin += cond_channels
        layers: list[nn.Module] = []
        for cout in channels:  # no batch/instance norm (per-patch statistics would leak)
            layers.append(wrap(nn.Conv2d(cin, cout, 4, stride=2, padding=1)))
            layers.append(nn.LeakyReLU(0.2))
            cin = cout
        layers.append(wrap(nn.Conv2d(cin, 1, 1)))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        if self.condition is not None:
            if latent is None:
                raise ValueError("this discriminator is conditional: pass the quantized latent")
            c = F.leaky_relu(self.condition(latent), 0.2)
            c = F.interpolate(c, size=x.shape[-2:], mode="nearest")
            x = torch.cat([x * 2 - 1, c], dim=1)
        else:
            x = x * 2 - 1
        return self.body(x)


def d_loss(real: torch.Tensor, fake: torch.Tensor, kind: str = "ns") -> torch.Tensor:
    """Discriminator loss on patch logits: non-saturating (HiFiC) or hinge."""
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def g_loss(fake: torch.Tensor, kind: str = "ns") -> torch.Tensor:
    """Generator's adversarial loss on the discriminator's logits for its output."""
    if kind == "hinge":
        return -fake.mean()
    return F.softplus(-fake).mean()
