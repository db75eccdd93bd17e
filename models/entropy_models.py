"""Probability models for training: the factorized density (Ballé et al. 2018, appendix 6.1) and
the Gaussian conditional. They give likelihoods of noisy latents; the integer tables used for
actual entropy coding are derived from them at export (``models.tables``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.layers import lower_bound

SCALE_MIN = 0.11
SCALE_MAX = 256.0
SCALE_LEVELS = 64


def scale_table() -> np.ndarray:
    """Log-spaced Gaussian scales whose integer CDFs are tabulated (as in CompressAI)."""
    return np.exp(np.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALE_LEVELS))


class FactorizedDensity(nn.Module):
    """A learned, per-channel univariate density; its CDF is a small monotone network."""

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0):
        super().__init__()
        dims = (1, *filters, 1)
        scale = init_scale ** (1 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(filters) + 1):
            init = math.log(math.expm1(1 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, dims[i + 1], 1) - 0.5))
            if i < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))

    def logits_cdf(self, x: torch.Tensor) -> torch.Tensor:
        """x: (C, 1, n) -> logits of the CDF at x, (C, 1, n)."""
        for i, (matrix, bias) in enumerate(zip(self.matrices, self.biases, strict=True)):
            x = torch.matmul(F.softplus(matrix), x) + bias
            if i < len(self.factors):
                x = x + torch.tanh(self.factors[i]) * torch.tanh(x)
        return x

    def likelihood(self, z: torch.Tensor) -> torch.Tensor:
        """P(z - 0.5 < Z < z + 0.5) per element of z (B, C, H, W)."""
        b, c, h, w = z.shape
        flat = z.permute(1, 0, 2, 3).reshape(c, 1, -1)
        lower = self.logits_cdf(flat - 0.5)
        upper = self.logits_cdf(flat + 0.5)
        # Evaluate in the tail where the sigmoid is flattest, for numerical accuracy.
        sign = -torch.sign(lower + upper).detach()
        lik = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        return lower_bound(lik, 1e-9).reshape(c, b, h, w).permute(1, 0, 2, 3)

    @torch.no_grad()
    def cdf(self, points: np.ndarray) -> np.ndarray:
        """CDF of every channel at ``points`` (float64 numpy), shape (C, len(points))."""
        c = self.matrices[0].shape[0]
        x = torch.as_tensor(points, dtype=torch.float64).view(1, 1, -1).repeat(c, 1, 1)
        module = self.double()
        try:
            out = torch.sigmoid(module.logits_cdf(x)).squeeze(1).numpy()
        finally:
            self.float()
        return out


def gaussian_likelihood(y: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """P(y - 0.5 < Y < y + 0.5) for Y ~ N(mean, scale), scale already lower-bounded."""
    v = torch.abs(y - mean)
    upper = 0.5 * torch.erfc(-(0.5 - v) / (scale * math.sqrt(2)))
    lower = 0.5 * torch.erfc(-(-0.5 - v) / (scale * math.sqrt(2)))
    return lower_bound(upper - lower, 1e-9)
