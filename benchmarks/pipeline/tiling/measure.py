"""Peak memory and time of one large photo through a learned codec, tiled vs whole-image.

Each mode runs in a fresh child process (peak RSS = the child's ru_maxrss): load the codec,
encode the photo, decode the stream, then decode the other mode's stream too (cross check:
symbols must agree, pixels within a level). "whole" raises models.tiling.TILE_ABOVE_PIXELS
above the photo so that g_a and g_s run in one pass, as before tiling.

    python benchmarks/pipeline/tiling/measure.py --image ../shared/datasets/wikipedia_photos_hr/006.png \
        --scale 3 --codec msh-n96 --out benchmarks/pipeline/tiling
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))


def child(args: argparse.Namespace) -> None:
    import torch

    import models.tiling as tiling
    from models.registry import get_codec
    from pipeline.images import psnr

    torch.set_num_threads(args.threads)
    if args.mode == "whole":
        tiling.TILE_ABOVE_PIXELS = 1 << 62
    if args.tile_latents:
        tiling.TILE_LATENTS = args.tile_latents
    image = np.load(args.array)
    codec = get_codec(args.codec, args.quality)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    stream = codec.encode_batch([image])[0]
    t1 = time.perf_counter()
    decoded = codec.decode_batch([stream])[0]
    t2 = time.perf_counter()
    Path(args.stream).write_bytes(stream)
    print(json.dumps({
        "mode": args.mode, "bytes": len(stream), "bpp": 8 * len(stream) / (image.shape[0] * image.shape[1]),
        "psnr": psnr(image, decoded.image), "encode_s": round(t1 - t0, 2), "decode_s": round(t2 - t1, 2),
        "rss_before_mib": round(base / 1024, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "content_sha": __import__("hashlib").sha256(decoded.content).hexdigest(),
        "pixels_sha": __import__("hashlib").sha256(decoded.image.tobytes()).hexdigest(),
    }), flush=True)
    np.save(args.stream + ".npy", decoded.image)


def tiling_defaults() -> int:
    from models.tiling import TILE_LATENTS

    return TILE_LATENTS


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", required=True)
    p.add_argument("--scale", type=float, default=3.0, help="upscale factor (Lanczos) to reach 12 MP+")
    p.add_argument("--codec", default="msh-n96")
    p.add_argument("--quality", type=float, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tile-latents", type=int, help="tile core in latents (default: models.tiling's)")
    p.add_argument("--out", default="benchmarks/pipeline/tiling")
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--array", help=argparse.SUPPRESS)
    p.add_argument("--stream", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode:
        child(args)
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "latentarc-tiling"
    work.mkdir(exist_ok=True)
    im = Image.open(args.image).convert("RGB")
    im = im.resize((round(im.width * args.scale), round(im.height * args.scale)), Image.LANCZOS)
    array = work / "image.npy"
    np.save(array, np.asarray(im))
    results = {}
    for mode in ("tiled", "whole"):
        cmd = [sys.executable, __file__, "--image", args.image, "--codec", args.codec,
               "--threads", str(args.threads), "--mode", mode, "--array", str(array),
               "--stream", str(work / f"{mode}.bin")]
        if args.quality is not None:
            cmd += ["--quality", str(args.quality)]
        if args.tile_latents:
            cmd += ["--tile-latents", str(args.tile_latents)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
        print(results[mode], flush=True)
    a = np.load(work / "tiled.bin.npy").astype(int)
    b = np.load(work / "whole.bin.npy").astype(int)
    summary = {
        "command": "python " + " ".join(sys.argv),
        "image": f"{args.image} x{args.scale:g} = {im.width}x{im.height} "
                 f"({im.width * im.height / 1e6:.1f} MP)",
        "codec": args.codec, "threads": args.threads, "results": results,
        "tile_latents": args.tile_latents or tiling_defaults(),
        "same_symbols": results["tiled"]["content_sha"] == results["whole"]["content_sha"],
        "max_pixel_diff_between_modes": int(np.abs(a - b).max()),
        "share_of_pixels_differing": float(np.mean(a != b)),
        "loadavg_1min_at_end": os.getloadavg()[0],
    }
    (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
