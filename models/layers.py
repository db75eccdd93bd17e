"""Building blocks of the learned transforms: GDN, strided convolutions, gradient-friendly bounds."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv(cin: int, cout: int, kernel: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)


def deconv(cin: int, cout: int, kernel: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, kernel, stride=stride, padding=kernel // 2,
                              output_padding=stride - 1)


class _LowerBound(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, bound: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        # Let gradients through where they would push x back above the bound (Ballé et al.).
        passthrough = (x >= ctx.bound) | (grad < 0)
        return grad * passthrough, None


def lower_bound(x: torch.Tensor, bound: float) -> torch.Tensor:
    return _LowerBound.apply(x, bound)


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


class GDN(nn.Module):
    """Generalized divisive normalization (Ballé et al. 2016); ``inverse`` gives IGDN.

    y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2), with beta and gamma kept non-negative by
    a squared reparametrization with a small pedestal, as in the paper's code.
    """

    pedestal = 2.0**-18

    def __init__(self, channels: int, inverse: bool = False, beta_min: float = 1e-6,
                 gamma_init: float = 0.1) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta_bound = (beta_min + self.pedestal) ** 0.5
        self.beta = nn.Parameter(torch.sqrt(torch.ones(channels) + self.pedestal))
        self.gamma = nn.Parameter(torch.sqrt(gamma_init * torch.eye(channels) + self.pedestal))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = lower_bound(self.beta, self.beta_bound) ** 2 - self.pedestal
        gamma = lower_bound(self.gamma, self.pedestal**0.5) ** 2 - self.pedestal
        c = gamma.shape[0]
        norm = F.conv2d(x * x, gamma.view(c, c, 1, 1), beta)
        return x * torch.sqrt(norm) if self.inverse else x * torch.rsqrt(norm)
