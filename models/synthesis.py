"""A wider synthesis transform for realistic decoders: the faithful g_s plus residual blocks.

Why: the realistic decoder of msh-n96-v2 (a GAN fine-tune of the codec's own four-layer GDN
g_s) stopped improving on held-out DISTS at about -7 % whatever the discriminator or the
adversarial weight (checkpoints/msh-n96-v2-realistic/README.md); HiFiC's generator is a much
larger residual network. This adds capacity where the decoder has to invent texture, without
touching the bitstream: residual blocks (conv 3x3, LeakyReLU, conv 3x3, plus the input) after
chosen layers of g_s. Each block's last convolution starts at zero, so an untrained
``RefinedSynthesis`` is exactly the faithful g_s and training starts from the faithful decoder.

State-dict keys of the base layers are the faithful g_s's own (``0.weight``, ``1.beta``, ...);
the blocks live under ``refine.<layer>.<block>.``. So the realism knob (``models.realistic.
interpolate``) can treat "no blocks" as "blocks whose last convolution is zero".

Spec: ``"1:2:192,3:2:96"`` = after layer 1 (the first IGDN, 1/8 resolution) two blocks 192
channels wide inside, after layer 3 (1/4 resolution) two blocks 96 wide.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from models.tiling import HALO_LATENTS


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 3, padding=1)
        self.act = nn.LeakyReLU(0.2)
        self.conv2 = nn.Conv2d(width, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # identity at start: the faithful decoder
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


def parse_spec(spec: str) -> list[tuple[int, int, int]]:
    """``"1:2:192,3:2:96"`` -> [(1, 2, 192), (3, 2, 96)]; ValueError names the bad part."""
    out = []
    for part in spec.replace(" ", "").split(","):
        if not part:
            continue
        try:
            layer, blocks, width = (int(v) for v in part.split(":"))
        except ValueError as exc:
            raise ValueError(f"refine spec part {part!r} is not LAYER:BLOCKS:WIDTH") from exc
        if blocks < 1 or width < 1 or layer < 0:
            raise ValueError(f"refine spec part {part!r}: layer >= 0, blocks and width >= 1")
        out.append((layer, blocks, width))
    if len({layer for layer, _, _ in out}) != len(out):
        raise ValueError(f"refine spec {spec!r} names a layer twice")
    return sorted(out)


def format_spec(spec: list[tuple[int, int, int]]) -> str:
    return ",".join(f"{layer}:{blocks}:{width}" for layer, blocks, width in spec)


class RefinedSynthesis(nn.Sequential):
    """``base``'s layers in order, with ``refine[str(i)]`` (residual blocks) after layer i."""

    def __init__(self, base: nn.Sequential, spec: str | list[tuple[int, int, int]]) -> None:
        super().__init__(*copy.deepcopy(base))  # never shares the faithful layers
        self.spec = parse_spec(spec) if isinstance(spec, str) else sorted(spec)
        layers = list(base)
        refine = {}
        upsamplings = 0
        radius = 0.0  # added receptive-field radius, in latents
        channels = None
        for i, layer in enumerate(layers):
            if isinstance(layer, nn.modules.conv._ConvNd):
                channels = layer.out_channels
                if isinstance(layer, nn.ConvTranspose2d):
                    upsamplings += layer.stride[0].bit_length() - 1
            for at, blocks, width in self.spec:
                if at == i:
                    if channels is None:
                        raise ValueError(f"refine after layer {i}: no convolution before it")
                    refine[str(i)] = nn.Sequential(*(ResidualBlock(channels, width)
                                                     for _ in range(blocks)))
                    radius += 2 * blocks / 2**upsamplings  # two 3x3 convs per block
        missing = {at for at, _, _ in self.spec} - {int(k) for k in refine}
        if missing:
            raise ValueError(f"refine spec names layers {sorted(missing)}; g_s has 0..{len(layers) - 1}")
        self.refine = nn.ModuleDict(refine)
        # models.tiling reads this: a tile needs context for the blocks' receptive field too
        self.halo_latents = HALO_LATENTS + math.ceil(radius)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name, layer in self._modules.items():
            if name == "refine":
                continue
            x = layer(x)
            if name in self.refine:
                x = self.refine[name](x)
        return x

    def identity_state(self) -> dict[str, torch.Tensor]:
        """This module's state with every block's last convolution zeroed: the function of the
        base layers alone (what ``interpolate`` starts from at realism 0)."""
        state = {k: v.clone() for k, v in self.state_dict().items()}
        for key in state:
            if key.startswith("refine.") and ".conv2." in key:
                state[key].zero_()
        return state
