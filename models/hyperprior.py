"""Learned compression models with gain units: one set of weights for a continuous range of rates.

``prior="mean-scale"`` (the default codec), ``"scale"`` (Ballé et al. 2018) or ``"factorized"``
(Ballé et al. 2017, "End-to-end Optimized Image Compression": no hyperprior, one learned density
per latent channel). The mean-scale data flow:

Minnen, Ballé, Toderici 2018, "Joint Autoregressive and Hierarchical Priors for Learned Image
Compression" (the mean-scale hyperprior, without its serial context model); Ballé et al. 2018,
"Variational image compression with a scale hyperprior"; Cui et al. 2021, "Asymmetric Gained
Deep Image Compression With Continuous Rate Adaptation" (gain units)::

    x -> g_a -> y -> * gain(q) -> y_g -> h_a -> z -> Q -> z_hat -> [factorized density]
                                  |                        |
                                  |                   h_s (integer, see models.intnet)
                                  |                        v
                                  +-> Q(y_g - mean) ~ N(0, scale) -> y_hat = sym + mean
    y_hat -> * inv_gain(q) -> g_s -> x_hat

``quality`` q is continuous in [0, len(LAMBDAS) - 1]: gains are interpolated in the log domain
between the trained levels, and so is lambda during training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.entropy_models import SCALE_MIN, FactorizedDensity, gaussian_likelihood
from models.layers import GDN, conv, deconv, lower_bound, ste_round

# CompressAI's MSE lambdas for qualities 1..6, plus one higher level.
LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932)


PRIORS = ("mean-scale", "scale", "factorized")
ARCHITECTURE_NAMES = {"mean-scale": "mean-scale-hyperprior", "scale": "scale-hyperprior",
                      "factorized": "factorized-prior"}


class MeanScaleHyperprior(nn.Module):
    def __init__(self, N: int = 64, M: int = 96, levels: int = len(LAMBDAS),
                 prior: str = "mean-scale") -> None:
        super().__init__()
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}")
        self.N, self.M, self.levels, self.prior = N, M, levels, prior
        self.g_a = nn.Sequential(conv(3, N), GDN(N), conv(N, N), GDN(N), conv(N, N), GDN(N), conv(N, M))
        self.g_s = nn.Sequential(
            deconv(M, N), GDN(N, inverse=True), deconv(N, N), GDN(N, inverse=True),
            deconv(N, N), GDN(N, inverse=True), deconv(N, 3),
        )
        if prior == "factorized":
            self.y_density = FactorizedDensity(M)
        else:
            self.h_a = nn.Sequential(conv(M, N, 3, 1), nn.ReLU(), conv(N, N), nn.ReLU(), conv(N, N))
            # Only conv/deconv + ReLU: exported to exact integer arithmetic (models.intnet).
            out = 2 * M if prior == "mean-scale" else M
            self.h_s = nn.Sequential(
                deconv(N, N), nn.ReLU(), deconv(N, N * 3 // 2), nn.ReLU(), conv(N * 3 // 2, out, 3, 1)
            )
            self.z_density = FactorizedDensity(N)
        self.log_gain = nn.Parameter(torch.zeros(levels, M))
        self.log_inv_gain = nn.Parameter(torch.zeros(levels, M))
        with torch.no_grad():  # start the levels apart: higher quality, finer quantization
            spread = torch.linspace(-1.0, 1.0, levels).unsqueeze(1)
            self.log_gain += spread
            self.log_inv_gain -= spread

    @staticmethod
    def _interpolate(table: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        """Linear interpolation of per-level rows at continuous quality (B,) -> (B, M).

        Below level 0 the line through levels 0 and 1 is extended (lower rates than trained:
        measured smooth on Kodak down to q = -2, codec quality -1, benchmarks/kodak-low; the
        realistic decoder is trained down to q = -1);
        above the top level the last row is held. For q >= 0 the arithmetic is exactly what it
        always was, so existing bitstreams decode bit-identically."""
        q = quality.clamp(max=table.shape[0] - 1)
        lo = q.floor().long().clamp(0, table.shape[0] - 2)
        t = (q - lo).unsqueeze(1)
        return table[lo] * (1 - t) + table[lo + 1] * t

    def gains(self, quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.exp(self._interpolate(self.log_gain, quality))[:, :, None, None]
        ig = torch.exp(self._interpolate(self.log_inv_gain, quality))[:, :, None, None]
        return g, ig

    @staticmethod
    def lmbda(quality: torch.Tensor) -> torch.Tensor:
        logs = torch.log(torch.tensor(LAMBDAS, device=quality.device))
        return torch.exp(MeanScaleHyperprior._interpolate(logs.unsqueeze(1), quality).squeeze(1))

    @property
    def architecture(self) -> str:
        return ARCHITECTURE_NAMES[self.prior]

    def entropy_parameters(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        params = self.h_s(z_hat)
        if self.prior == "scale":
            return torch.zeros_like(params), lower_bound(params, SCALE_MIN)
        mean, scale = params.chunk(2, dim=1)
        return mean, lower_bound(scale, SCALE_MIN)

    def forward(self, x: torch.Tensor, quality: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training/evaluation pass with noise for rates and rounding for reconstructions."""
        gain, inv_gain = self.gains(quality)
        y = self.g_a(x) * gain
        if self.prior == "factorized":
            noisy = y + torch.empty_like(y).uniform_(-0.5, 0.5) if self.training else torch.round(y)
            x_hat = self.g_s(ste_round(y) * inv_gain)
            return {"x_hat": x_hat, "y_lik": self.y_density.likelihood(noisy),
                    "z_lik": torch.ones(y.shape[0], 1, device=y.device)}
        z = self.h_a(y)
        if self.training:
            z_noisy = z + torch.empty_like(z).uniform_(-0.5, 0.5)
        else:
            z_noisy = torch.round(z)
        z_lik = self.z_density.likelihood(z_noisy)
        mean, scale = self.entropy_parameters(ste_round(z))
        if self.training:
            y_noisy = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        else:
            y_noisy = torch.round(y - mean) + mean
        y_lik = gaussian_likelihood(y_noisy, mean, scale)
        y_hat = ste_round(y - mean) + mean
        x_hat = self.g_s(y_hat * inv_gain)
        return {"x_hat": x_hat, "y_lik": y_lik, "z_lik": z_lik}


def rd_loss(out: dict[str, torch.Tensor], x: torch.Tensor, quality: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample lambda * 255^2 * MSE + bpp, averaged (CompressAI's convention)."""
    b, _, h, w = x.shape
    pixels = h * w
    bits = (-torch.log2(out["y_lik"])).flatten(1).sum(1) + (-torch.log2(out["z_lik"])).flatten(1).sum(1)
    bpp = bits / pixels
    mse = F.mse_loss(out["x_hat"], x, reduction="none").flatten(1).mean(1)
    lmbda = MeanScaleHyperprior.lmbda(quality)
    loss = (lmbda * 255**2 * mse + bpp).mean()
    psnr = (10 * torch.log10(1 / mse.clamp_min(1e-10))).mean()
    return {"loss": loss, "bpp": bpp.mean(), "mse": mse.mean(), "psnr": psnr}


def pad_to(x: torch.Tensor, multiple: int = 64) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate-pad H and W up to a multiple of the total stride; returns the padding."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (ph, pw)


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

