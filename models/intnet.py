"""The hyper-decoder in exact integer arithmetic, so entropy parameters match on every machine.

A learned codec decodes only if the decoder derives the same Gaussian means and scale indexes
as the encoder did; a one-ulp difference selects another CDF and garbles the rest of the
stream (CompressAI issues 279, 309, 320). Here the hyper-decoder ``h_s`` is exported to fixed
point: weights are integers scaled by ``2**W_BITS``, activations integers scaled by
``2**A_BITS``, biases by ``2**(A_BITS + W_BITS)``. Each layer computes an integer
accumulator, rounds it back to ``A_BITS`` with a floor shift, applies ReLU, and clamps.

The arithmetic runs in float64 on integer-valued tensors: every product and every partial
sum is an integer below 2**53 (``check_bounds`` proves it from the weights), so float64 adds
and multiplies are exact in any order, with any blocking, thread count, SIMD width or FMA.
The result is bit-identical on every CPU and GPU, by construction rather than by luck
(``LearnedModel.to`` runs it on the codec's device; ``jobs.cross_device`` checks a GPU run
against a CPU decode). Convolutions are written as unfold + matmul so no algorithm with
inexact transforms (Winograd, FFT) can be chosen behind our back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

A_BITS = 8  # activations: value * 256
W_BITS = 12  # weights: value * 4096
A_LIMIT = 2**22  # |activation| clamp (value 16384)
EXACT_LIMIT = 2**53


@dataclass
class IntLayer:
    kind: str  # "conv" | "deconv"
    weight: torch.Tensor  # int-valued float64; conv (out, in, k, k), deconv (in, out, k, k)
    bias: torch.Tensor  # int-valued float64 (out,)
    stride: int
    padding: int
    output_padding: int
    relu: bool


def export_layers(module: nn.Sequential) -> list[IntLayer]:
    """Fixed-point copy of a Sequential of Conv2d/ConvTranspose2d/ReLU layers."""
    layers: list[IntLayer] = []
    for m in module:
        if isinstance(m, nn.ReLU):
            layers[-1].relu = True
            continue
        if not isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            raise TypeError(f"cannot export {type(m).__name__} to integer arithmetic")
        w = torch.round(m.weight.detach().double() * 2**W_BITS)
        b = torch.round(m.bias.detach().double() * 2 ** (A_BITS + W_BITS))
        deconv = isinstance(m, nn.ConvTranspose2d)
        layers.append(IntLayer("deconv" if deconv else "conv", w, b, m.stride[0], m.padding[0],
                               m.output_padding[0] if deconv else 0, False))
    check_bounds(layers)
    return layers


def check_bounds(layers: list[IntLayer]) -> None:
    """Prove every accumulator stays below 2**53, so float64 arithmetic is exact."""
    for i, layer in enumerate(layers):
        w = layer.weight if layer.kind == "conv" else layer.weight.transpose(0, 1)
        worst = float(w.abs().flatten(1).sum(1).max()) * A_LIMIT + float(layer.bias.abs().max())
        if worst >= EXACT_LIMIT:
            raise ValueError(f"integer layer {i} could overflow exact float64 ({worst:.3g})")


def _conv_exact(x: torch.Tensor, w: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    b, _, h, wd = x.shape
    out_c, in_c, k, _ = w.shape
    cols = F.unfold(x, k, padding=padding, stride=stride)  # (B, in*k*k, L): a pure copy
    out = torch.matmul(w.reshape(out_c, -1), cols)  # exact: integer sums below 2**53
    oh = (h + 2 * padding - k) // stride + 1
    ow = (wd + 2 * padding - k) // stride + 1
    return out.view(b, out_c, oh, ow)


def _deconv_exact(x: torch.Tensor, w: torch.Tensor, stride: int, padding: int,
                  output_padding: int) -> torch.Tensor:
    """Transposed convolution as zero-stuffing + padding + convolution with the flipped kernel."""
    b, c, h, wd = x.shape
    k = w.shape[-1]
    stuffed = x.new_zeros(b, c, (h - 1) * stride + 1, (wd - 1) * stride + 1)
    stuffed[:, :, ::stride, ::stride] = x
    lo, hi = k - 1 - padding, k - 1 - padding + output_padding
    stuffed = F.pad(stuffed, (lo, hi, lo, hi))
    return _conv_exact(stuffed, w.flip(2, 3).transpose(0, 1), 1, 0)


def to_device(layers: list[IntLayer], device: str | torch.device) -> list[IntLayer]:
    """The same layers with their tensors on ``device`` (exactness does not depend on it)."""
    return [IntLayer(layer.kind, layer.weight.to(device), layer.bias.to(device), layer.stride,
                     layer.padding, layer.output_padding, layer.relu) for layer in layers]


def run(layers: list[IntLayer], z_hat: torch.Tensor) -> torch.Tensor:
    """Integer-valued input (B, C, H, W) -> integer-valued output scaled by 2**A_BITS (float64),
    on the layers' device."""
    a = z_hat.detach().to(layers[0].weight.device, torch.float64) * 2**A_BITS
    half = 2 ** (W_BITS - 1)
    for layer in layers:
        if layer.kind == "conv":
            acc = _conv_exact(a, layer.weight, layer.stride, layer.padding)
        else:
            acc = _deconv_exact(a, layer.weight, layer.stride, layer.padding, layer.output_padding)
        acc = acc + layer.bias.view(1, -1, 1, 1)
        a = torch.floor((acc + half) / 2**W_BITS)  # division by a power of two: exact
        if layer.relu:
            a = a.clamp_min(0)
        a = a.clamp(-A_LIMIT, A_LIMIT)
    return a


def to_tensors(layers: list[IntLayer], prefix: str) -> dict[str, torch.Tensor]:
    """Serialize for safetensors (int32 weights and biases, layer shapes in a config row)."""
    out = {}
    for i, layer in enumerate(layers):
        out[f"{prefix}.{i}.weight"] = layer.weight.to(torch.int32)
        out[f"{prefix}.{i}.bias"] = layer.bias.to(torch.int64)
        out[f"{prefix}.{i}.config"] = torch.tensor(
            [layer.kind == "deconv", layer.stride, layer.padding, layer.output_padding, layer.relu],
            dtype=torch.int32,
        )
    return out


def from_tensors(tensors: dict[str, torch.Tensor], prefix: str) -> list[IntLayer]:
    layers = []
    i = 0
    while f"{prefix}.{i}.weight" in tensors:
        deconv, stride, padding, output_padding, relu = tensors[f"{prefix}.{i}.config"].tolist()
        layers.append(IntLayer("deconv" if deconv else "conv",
                               tensors[f"{prefix}.{i}.weight"].to(torch.float64),
                               tensors[f"{prefix}.{i}.bias"].to(torch.float64),
                               stride, padding, output_padding, bool(relu)))
        i += 1
    check_bounds(layers)
    return layers


def fixed_to_numpy(a: torch.Tensor) -> np.ndarray:
    return a.to(torch.int64).cpu().numpy()
