"""Perceptual rate-distortion benchmark (`python -m jobs.benchmark --perceptual`).

Every codec at its low qualities, every image: bpp of the whole stored bitstream (header
included), PSNR, LPIPS-alex, LPIPS-vgg and DISTS. The generative codecs are judged on DISTS and
LPIPS-vgg, not on LPIPS-alex, which the realistic decoder and gan-latent's refinement train on.
Classical codecs run at their lowest qualities in the same process on the same images.

A codec spec is ``ID`` or ``ID@DECODER`` (``msh-n96@realistic``: same bitstreams as
``msh-n96``, decoded by the GAN-trained synthesis; ``msh-n96@realistic:0.5``: halfway on the
realism knob), with ``+effortN`` after it to encode with ``--effort N`` aimed at that decoder
(``msh-n96-v2@realistic+effort40``: latents refined for the realistic decoder with LPIPS-alex
in the loss, ``models.refine``; with a realism setting, ``@realistic:0.5+effortN``, the
refinement still aims at the realistic decoder itself). Refined streams differ, so they are
compared with the faithful curve at the bpp they reach. ``--size 64`` resizes every image to 64x64
before coding (the face scenario); ``--split test`` keeps only the held-out part of
faces_utkface.

Writes per codec a JSON (CompressAI-like: means per quality plus per-image lists), results.md,
perceptual.png (bpp vs DISTS / LPIPS-vgg / PSNR), and with ``--crops`` side-by-side crops as PNG
(use it on Kodak only: the face sets' terms forbid publishing their images).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from jobs.rd_benchmark import EFFORT_SUFFIX, IMAGE_SUFFIXES, make_codec, roundtrip
from models.codec import Codec, parse_decoder
from models.registry import get_codec
from pipeline.images import psnr

METRICS = ("lpips-alex", "lpips-vgg", "dists")
LOW_QUALITIES = {
    "jpeg": [1, 3, 5, 10],
    "webp": [0, 2, 5, 10],
    "avif": [0, 5, 10, 20],
    "gan-latent": [1, 2, 3, 4, 5, 6],
}
LEARNED_LOW = [0.0, 0.5, 1.0, 1.5, 2.0]


@dataclass
class Point:
    spec: str
    quality: float
    bytes: list[int] = field(default_factory=list)
    bpp: list[float] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    scores: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METRICS})
    encode_s: list[float] = field(default_factory=list)
    decode_s: list[float] = field(default_factory=list)

    def mean(self, key: str) -> float:
        values = self.scores[key] if key in METRICS else getattr(self, key)
        return float(np.mean(values))


def load_images(directory: Path) -> list[tuple[str, np.ndarray]]:
    """Images under ``directory``, sub-folders included (faces_celebahq nests them), named by
    their relative path, in sorted order."""
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"no images under {directory}")
    out = []
    for p in files:
        with Image.open(p) as im:
            out.append((str(p.relative_to(directory)), np.asarray(im.convert("RGB"))))
    return out


def parse_spec(spec: str) -> tuple[str, str, int | None]:
    """``ID[@DECODER][+effortN]`` -> (codec id, decoder, effort or None)."""
    base, _, effort = spec.partition(EFFORT_SUFFIX)
    codec_id, _, decoder = base.partition("@")
    return codec_id, decoder or "faithful", int(effort) if effort else None


def build(spec: str, quality: float, effort: int | None) -> Codec:
    codec_id, decoder, spec_effort = parse_spec(spec)
    if decoder != "faithful":
        if spec_effort is None:
            return get_codec(codec_id, quality, decoder=decoder)
        return get_codec(codec_id, quality, decoder=decoder, effort=spec_effort,
                         effort_for=parse_decoder(decoder)[0])
    if codec_id == "gan-latent" and effort is not None:
        codec = get_codec(codec_id, quality)
        codec.effort = effort
        return codec
    return make_codec(spec, quality)  # ID or learned:PATH, with +effortN aimed at faithful


def qualities_for(spec: str) -> list[float]:
    codec_id = parse_spec(spec)[0]
    return [float(q) for q in LOW_QUALITIES.get(codec_id, LEARNED_LOW)]


def measure(spec: str, quality: float, images: list[tuple[str, np.ndarray]],
            effort: int | None, keep: dict | None = None) -> Point:
    from models.perceptual import perceptual_scores

    codec = build(spec, quality, effort)
    point = Point(spec, quality)
    for name, image in images:
        stream, decoded, encode_s, decode_s = roundtrip(codec, image)
        h, w = image.shape[:2]
        point.bytes.append(len(stream))
        point.bpp.append(8.0 * len(stream) / (h * w))
        point.psnr.append(psnr(image, decoded))
        for k, v in perceptual_scores(image, decoded, METRICS).items():
            point.scores[k].append(v)
        point.encode_s.append(encode_s)
        point.decode_s.append(decode_s)
        if keep is not None and name in keep:
            keep[name][(spec, quality)] = (decoded, point.bpp[-1])
    return point


def to_json(spec: str, points: list[Point], names: list[str], meta: dict) -> dict:
    return {
        "name": spec,
        "description": f"latentarc perceptual benchmark, {meta}",
        "meta": {"qualities": [p.quality for p in points], "images": names},
        "results": {
            "bpp": [p.mean("bpp") for p in points],
            "bytes": [p.mean("bytes") for p in points],
            "psnr-rgb": [p.mean("psnr") for p in points],
            **{m: [p.mean(m) for p in points] for m in METRICS},
            "encoding_time": [p.mean("encode_s") for p in points],
            "decoding_time": [p.mean("decode_s") for p in points],
        },
        "per_image": [{"quality": p.quality, "bytes": p.bytes, "psnr-rgb": p.psnr, **p.scores}
                      for p in points],
    }


def interpolate_at(results: dict, metric: str, bpp: float) -> float | None:
    """A curve's metric at ``bpp`` (linear in log-rate); None outside its measured range."""
    xs = np.log(np.asarray(results["bpp"]))
    ys = np.asarray(results[metric])
    order = np.argsort(xs)
    xs, ys = xs[order], ys[order]
    if not xs[0] <= np.log(bpp) <= xs[-1]:
        return None
    return float(np.interp(np.log(bpp), xs, ys))


def anchors_table(anchors: Path) -> list[str]:
    """Published Kodak points near 0.05 and 0.1 bpp from the DiffEIC evaluation."""
    path = anchors / "perceptual" / "diffeic_results_kodak.csv"
    if not path.exists():
        return []
    rows = list(csv.DictReader(path.open()))
    lines = ["| method | setting | bpp | LPIPS | DISTS | PSNR |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["method"] in ("HiFiC", "MS-ILLM") and 0.03 <= float(r["bpp"]) <= 0.25:
            lines.append(f"| {r['method']} | {r['setting']} | {float(r['bpp']):.3f} | {r['LPIPS']} | "
                         f"{r['DISTS']} | {r['PSNR']} |")
    return lines


def plot(results: dict[str, dict], anchors: Path | None, out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), dpi=110)
    published = []
    if anchors is not None and (anchors / "perceptual" / "diffeic_results_kodak.csv").exists() \
            and "kodak" in title.lower():
        published = list(csv.DictReader((anchors / "perceptual" / "diffeic_results_kodak.csv").open()))
    for ax, (key, label) in zip(axes, (("dists", "DISTS (lower is better)"),
                                       ("lpips-vgg", "LPIPS-vgg (lower is better)"),
                                       ("psnr-rgb", "PSNR RGB (dB)")), strict=True):
        for name, res in results.items():
            r = res["results"]
            ax.plot(r["bpp"], r[key], "o-", markersize=3, label=name)
        if key == "dists" and published:
            for method in ("HiFiC", "MS-ILLM"):
                pts = sorted((float(p["bpp"]), float(p["DISTS"])) for p in published
                             if p["method"] == method)
                if pts:
                    ax.plot(*zip(*pts, strict=True), "x:", color="grey", label=f"{method} (published)")
        ax.set_xscale("log")
        ax.set_xlabel("bits per pixel (whole bitstream)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def save_crops(keep: dict, images: dict[str, np.ndarray], out: Path, size: int = 192) -> list[Path]:
    """One PNG per image: the original and each codec's lowest-rate reconstruction, same crop."""
    paths = []
    for name, decoded in keep.items():
        ref = images[name]
        h, w = ref.shape[:2]
        y0, x0 = (h - size) // 2, (w - size) // 2
        tiles = [("original", ref)] + [(f"{spec} q{q:g} {bpp:.3f} bpp", img)
                                       for (spec, q), (img, bpp) in sorted(decoded.items())]
        strip = np.concatenate([t[y0:y0 + size, x0:x0 + size] for _, t in tiles], axis=1)
        path = out / f"crops-{Path(name).stem}.png"
        Image.fromarray(strip).save(path)
        (out / f"crops-{Path(name).stem}.txt").write_text(
            "left to right: " + "; ".join(label for label, _ in tiles) + "\n")
        paths.append(path)
    return paths


def run(args: argparse.Namespace, command: str) -> dict:
    torch.set_num_threads(args.threads)
    images = load_images(Path(args.dataset))
    if args.split == "test":
        from jobs.train_gan_latent import held_out

        images = [(n, im) for n, im in images if held_out(n)]
    images = images[: args.limit]
    if args.size:
        images = [(n, np.asarray(Image.fromarray(im).resize((args.size, args.size), Image.LANCZOS)))
                  for n, im in images]
    names = [n for n, _ in images]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keep = {n: {} for n in args.crops} if args.crops else None
    results: dict[str, dict] = {}
    points_by: dict[str, list[Point]] = {}
    for spec in args.codecs:
        qs = [float(q) for q in args.quality.get(spec, qualities_for(spec))]
        points = []
        for q in qs:
            crop = keep if q in qs[:2] else None  # crops of the two lowest qualities
            pt = measure(spec, q, images, args.effort, crop)
            points.append(pt)
            print(f"{spec} q={q:g}: {pt.mean('bytes'):.0f} B, bpp {pt.mean('bpp'):.4f}, "
                  f"PSNR {pt.mean('psnr'):.2f}, LPIPS-vgg {pt.mean('lpips-vgg'):.4f}, "
                  f"DISTS {pt.mean('dists'):.4f}, enc {pt.mean('encode_s'):.2f}s", flush=True)
        points_by[spec] = points
        label = spec.replace("@", "_").replace(":", "-")
        _, decoder, spec_effort = parse_spec(spec)
        results[spec] = to_json(spec, points, names, {
            "torch": torch.__version__,
            "effort": spec_effort if spec_effort is not None else args.effort,
            **({"effort_for": parse_decoder(decoder)[0]} if spec_effort is not None else {})})
        (out / f"{label}.json").write_text(json.dumps(results[spec], indent=1) + "\n")
    lines = [f"# Perceptual rate-distortion on {Path(args.dataset).name} ({len(images)} images"
             + (f", resized to {args.size}x{args.size}" if args.size else "")
             + (", held-out split" if args.split == "test" else "") + ")", "",
             f"Command: `{command}`", "",
             f"Machine: {platform.machine()}, {args.threads} torch thread(s). bpp counts every "
             "stored byte (header included). LPIPS-alex is a training loss of the generative "
             "codecs: judge them on DISTS and LPIPS-vgg.", "",
             "| codec | quality | bytes | bpp | PSNR (dB) | LPIPS-alex | LPIPS-vgg | DISTS | "
             "encode s | decode s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for spec, points in points_by.items():
        for p in points:
            lines.append(f"| {spec} | {p.quality:g} | {p.mean('bytes'):.0f} | {p.mean('bpp'):.4f} | "
                         f"{p.mean('psnr'):.2f} | {p.mean('lpips-alex'):.4f} | "
                         f"{p.mean('lpips-vgg'):.4f} | {p.mean('dists'):.4f} | "
                         f"{p.mean('encode_s'):.3f} | {p.mean('decode_s'):.3f} |")
    lines += comparisons(results, args)
    anchors = Path(args.anchors) if args.anchors else None
    if anchors is not None and "kodak" in Path(args.dataset).name.lower():
        table = anchors_table(anchors)
        if table:
            lines += ["", "## Published low-rate points on Kodak (DiffEIC's evaluation, "
                      "../shared/anchors/perceptual)", "", *table]
    plot(results, anchors, out / "perceptual.png", f"{Path(args.dataset).name}: {len(images)} images")
    lines += ["", "![perceptual RD](perceptual.png)"]
    if keep:
        full = dict(load_images(Path(args.dataset)))
        crops = save_crops(keep, {n: full[n] if not args.size else dict(images)[n] for n in keep}, out)
        lines += ["", "Crops (original, then each codec at its two lowest qualities): "
                  + ", ".join(f"`{p.name}`" for p in crops)]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return results


def comparisons(results: dict[str, dict], args: argparse.Namespace) -> list[str]:
    """The issue's two targets, computed from the curves of this run."""
    lines: list[str] = []
    for spec in results:
        codec_id, decoder, _ = parse_spec(spec)
        if parse_decoder(decoder)[0] != "realistic" or codec_id not in results:
            continue
        lines += ["", f"## {spec} against {codec_id} (faithful) at the same bpp", "",
                  "| bpp | DISTS faithful | DISTS realistic | change | PSNR faithful | PSNR realistic |",
                  "|---|---|---|---|---|---|"]
        for bpp in results[spec]["results"]["bpp"]:
            df = interpolate_at(results[codec_id]["results"], "dists", bpp)
            pf = interpolate_at(results[codec_id]["results"], "psnr-rgb", bpp)
            dr = interpolate_at(results[spec]["results"], "dists", bpp)
            pr = interpolate_at(results[spec]["results"], "psnr-rgb", bpp)
            if df is None or dr is None:
                continue
            lines.append(f"| {bpp:.3f} | {df:.4f} | {dr:.4f} | {100 * (dr / df - 1):+.1f}% | "
                         f"{pf:.2f} | {pr:.2f} |")
    if "gan-latent" in results:
        g = results["gan-latent"]["results"]
        lines += ["", "## gan-latent against each classical codec at its lowest quality", "",
                  "Paired over the same images: the share of images where gan-latent's DISTS is "
                  "lower, and a 95% bootstrap interval (2,000 resamples of the images, seed 0) of "
                  "the mean DISTS difference, gan-latent minus the other (negative: gan-latent "
                  "better).", "",
                  "| codec (lowest quality) | bytes | DISTS | gan-latent quality | gan-latent bytes | "
                  "bytes ratio | gan-latent DISTS | images better | mean difference [95% CI] |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for base in ("jpeg", "webp", "avif"):
            if base not in results:
                continue
            r = results[base]["results"]
            i = int(np.argmin(r["bytes"]))
            theirs = np.asarray(results[base]["per_image"][i]["dists"])
            for j, q in enumerate(results["gan-latent"]["meta"]["qualities"]):
                diff = np.asarray(results["gan-latent"]["per_image"][j]["dists"]) - theirs
                lo, hi = paired_interval(diff)
                lines.append(f"| {base} (q{results[base]['meta']['qualities'][i]:g}) | "
                             f"{r['bytes'][i]:.0f} | {r['dists'][i]:.4f} | {q:g} | {g['bytes'][j]:.0f} | "
                             f"{g['bytes'][j] / r['bytes'][i]:.3f} | {g['dists'][j]:.4f} | "
                             f"{np.mean(diff < 0):.0%} | {diff.mean():+.4f} [{lo:+.4f}, {hi:+.4f}] |")
    return lines


def paired_interval(diff: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of per-image differences."""
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, (resamples, diff.size))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def parse_qualities(items: list[str]) -> dict[str, list[float]]:
    out = {}
    for item in items:
        spec, _, values = item.partition("=")
        out[spec] = [float(v) for v in values.split(",")]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.benchmark --perceptual", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="directory of images")
    p.add_argument("--out", required=True)
    p.add_argument("--codecs", nargs="+", default=["jpeg", "webp", "avif", "msh-n96",
                                                    "msh-n96@realistic"])
    p.add_argument("--quality", nargs="*", default=[], metavar="SPEC=Q1,Q2",
                   help="qualities per codec spec (default: each codec's low range)")
    p.add_argument("--size", type=int, default=0, help="resize images to SIZE x SIZE first")
    p.add_argument("--split", choices=["all", "test"], default="all",
                   help="test: only the held-out faces_utkface files (jobs.train_gan_latent)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--effort", type=int, default=None, help="gan-latent refinement steps")
    p.add_argument("--crops", nargs="*", default=[], help="image file names to crop (Kodak only)")
    p.add_argument("--anchors", default=None, help="../shared/anchors (published points)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    args.quality = parse_qualities(args.quality)
    command = "python -m jobs.benchmark --perceptual " + " ".join(argv if argv is not None else sys.argv[1:])
    run(args, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
