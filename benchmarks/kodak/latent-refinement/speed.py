"""How long does encode-time refinement take on a device, by image size? (issue 6: the default
of ``--effort-max-mp``, chosen from CPU figures, and whether a GPU worker wants another one.)

    python benchmarks/kodak/latent-refinement/speed.py --device cuda --kodak DIR --photo FILE \
        --mp 1 4 12 16 24 --budget-s 150 --out DIR
    python benchmarks/kodak/latent-refinement/speed.py --check DIR   # here, on the CPU

msh-n96-v2 at quality -1, three settings: effort 0 (no refinement), 20 steps for the faithful
decoder, 40 steps for the realistic one (``--effort-for realistic``, the expensive one: LPIPS-alex
through the realistic g_s). Timed: ``encode_batch`` of one image, device synchronised, after an
untimed warm-up encode of each setting. Images: the first ``--n-kodak`` of ``--kodak`` (0.39 MP),
then ``--photo`` resized (Lanczos) to each ``--mp``, smallest first; a case whose time, predicted
from the last seconds per MP of its setting, would overrun ``--budget-s`` is skipped and listed as
skipped. The realistic cases run with the CPU's tile cap (``refine.PERCEPTUAL_MAX_PIXELS``, set
for a CPU's memory) on any device, as the package did until session 21; ``--tile-scale K`` adds
realistic cases with a cap K times larger, to see what tiles cost on a GPU (K = 8 is the GPU's
default since session 21, ``refine.GPU_PERCEPTUAL_MAX_PIXELS``).

The Kodak streams go to ``OUT/streams`` with the PSNR of their decode on the device; ``--check
OUT`` decodes them here, on the CPU, and compares: a stream refined on a GPU must decode on a
CPU. Kodak is evaluation data; nothing is trained here.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from models import refine  # noqa: E402
from models.registry import DEFAULT_CODEC, get_codec  # noqa: E402
from pipeline.images import psnr  # noqa: E402

QUALITY = -1.0
SETTINGS = {  # name -> get_codec keyword arguments
    "effort 0": {"effort": 0},
    "faithful, 20 steps": {"effort": 20},
    "realistic, 40 steps": {"effort_for": "realistic", "decoder": "realistic"},
}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _resized(photo: Image.Image, megapixels: float) -> np.ndarray:
    scale = math.sqrt(megapixels * 1e6 / (photo.width * photo.height))
    size = (max(16, round(photo.width * scale)), max(16, round(photo.height * scale)))
    return np.asarray(photo.resize(size, Image.LANCZOS))


def _timed(codec, image: np.ndarray, device: str) -> tuple[bytes, float, float | None]:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    t0 = time.perf_counter()
    stream = codec.encode_batch([image])[0]
    _sync(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    return stream, seconds, peak


def measure(args: argparse.Namespace) -> None:
    device = args.device
    out = Path(args.out)
    (out / "streams").mkdir(parents=True, exist_ok=True)
    # effort_max_pixels inf: this measures what the --effort-max-mp default cuts off
    codecs = {name: get_codec(DEFAULT_CODEC, QUALITY, effort_max_pixels=math.inf, **kw).to(device)
              for name, kw in SETTINGS.items()}
    kodak = sorted(Path(args.kodak).glob("*.png"))[:args.n_kodak]
    images = [(p.stem, np.asarray(Image.open(p).convert("RGB"))) for p in kodak]
    photo = Image.open(args.photo).convert("RGB")
    images += [(f"{Path(args.photo).stem}@{mp:g}MP", _resized(photo, mp)) for mp in args.mp]
    cases = [(name, img, setting, 1) for name, img in images for setting in SETTINGS]
    cases += [(name, img, "realistic, 40 steps", k) for name, img in images[args.n_kodak:]
              for k in args.tile_scale]
    for codec in codecs.values():  # warm-up: kernels, cudnn's choices, LPIPS weights
        codec.encode_batch([images[0][1]])
    _sync(device)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    rows: list[dict] = []
    rate: dict[tuple[str, int], float] = {}  # last seconds per MP of each setting
    start = time.perf_counter()
    base_cap, gpu_cap = refine.PERCEPTUAL_MAX_PIXELS, refine.GPU_PERCEPTUAL_MAX_PIXELS
    for image_name, image, setting, scale in cases:
        h, w = image.shape[:2]
        mp = h * w / 1e6
        left = args.budget_s - (time.perf_counter() - start)
        guess = rate.get((setting, scale), 0.0) * mp
        row = {"image": image_name, "height": h, "width": w, "megapixels": round(mp, 3),
               "setting": setting, "tile_cap_scale": scale}
        if guess > left:
            rows.append({**row, "skipped": f"predicted {guess:.0f} s, {left:.0f} s left"})
            print(f"{image_name:>20} {setting:<20} x{scale} skipped (predicted {guess:.0f} s, "
                  f"{left:.0f} s of the budget left)", flush=True)
            continue
        refine.PERCEPTUAL_MAX_PIXELS = refine.GPU_PERCEPTUAL_MAX_PIXELS = base_cap * scale
        try:
            stream, seconds, peak = _timed(codecs[setting], image, device)
        finally:
            refine.PERCEPTUAL_MAX_PIXELS, refine.GPU_PERCEPTUAL_MAX_PIXELS = base_cap, gpu_cap
        rate[(setting, scale)] = seconds / mp
        row.update(seconds=round(seconds, 3), seconds_per_mp=round(seconds / mp, 3),
                   bytes=len(stream), bpp=round(8 * len(stream) / (h * w), 4),
                   peak_gpu_mib=None if peak is None else round(peak))
        if image_name in {n for n, _ in images[:args.n_kodak]} and scale == 1:
            decoded = codecs[setting].decode_batch([stream])[0].image
            row["psnr_device"] = round(psnr(image, decoded), 4)
            key = f"{image_name}__{setting.replace(' ', '_').replace(',', '')}"
            (out / "streams" / f"{key}.bin").write_bytes(stream)
            row["stream"] = f"streams/{key}.bin"
        rows.append(row)
        print(f"{image_name:>20} {setting:<20} x{scale} {seconds:7.2f} s  {seconds / mp:6.2f} s/MP"
              f"  {row['bpp']:.4f} bpp  peak {row['peak_gpu_mib']} MiB", flush=True)
    summary = {"command": " ".join(sys.argv), "device": device, "device_name": name,
               "torch": torch.__version__, "codec": DEFAULT_CODEC, "quality": QUALITY,
               "perceptual_tile_cap_pixels": base_cap, "rows": rows}
    (out / "speed.json").write_text(json.dumps(summary, indent=2) + "\n")


def check(args: argparse.Namespace) -> None:
    """Decode the device's streams here, on the CPU, and compare with the device's PSNR."""
    out = Path(args.check)
    summary = json.loads((out / "speed.json").read_text())
    kodak_dir = Path(args.kodak)
    codecs = {name: get_codec(DEFAULT_CODEC, QUALITY, decoder=kw.get("decoder", "faithful"))
              for name, kw in SETTINGS.items()}
    worst = 0.0
    for row in summary["rows"]:
        if "stream" not in row:
            continue
        if not (out / row["stream"]).exists():  # (a device call returns a limited file count)
            print(f"{row['image']} {row['setting']:<20} stream not returned: not checked")
            continue
        image = np.asarray(Image.open(kodak_dir / f"{row['image']}.png").convert("RGB"))
        decoded = codecs[row["setting"]].decode_batch([(out / row["stream"]).read_bytes()])[0]
        here = psnr(image, decoded.image)
        worst = max(worst, abs(here - row["psnr_device"]))
        print(f"{row['image']} {row['setting']:<20} device {row['psnr_device']:.4f} dB, "
              f"cpu {here:.4f} dB")
    print(f"largest PSNR difference device vs cpu: {worst:.4f} dB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--kodak", default=str(ROOT.parent / "shared/datasets/kodak"))
    parser.add_argument("--n-kodak", type=int, default=3)
    parser.add_argument("--photo", help="a large photo, resized to each --mp")
    parser.add_argument("--mp", type=float, nargs="*", default=[1, 4, 12, 16, 24])
    parser.add_argument("--tile-scale", type=int, nargs="*", default=[],
                        help="extra realistic cases with the tile cap this many times larger")
    parser.add_argument("--budget-s", type=float, default=150.0)
    parser.add_argument("--out", help="results folder (measure)")
    parser.add_argument("--check", help="a results folder to decode here (check)")
    args = parser.parse_args()
    if args.check:
        check(args)
    else:
        if not (args.photo and args.out):
            parser.error("--photo and --out are needed to measure")
        measure(args)


if __name__ == "__main__":
    main()
