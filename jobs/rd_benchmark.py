"""Rate-distortion benchmark of bare codecs on an image set (`python -m jobs.benchmark --dataset`).

Every codec at several qualities, every image: real bytes (the whole framed bitstream, header
included) -> bpp; PSNR (RGB, 8-bit); MS-SSIM (pytorch-msssim, images of at least 161 px);
encode and decode seconds. Classical baselines (Pillow JPEG, WebP method 6, AVIF at a fixed
speed) run in the same process on the same images, so BD-rates between them and the learned
codecs compare like with like. Results: CompressAI-format JSON per codec (means per quality,
plus per-image lists), a Markdown table, BD-rate tables (``bdrate.py`` from the anchors
folder: PSNR, PCHIP in log-rate, over the full overlap), and an RD plot.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.classical import AvifCodec, JpegCodec, WebpCodec
from models.codec import Codec
from models.registry import get_codec, list_codecs
from pipeline.images import psnr

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
MSSSIM_MIN_SIDE = 161

# Qualities chosen so that each classical curve spans about 0.15-1.0 bpp on Kodak where the
# codec can reach it (JPEG cannot go much below 0.2 bpp).
DEFAULT_QUALITIES = {
    "jpeg": [5, 10, 20, 35, 50, 75, 90],
    "webp": [2, 10, 25, 45, 65, 80, 90],
    "avif": [5, 15, 30, 45, 60, 75],
}
ANCHOR_FILES = ("jpeg.json", "webp.json", "bpg_444_x265_ycbcr.json", "vtm.json",
                "compressai-bmshj2018-hyperprior_mse_cpu.json")


class WebpMethod6(WebpCodec):
    """WebP at its slowest, best-compressing setting: the fair baseline for a benchmark."""

    description = "WebP lossy through Pillow (method 6)"

    def save_options(self) -> dict:
        return {"quality": int(round(self.quality)), "method": 6}


BASELINES: dict[str, type[Codec]] = {"jpeg": JpegCodec, "webp": WebpMethod6, "avif": AvifCodec}


@dataclass
class Point:
    codec: str
    quality: float
    bpp: list[float]
    psnr: list[float]
    msssim: list[float | None]
    encode_s: list[float]
    decode_s: list[float]


def is_kodak(images: list[tuple[str, np.ndarray]]) -> bool:
    """Whether ``images`` are the 24 Kodak images (the published anchors' set): by name and
    size, not by the folder's name (two thumbnails in a folder named kodak were compared)."""
    return (sorted(n for n, _ in images) == [f"kodim{i:02d}.png" for i in range(1, 25)]
            and all(sorted(a.shape[:2]) == [512, 768] for _, a in images))


def load_images(directory: Path, limit: int | None = None) -> list[tuple[str, np.ndarray]]:
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise SystemExit(f"no images in {directory}")
    out = []
    for p in files:
        with Image.open(p) as im:
            out.append((p.name, np.asarray(im.convert("RGB"))))
    return out


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float | None:
    if min(a.shape[:2]) < MSSSIM_MIN_SIDE:
        return None
    from pytorch_msssim import ms_ssim as msssim

    ta = torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].float()  # copies: may be read-only
    tb = torch.from_numpy(np.array(b)).permute(2, 0, 1)[None].float()
    return float(msssim(ta, tb, data_range=255.0))


EFFORT_SUFFIX = "+effort"


def make_codec(spec: str, quality: float) -> Codec:
    """A registered codec id, a baseline, or ``learned:PATH`` for an unregistered weights file
    (a training checkpoint exported for measurement; its streams never leave the benchmark);
    ``+effortN`` after a learned or generative codec encodes with ``--effort N``
    (``msh-n96-v2+effort20``), so one run can hold a codec with and without it."""
    codec_id, _, effort_text = spec.partition(EFFORT_SUFFIX)
    effort = int(effort_text) if effort_text else None
    if codec_id in BASELINES:
        if effort is not None:
            raise SystemExit(f"{codec_id} takes no {EFFORT_SUFFIX}")
        return BASELINES[codec_id](quality)
    if codec_id.startswith("learned:"):
        from models.learned import LearnedCodec

        class Unregistered(LearnedCodec):
            id, code = codec_id, 255

        return Unregistered(quality, model=_load_model(codec_id[len("learned:"):]), effort=effort or 0)
    return get_codec(codec_id, quality, effort=effort)


_MODELS: dict = {}


def _load_model(path: str):
    from models.learned import LearnedModel

    if path not in _MODELS:
        _MODELS[path] = LearnedModel.from_file(path)
    return _MODELS[path]


def _label(spec: str) -> str:
    """File-system friendly name for results (learned:/x/y.safetensors+effort20 -> y+effort20)."""
    codec_id, sep, effort = spec.partition(EFFORT_SUFFIX)
    name = Path(codec_id.split(":", 1)[1]).stem if codec_id.startswith("learned:") else codec_id
    return name + sep + effort


def roundtrip(codec: Codec, image: np.ndarray) -> tuple[bytes, np.ndarray, float, float]:
    """One image through a bare codec: (stream, decoded pixels, encode s, decode s)."""
    t0 = time.perf_counter()
    stream = codec.encode_batch([image])[0]
    t1 = time.perf_counter()
    decoded = codec.decode_batch([stream])[0].image
    return stream, decoded, t1 - t0, time.perf_counter() - t1


def measure(codec_id: str, quality: float, images: list[tuple[str, np.ndarray]]) -> Point:
    codec = make_codec(codec_id, quality)
    point = Point(codec_id, quality, [], [], [], [], [])
    for _, image in images:
        stream, decoded, encode_s, decode_s = roundtrip(codec, image)
        h, w = image.shape[:2]
        point.bpp.append(8.0 * len(stream) / (h * w))
        point.psnr.append(psnr(image, decoded))
        point.msssim.append(ms_ssim(image, decoded))
        point.encode_s.append(encode_s)
        point.decode_s.append(decode_s)
    return point


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def compressai_json(codec_id: str, points: list[Point], names: list[str], versions: dict) -> dict:
    """CompressAI's results format: one list entry per quality, each the mean over images."""
    return {
        "name": codec_id,
        "description": f"latentarc benchmark, {versions}",
        "meta": {"qualities": [p.quality for p in points], "images": names},
        "results": {
            "bpp": [_mean(p.bpp) for p in points],
            "psnr-rgb": [_mean(p.psnr) for p in points],
            "ms-ssim-rgb": [_mean(p.msssim) for p in points],
            "encoding_time": [_mean(p.encode_s) for p in points],
            "decoding_time": [_mean(p.decode_s) for p in points],
        },
        "per_image": [
            {"quality": p.quality, "bpp": p.bpp, "psnr-rgb": p.psnr, "ms-ssim-rgb": p.msssim,
             "encoding_time": p.encode_s, "decoding_time": p.decode_s}
            for p in points
        ],
    }


def load_bdrate(anchors: Path):
    spec = importlib.util.spec_from_file_location("bdrate", anchors / "bdrate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bdrate"] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def bd_table(bdrate, tests: dict[str, Path], anchors: dict[str, Path]) -> list[str]:
    header = "| codec | " + " | ".join(f"BD-rate vs {a}" for a in anchors) + " |"
    lines = [header, "|---" * (len(anchors) + 1) + "|"]
    for name, path in tests.items():
        test = bdrate.load_curve(str(path))
        cells = []
        for apath in anchors.values():
            try:
                value, (lo, hi) = bdrate.bd_rate(bdrate.load_curve(str(apath)), test)
                cells.append("no overlap" if not np.isfinite(value)
                             else f"{value:+.1f}% ({lo:.1f}-{hi:.1f} dB)")
            except Exception as exc:  # too few points
                cells.append(f"n/a ({type(exc).__name__}: {exc})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def plot(results: dict[str, dict], anchors: dict[str, Path], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    for name, path in anchors.items():
        data = json.loads(path.read_text())["results"]
        ax.plot(data["bpp"], data["psnr-rgb"], ":", color="grey", alpha=0.7, linewidth=1)
        inside = [i for i, b in enumerate(data["bpp"]) if b <= 1.5]
        if inside:
            i = inside[-1]
            ax.annotate(Path(name).stem, (data["bpp"][i], data["psnr-rgb"][i]), fontsize=7, color="grey")
    for name, res in results.items():
        r = res["results"]
        ax.plot(r["bpp"], r["psnr-rgb"], "o-", label=f"{name} (measured)", markersize=3)
    ax.set_xlim(0, 1.6)
    ax.set_xlabel("bits per pixel (whole bitstream)")
    ax.set_ylabel("PSNR RGB (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def run(dataset: Path, out: Path, codecs: list[str], anchors_dir: Path | None,
        limit: int | None, qualities: dict[str, list[float]], command: str) -> dict:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    images = load_images(dataset, limit)
    names = [n for n, _ in images]
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    for codec_id in codecs:
        qs = qualities.get(codec_id) or DEFAULT_QUALITIES.get(codec_id) or _learned_qualities(codec_id)
        points = []
        for q in qs:
            point = measure(codec_id, q, images)
            points.append(point)
            print(f"{_label(codec_id)} q={q:g}: bpp {_mean(point.bpp):.3f} PSNR {_mean(point.psnr):.2f} "
                  f"enc {_mean(point.encode_s):.3f}s dec {_mean(point.decode_s):.3f}s", flush=True)
        codec = make_codec(codec_id, qs[0])
        versions = {**codec.versions(), **({"weights_sha256": codec.weights_sha256()}
                                           if codec.weights_sha256() else {}),
                    **({"effort": str(codec.effort)} if EFFORT_SUFFIX in codec_id else {})}
        label = _label(codec_id)
        results[label] = compressai_json(label, points, names, versions)
        (out / f"{label}.json").write_text(json.dumps(results[label], indent=1) + "\n")

    lines = [f"# Rate-distortion on {dataset.name} ({len(images)} images)", "",
             f"Command: `{command}`", "",
             f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads; "
             "times are per image, mean over images.", "",
             "| codec | quality | bpp | PSNR (dB) | MS-SSIM | encode s | decode s |",
             "|---|---|---|---|---|---|---|"]
    for codec_id, res in results.items():
        r = res["results"]
        for i, q in enumerate(res["meta"]["qualities"]):
            ms = r["ms-ssim-rgb"][i]
            lines.append(f"| {codec_id} | {q:g} | {r['bpp'][i]:.3f} | {r['psnr-rgb'][i]:.2f} | "
                         f"{'-' if ms is None else f'{ms:.4f}'} | {r['encoding_time'][i]:.3f} | "
                         f"{r['decoding_time'][i]:.3f} |")
    anchors: dict[str, Path] = {}
    if anchors_dir is not None and (anchors_dir / "bdrate.py").exists():
        bdrate = load_bdrate(anchors_dir)
        tests = {c: out / f"{c}.json" for c in results}
        measured = {f"{b} (measured)": out / f"{b}.json" for b in BASELINES if b in results}
        lines += ["", "## BD-rate (PSNR) against the baselines measured in this run", ""]
        lines += bd_table(bdrate, tests, measured)
        anchors = {f: anchors_dir / "kodak" / f for f in ANCHOR_FILES if (anchors_dir / "kodak" / f).exists()}
        if anchors and is_kodak(images):
            lines += ["", "## BD-rate (PSNR) against published Kodak anchors (../shared/anchors/kodak)", ""]
            lines += bd_table(bdrate, tests, anchors)
        else:
            if anchors and "kodak" in dataset.name.lower():  # a --limit, or a folder so named
                lines += ["", f"Published Kodak anchors not compared: they are over the 24 Kodak "
                          f"images at 768x512, and this run measured {len(images)} other or "
                          "fewer images."]
            anchors = {}
        lines += ["", "BD-rate: bdrate.py from the anchors folder, PSNR, PCHIP in log-rate, over the "
                  "full overlap of the two curves; negative = fewer bits than the anchor."]
    plot(results, anchors, out / "rd.png", f"{dataset.name}: {len(images)} images")
    lines += ["", "![RD plot](rd.png)"]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return results


def _learned_qualities(codec_id: str) -> list[float]:
    """Learned codecs: their trained levels 1..7, and 0 and 0.5 below them (gains extrapolated
    beyond the lowest trained level) so that the curve reaches down to about 0.15 bpp on Kodak,
    the low end of the range that the issue's comparison asks for."""
    codec_id = codec_id.partition(EFFORT_SUFFIX)[0]
    info = None if codec_id.startswith("learned:") else next(
        (c for c in list_codecs() if c.id == codec_id), None)
    if not codec_id.startswith("learned:") and (info is None or info.quality_range is None):
        raise SystemExit(f"rd: {codec_id} is {'not a codec id' if info is None else 'lossless'}; "
                         "a rate-distortion curve needs a lossy codec with a quality range")
    if info is None or info.kind == "learned":
        return [0.0, 0.5, *(float(q) for q in range(1, 8))]
    lo, hi = info.quality_range
    return [float(q) for q in np.arange(lo, hi + 1)]

