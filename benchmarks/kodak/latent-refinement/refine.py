"""Encode-time latent refinement for msh-n96-v2: an experiment, not a codec option.

The decoder is untouched: only y is refined, and z (so the means and scale indexes) stays that
of the first encode, so refined streams decode with the shipped codec. For each image and
quality: the plain stream, then ITERS Adam steps on y minimising bpp + lambda * 255^2 * MSE,
then the refined stream; both are decoded by the codec and measured (real bytes, PSNR).

    python benchmarks/kodak/latent-refinement/refine.py IMAGES QUALITIES ITERS LR MODE

IMAGES: comma-separated Kodak names (read from ../shared/datasets/kodak); QUALITIES:
comma-separated; MODE: ste (rate of the rounded latent, straight-through), cont (rate of the
continuous latent) or mixed (rate with uniform noise). Two torch threads.
"""

from __future__ import annotations

import struct
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from models import intnet  # noqa: E402
from models.bitstream import Header, pack  # noqa: E402
from models.entropy_models import gaussian_likelihood, scale_table  # noqa: E402
from models.hyperprior import MeanScaleHyperprior, pad_to  # noqa: E402
from models.layers import ste_round  # noqa: E402
from models.learned import STRIDE, _entropy_encode  # noqa: E402
from models.registry import get_codec  # noqa: E402


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * np.log10(255**2 / np.mean((a.astype(float) - b.astype(float)) ** 2))


def main() -> None:
    torch.set_num_threads(2)
    names = sys.argv[1].split(",")
    quals = [float(q) for q in sys.argv[2].split(",")]
    iters, lr, mode = int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    codec = get_codec("msh-n96-v2")
    m = codec.model
    net = m.net
    for p in net.parameters():
        p.requires_grad_(False)
    scales = torch.tensor(scale_table(), dtype=torch.float32)
    for name in names:
        path = ROOT.parent / "shared" / "datasets" / "kodak" / f"{name}.png"
        img = np.array(Image.open(path).convert("RGB"))
        h, w, _ = img.shape
        x0 = torch.tensor(img).permute(2, 0, 1)[None].float() / 255
        x, (ph, pw) = pad_to(x0, STRIDE)
        for q in quals:
            codec.quality = q
            base = codec.encode_batch([img])[0]
            d = codec.decode_batch([base])[0].image
            qt = torch.tensor([round(q * 1000) / 1000 - 1.0])
            gain, inv_gain = net.gains(qt)
            lam = float(MeanScaleHyperprior.lmbda(torch.tensor([q])))
            with torch.no_grad():
                y0 = net.g_a(x) * gain
                z_sym = torch.round(net.h_a(y0)).to(torch.int64)
            mean_fx, index = m.entropy_parameters(z_sym)
            mean = torch.from_numpy(mean_fx / 2**intnet.A_BITS).float()
            scale = scales[torch.from_numpy(index)]
            y = y0.clone().requires_grad_(True)
            opt = torch.optim.Adam([y], lr=lr)
            t0 = time.time()
            for _ in range(iters):
                opt.zero_grad()
                r = y - mean
                if mode == "ste":
                    yh = ste_round(r) + mean
                    lik = gaussian_likelihood(yh, mean, scale)
                elif mode == "cont":
                    lik = gaussian_likelihood(y, mean, scale)
                    yh = ste_round(r) + mean
                else:  # mixed: noise for the rate, straight-through rounding for the distortion
                    lik = gaussian_likelihood(r + torch.empty_like(r).uniform_(-0.5, 0.5) + mean,
                                              mean, scale)
                    yh = ste_round(r) + mean
                xh = net.g_s(yh * inv_gain)[..., :h, :w]
                bits = -torch.log2(lik).sum()
                mse = torch.mean((xh - x0) ** 2)
                loss = bits / (h * w) + lam * 255**2 * mse
                loss.backward()
                opt.step()
            dt = time.time() - t0
            with torch.no_grad():
                y_sym = np.round(y.double().numpy() - mean_fx / 2**intnet.A_BITS).astype(np.int64)
            words = _entropy_encode(m, z_sym.numpy(), y_sym, index)
            stream = pack(Header(codec.code, h, w, 3, ph, pw), struct.pack(">h", round(q * 1000)) + words)
            d2 = codec.decode_batch([stream])[0].image
            print(f"{name} q={q} base {len(base) * 8 / (h * w):.4f} bpp {psnr(img, d):.3f} dB | refined "
                  f"{len(stream) * 8 / (h * w):.4f} bpp {psnr(img, d2):.3f} dB  ({dt:.1f}s {iters} it)",
                  flush=True)


if __name__ == "__main__":
    main()
