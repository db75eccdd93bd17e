"""Two decode-time ways to make the realistic decoder more realistic, without training.

Both read the same bitstreams as the faithful decoder, as the realism choice must:

- ``sample``: decode a sample of the latent's posterior instead of its bin centre. The stream
  says only that r = y - mean lies in [k - 0.5, k + 0.5]; under the codec's own Gaussian prior
  N(0, scale), r given k is a truncated normal. Drawing from it (moved from the bin centre by
  a factor t) puts back detail that quantization removed, which is what a sample of p(x | stream)
  should look like (Theis et al. 2022, "Lossy compression with Gaussian diffusion", on
  realism as sampling). t = 0 is the usual decode.
- ``extrapolate``: the realism knob beyond 1, i.e. ``faithful + R * (realistic - faithful)``
  with R > 1 (network interpolation, extrapolated): the realistic g_s was still improving
  when its training stopped, so its direction of travel might be worth following further.

Held-out images only (never Kodak): the centre 512 x 512 crop of each, at codec qualities -1,
0 and 1, as ``jobs.train_gan eval`` does. One JSON line per (image, quality, decoder, value).

    python benchmarks/perceptual/decode-time-trials/trials.py sample --values 0 0.3 0.4 0.5 0.6 0.7 \
        --images ../shared/datasets/wikipedia_photos_hr/{001,021,036}.png --out F.jsonl
    python benchmarks/perceptual/decode-time-trials/trials.py extrapolate --values 0 1 1.25 1.5 2 \
        --images ... --out F.jsonl
    python benchmarks/perceptual/decode-time-trials/trials.py summary F.jsonl
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
CODEC = ROOT / "models/weights/msh-n96-v2.safetensors"
REALISTIC = ROOT / "models/weights/msh-n96-v2-realistic.safetensors"


def sample_bin(k, scale, gen):
    """r ~ N(0, scale) truncated to [k - 0.5, k + 0.5] (float64), by inverting the CDF.

    Bins with k > 0 are mirrored to the lower tail, where the CDF keeps its precision."""
    import torch

    sign = torch.where(k > 0, -1.0, 1.0).double()
    kk = k.double() * sign
    lo, hi = torch.special.ndtr((kk - 0.5) / scale), torch.special.ndtr((kk + 0.5) / scale)
    u = lo + (hi - lo) * torch.rand(k.shape, generator=gen, dtype=torch.float64)
    r = scale * torch.special.ndtri(u.clamp(1e-300, 1 - 1e-16))
    return torch.minimum(torch.maximum(r, kk - 0.5), kk + 0.5) * sign


def crop(path: str, size: int = 512):
    import torch
    from PIL import Image

    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"))
    h, w = a.shape[:2]
    c = min(size, h, w)
    a = a[(h - c) // 2:(h - c) // 2 + c, (w - c) // 2:(w - c) // 2 + c]
    return torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float() / 255


def run(args: argparse.Namespace) -> int:
    import torch

    from jobs.train_gan import FrozenEncoder
    from models import realistic
    from models.entropy_models import scale_table
    from models.hyperprior import pad_to
    from models.learned import LearnedModel
    from models.perceptual import DISTS, LPIPS

    torch.set_num_threads(args.threads)
    model = LearnedModel.from_file(CODEC)
    encoder = FrozenEncoder(model)
    real = realistic.load_realistic_file(REALISTIC, model)
    dists, lpips_vgg = DISTS().eval(), LPIPS("vgg").eval()
    if args.mode == "sample":
        decoders = {("faithful", 0.0): model.net.g_s, ("realistic", 1.0): real}
    else:
        decoders = {("realistic", r): realistic.interpolate(model.net.g_s, real, r) for r in args.values}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for path in args.images:
            x0 = crop(path)
            x, _ = pad_to(x0, 64)
            c = x0.shape[-1]
            for quality in args.qualities:
                y_sym, _, mean, inv_gain, index = encoder.symbols(x, torch.tensor([quality - 1.0]))
                offset = torch.zeros_like(mean)
                if args.mode == "sample":
                    scale = torch.from_numpy(scale_table()[index]).double()
                    gen = torch.Generator().manual_seed(0)
                    offset = sample_bin(y_sym, scale, gen) - y_sym.double()
                for (name, realism), g_s in decoders.items():
                    for t in args.values if args.mode == "sample" else [realism]:
                        shift = t if args.mode == "sample" else 0.0
                        latent = (y_sym + mean + shift * offset).float() * inv_gain
                        with torch.no_grad():
                            img = (g_s(latent)[..., :c, :c].clamp(0, 1) * 255).round() / 255
                            mse = float(((img - x0) ** 2).mean())
                            row = {"image": Path(path).name, "quality": quality, "decoder": name,
                                   "realism": realism, "t": t if args.mode == "sample" else 0.0,
                                   "psnr": 10 * np.log10(1 / mse),
                                   "dists": float(dists(img, x0).mean()),
                                   "lpips_vgg": float(lpips_vgg(img, x0).mean())}
                        f.write(json.dumps(row) + "\n")
                        f.flush()
                        print(json.dumps(row), flush=True)
    return 0


def summary(args: argparse.Namespace) -> int:
    """Mean change against the faithful decoder's usual decode, per setting and quality."""
    rows = [json.loads(line) for line in Path(args.file).read_text().splitlines() if line]
    base = {(r["image"], r["quality"]): r for r in rows
            if r["realism"] == 0 and r["t"] == 0}
    groups: dict[tuple, list] = collections.defaultdict(list)
    for r in rows:
        b = base[(r["image"], r["quality"])]
        groups[(r["decoder"], r["realism"], r["t"], r["quality"])].append(
            (r["dists"] / b["dists"] - 1, r["psnr"] - b["psnr"], r["lpips_vgg"] / b["lpips_vgg"] - 1))
    print("| decoder | realism R | posterior t | quality | images | DISTS vs faithful | "
          "LPIPS-vgg vs faithful | PSNR vs faithful |")
    print("|---|---|---|---|---|---|---|---|")
    for (name, realism, t, quality), v in sorted(groups.items()):
        n = len(v)
        d, p, lp = (sum(x[i] for x in v) / n for i in range(3))
        print(f"| {name} | {realism:g} | {t:g} | {quality:g} | {n} | {100 * d:+.1f} % | "
              f"{100 * lp:+.1f} % | {p:+.2f} dB |")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    for mode in ("sample", "extrapolate"):
        s = sub.add_parser(mode)
        s.add_argument("--values", type=float, nargs="+", required=True,
                       help="posterior shifts t (sample) or realism R (extrapolate)")
        s.add_argument("--images", nargs="+", required=True)
        s.add_argument("--qualities", type=float, nargs="+", default=[-1, 0, 1])
        s.add_argument("--threads", type=int, default=2)
        s.add_argument("--out", required=True, help="JSON lines")
    s = sub.add_parser("summary")
    s.add_argument("file")
    args = p.parse_args(argv)
    return summary(args) if args.mode == "summary" else run(args)


if __name__ == "__main__":
    raise SystemExit(main())
