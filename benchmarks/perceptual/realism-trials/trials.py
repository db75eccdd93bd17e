"""Making the realistic decoder more realistic without training: two decode-time trials, one encode-time.

The two decode-time ones read the same bitstreams as the faithful decoder, as the realism choice must:

- ``sample``: decode a sample of the latent's posterior instead of its bin centre. The stream
  says only that r = y - mean lies in [k - 0.5, k + 0.5]; under the codec's own Gaussian prior
  N(0, scale), r given k is a truncated normal. Drawing from it (moved from the bin centre by
  a factor t) puts back detail that quantization removed, which is what a sample of p(x | stream)
  should look like (Theis et al. 2022, "Lossy compression with Gaussian diffusion", on
  realism as sampling). t = 0 is the usual decode.
- ``extrapolate``: the realism knob beyond 1, i.e. ``faithful + R * (realistic - faithful)``
  with R > 1 (network interpolation, extrapolated): the realistic g_s was still improving
  when its training stopped, so its direction of travel might be worth following further.
- ``grain``: add seeded white Gaussian noise of standard deviation sigma (8-bit levels, per
  RGB channel) to the decoded image, the way AV1's film-grain synthesis puts back texture
  that the coder smoothed away. A blurred decode has less feature variance than the
  original, which DISTS's texture term counts; noise restores variance, if not the texture.

And one that changes the encoder instead (so, the stream), for comparison:

- ``refine``: encode-time refinement of the latent (``models.refine``, ``--effort``) with the
  realistic decoder and an LPIPS-alex term in its loss, i.e. the stream is searched for what
  the realistic decoder renders well. Judged on DISTS at the same bpp as the faithful
  decoder's curve (unrefined, qualities -1.5 .. 0.5), interpolated in log bpp.

Held-out images only (never Kodak): the centre 512 x 512 crop of each, at codec qualities -1,
0 and 1, as ``jobs.train_gan eval`` does. One JSON line per (image, quality, decoder, value).

    python benchmarks/perceptual/realism-trials/trials.py sample --values 0 0.3 0.4 0.5 0.6 0.7 \
        --images ../shared/datasets/wikipedia_photos_hr/{001,021,036}.png --out F.jsonl
    python benchmarks/perceptual/realism-trials/trials.py extrapolate --values 0 1 1.25 1.5 2 \
        --images ... --out F.jsonl
    python benchmarks/perceptual/realism-trials/trials.py refine --values 1 3 --steps 40 \
        --qualities -1 --images ... --out F.jsonl
    python benchmarks/perceptual/realism-trials/trials.py grain --values 0 2 3 4 6 \
        --images ... --out F.jsonl
    python benchmarks/perceptual/realism-trials/trials.py summary F.jsonl
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
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


def crops(paths: list[str], size: int = 512):
    """(file name, centre crop in [0, 1] as 1x3xCxC, the crop padded to the codec's stride, C)
    per image: what every trial codes."""
    import torch
    from PIL import Image

    from models.hyperprior import pad_to

    for path in paths:
        with Image.open(path) as im:
            a = np.asarray(im.convert("RGB"))
        h, w = a.shape[:2]
        c = min(size, h, w)
        a = a[(h - c) // 2:(h - c) // 2 + c, (w - c) // 2:(w - c) // 2 + c]
        x0 = torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float() / 255
        yield Path(path).name, x0, pad_to(x0, 64)[0], c


def jsonl(path: str):
    """The output file, opened for writing, its folder made first."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.open("w")


def run(args: argparse.Namespace) -> int:
    import torch

    from jobs.train_gan import FrozenEncoder
    from models import realistic
    from models.entropy_models import scale_table
    from models.learned import LearnedModel
    from models.perceptual import DISTS, LPIPS

    torch.set_num_threads(args.threads)
    model = LearnedModel.from_file(CODEC)
    encoder = FrozenEncoder(model)
    real = realistic.load_realistic_file(REALISTIC, model)
    dists, lpips_vgg = DISTS().eval(), LPIPS("vgg").eval()
    if args.mode in ("sample", "grain"):
        decoders = {("faithful", 0.0): model.net.g_s, ("realistic", 1.0): real}
    else:
        decoders = {("realistic", r): realistic.interpolate(model.net.g_s, real, r) for r in args.values}
    with jsonl(args.out) as f:
        for image, x0, x, c in crops(args.images):
            for quality in args.qualities:
                y_sym, _, mean, inv_gain, index = encoder.symbols(x, torch.tensor([quality - 1.0]))
                offset = torch.zeros_like(mean)
                if args.mode == "sample":
                    scale = torch.from_numpy(scale_table()[index]).double()
                    gen = torch.Generator().manual_seed(0)
                    offset = sample_bin(y_sym, scale, gen) - y_sym.double()
                for (name, realism), g_s in decoders.items():
                    for v in args.values if args.mode in ("sample", "grain") else [realism]:
                        shift = v if args.mode == "sample" else 0.0
                        sigma = v if args.mode == "grain" else 0.0
                        latent = (y_sym + mean + shift * offset).float() * inv_gain
                        with torch.no_grad():
                            img = g_s(latent)[..., :c, :c]
                            if sigma:
                                gen = torch.Generator().manual_seed(0)
                                img = img + sigma / 255 * torch.randn(img.shape, generator=gen)
                            img = (img.clamp(0, 1) * 255).round() / 255
                            mse = float(((img - x0) ** 2).mean())
                            row = {"image": image, "quality": quality, "decoder": name,
                                   "realism": realism, "t": shift, "grain": sigma,
                                   "psnr": 10 * np.log10(1 / mse),
                                   "dists": float(dists(img, x0).mean()),
                                   "lpips_vgg": float(lpips_vgg(img, x0).mean())}
                        f.write(json.dumps(row) + "\n")
                        f.flush()
                        print(json.dumps(row), flush=True)
    return 0


def refine(args: argparse.Namespace) -> int:
    """Faithful curve (unrefined) and refined streams, each decoded by both decoders."""
    import torch

    from models import intnet, realistic
    from models.entropy_models import scale_table
    from models.learned import LearnedModel, _entropy_encode, stream_length
    from models.perceptual import DISTS, LPIPS
    from models.refine import refine_latent

    torch.set_num_threads(args.threads)
    model = LearnedModel.from_file(CODEC)
    net = model.net
    real = realistic.load_realistic_file(REALISTIC, model).requires_grad_(False)
    dists, lpips_alex = DISTS().eval(), LPIPS("alex").eval().requires_grad_(False)

    def refined(g_s, x, y, mean, scale, inv_gain, lmbda, k):
        """models.refine.refine_latent's loss plus k * LPIPS-alex of the decoded image (what
        `--effort-for realistic` ships since session 16; sessions 13-15 ran an inline copy of
        the same loss and steps, which gave the same rows: checked on kodim07, 3 steps)."""
        return refine_latent(g_s, x, y, mean, scale, inv_gain, lmbda, args.steps, args.lr,
                             lpips_alex if k else None, k, cosine=args.cosine)

    with jsonl(args.out) as f:
        for image, x0, x, c in crops(args.images):
            curve = [(q, "none", 0.0) for q in (-1.5, -1.0, -0.5, 0.0, 0.5)]
            runs = curve + [(q, "faithful-mse", 0.0) for q in args.qualities]
            runs += [(q, "realistic-lpips", k) for q in args.qualities for k in args.values]
            for quality, how, k in runs:
                q = torch.tensor([quality - 1.0])
                with torch.no_grad():
                    gain, inv_gain = net.gains(q)
                    y = net.g_a(x) * gain
                    z_sym = torch.round(net.h_a(y)).long()
                    mean_fx, index = model.entropy_parameters(z_sym)
                mean = torch.from_numpy(mean_fx).double() / 2**intnet.A_BITS
                scale = torch.from_numpy(scale_table()[index]).float()
                lmbda = float(net.lmbda(q))
                started = time.monotonic()
                if how != "none":
                    g_s = net.g_s if how == "faithful-mse" else real
                    y = refined(g_s, x0, y, mean.float(), scale, inv_gain, lmbda, k)
                seconds = time.monotonic() - started
                y_sym = torch.round(y.double() - mean).long()
                words = _entropy_encode(model, z_sym.numpy(), y_sym.numpy(), index)
                latent = (y_sym + mean).float() * inv_gain
                row = {"image": image, "quality": quality, "refine": how, "k": k,
                       "steps": 0 if how == "none" else args.steps, "lr": args.lr,
                       "cosine": args.cosine,
                       "bpp": stream_length(13, c, c, -c % 64, -c % 64, words) * 8 / (c * c),  # msh-n96-v2
                       "refine_seconds": round(seconds, 1)}
                with torch.no_grad():
                    for name, g_s in (("faithful", net.g_s), ("realistic", real)):
                        img = (g_s(latent)[..., :c, :c].clamp(0, 1) * 255).round() / 255
                        row[f"psnr_{name}"] = 10 * np.log10(1 / float(((img - x0) ** 2).mean()))
                        row[f"dists_{name}"] = float(dists(img, x0).mean())
                f.write(json.dumps(row) + "\n")
                f.flush()
                print(json.dumps(row), flush=True)
    return 0


def summary_refine(rows: list[dict], decode: str = "realistic", against: str = "faithful") -> int:
    """Each refined stream, decoded by ``decode``, against the unrefined curve of its image,
    decoded by ``against``, at the same bpp; then the mean change per setting at quality -1."""
    print(f"| image | quality | refinement | bpp | DISTS: {against} curve at this bpp | {decode} | "
          f"change | PSNR: {against} curve / {decode} |")
    print("|---|---|---|---|---|---|---|---|")
    means: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    for r in rows:
        if r["refine"] == "none" and r["quality"] not in (-1.0, 0.0):
            continue
        curve = sorted((c["bpp"], c[f"dists_{against}"], c[f"psnr_{against}"]) for c in rows
                       if c["image"] == r["image"] and c["refine"] == "none")
        logb = np.log([c[0] for c in curve])
        d = float(np.interp(np.log(r["bpp"]), logb, [c[1] for c in curve]))
        p = float(np.interp(np.log(r["bpp"]), logb, [c[2] for c in curve]))
        how = "none" if r["refine"] == "none" else f"{r['refine']} k={r['k']:g}, {r['steps']} steps"
        if r["refine"] != "none" and (r.get("lr", 0.003) != 0.003 or r.get("cosine")):
            how += f", lr {r['lr']:g}" + (" cosine" if r.get("cosine") else "")
        dists, psnr = r[f"dists_{decode}"], r[f"psnr_{decode}"]
        print(f"| {r['image']} | {r['quality']:g} | {how} | {r['bpp']:.4f} | {d:.4f} | "
              f"{dists:.4f} | {100 * (dists / d - 1):+.1f} % | {p:.2f} / {psnr:.2f} dB |")
        if r["quality"] == -1.0:
            means[how].append((dists / d - 1, psnr - p))
    print(f"\n| quality -1: refinement | images | {decode} DISTS vs the {against} curve, mean | "
          f"{decode} PSNR - the {against} curve's, mean |\n|---|---|---|---|")
    for how, v in means.items():
        print(f"| {how} | {len(v)} | {100 * np.mean([x[0] for x in v]):+.1f} % | "
              f"{np.mean([x[1] for x in v]):+.2f} dB |")
    return 0


def summary(args: argparse.Namespace) -> int:
    """Mean change against the faithful decoder's usual decode, per setting and quality."""
    rows = [json.loads(line) for line in Path(args.file).read_text().splitlines() if line]
    if rows and "refine" in rows[0]:
        return summary_refine(rows, args.decode, args.against)
    base = {(r["image"], r["quality"]): r for r in rows
            if r["realism"] == 0 and r["t"] == 0 and not r.get("grain")}
    groups: dict[tuple, list] = collections.defaultdict(list)
    for r in rows:
        b = base[(r["image"], r["quality"])]
        groups[(r["decoder"], r["realism"], r["t"], r.get("grain", 0.0), r["quality"])].append(
            (r["dists"] / b["dists"] - 1, r["psnr"] - b["psnr"], r["lpips_vgg"] / b["lpips_vgg"] - 1))
    print("| decoder | realism R | posterior t | grain sigma | quality | images | DISTS vs faithful | "
          "LPIPS-vgg vs faithful | PSNR vs faithful |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (name, realism, t, sigma, quality), v in sorted(groups.items()):
        n = len(v)
        d, p, lp = (sum(x[i] for x in v) / n for i in range(3))
        print(f"| {name} | {realism:g} | {t:g} | {sigma:g} | {quality:g} | {n} | {100 * d:+.1f} % | "
              f"{100 * lp:+.1f} % | {p:+.2f} dB |")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    for mode in ("sample", "extrapolate", "refine", "grain"):
        s = sub.add_parser(mode)
        s.add_argument("--values", type=float, nargs="+", required=True,
                       help="posterior shifts t (sample), realism R (extrapolate), LPIPS "
                       "weights k (refine) or noise sigma in 8-bit levels (grain)")
        s.add_argument("--steps", type=int, default=40, help="refine: Adam steps")
        s.add_argument("--lr", type=float, default=0.003, help="refine: Adam step size")
        s.add_argument("--cosine", action="store_true",
                       help="refine: decay the step size from --lr to a tenth of it (session 24)")
        s.add_argument("--images", nargs="+", required=True)
        s.add_argument("--qualities", type=float, nargs="+", default=[-1, 0, 1])
        s.add_argument("--threads", type=int, default=2)
        s.add_argument("--out", required=True, help="JSON lines")
    s = sub.add_parser("summary")
    s.add_argument("file")
    s.add_argument("--decode", choices=["faithful", "realistic"], default="realistic",
                   help="refine files: which decoder's output to compare with the curve")
    s.add_argument("--against", choices=["faithful", "realistic"], default="faithful",
                   help="refine files: which decoder's unrefined curve to compare with")
    args = p.parse_args(argv)
    if args.mode == "summary":
        return summary(args)
    return refine(args) if args.mode == "refine" else run(args)


if __name__ == "__main__":
    raise SystemExit(main())
