"""The faithful restore of streams refined for the realistic decoder, on whole Kodak images.

    python benchmarks/perceptual/kodak-v5/faithful_restore.py --quality -1 \
        --out benchmarks/perceptual/kodak-v5/faithful-restore.json

Encodes each Kodak image with ``--effort-for realistic`` (the package's default 40 steps),
decodes the stream with both decoders, and compares each with the faithful decoder's curve of
the same image (msh-n96-v2.json of this folder, same run's weights) at the stream's bytes,
as ``../paired.py`` does. Answers: what does an archive refined for the realistic decoder cost
someone who restores it faithfully?
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from models.perceptual import perceptual_scores  # noqa: E402
from models.registry import get_codec  # noqa: E402
from pipeline.images import psnr  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quality", type=float, default=-1.0)
    p.add_argument("--dataset", default=str(ROOT.parent / "shared/datasets/kodak"))
    p.add_argument("--curve", default=str(Path(__file__).parent / "msh-n96-v2.json"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    curve = json.loads(Path(args.curve).read_text())
    points = sorted(curve["per_image"], key=lambda c: c["quality"])
    encoder = get_codec("msh-n96-v2", args.quality, effort_for="realistic")
    decoders = {d: get_codec("msh-n96-v2", args.quality, decoder=d)
                for d in ("faithful", "realistic")}
    rows = []
    for i, name in enumerate(curve["meta"]["images"]):
        image = np.asarray(Image.open(Path(args.dataset) / name).convert("RGB"))
        started = time.monotonic()
        stream = encoder.encode_batch([image])[0]
        row = {"image": name, "bytes": len(stream), "encode_s": round(time.monotonic() - started, 1)}
        x = np.log([c["bytes"][i] for c in points])
        for d, codec in decoders.items():
            out = codec.decode_batch([stream])[0].image
            row[f"psnr_{d}"] = psnr(image, out)
            row[f"dists_{d}"] = perceptual_scores(image, out, ("dists",))["dists"]
        inside = x[0] <= np.log(len(stream)) <= x[-1]
        for key in ("dists", "psnr-rgb"):
            ys = [c[key][i] for c in points]
            row[f"curve_{key}"] = float(np.interp(np.log(len(stream)), x, ys)) if inside else None
        rows.append(row)
        print(json.dumps(row), flush=True)
    ok = [r for r in rows if r["curve_dists"] is not None]
    summary = {d: {"dists_change_mean": float(np.mean([r[f"dists_{d}"] / r["curve_dists"] - 1
                                                       for r in ok])),
                   "psnr_diff_mean": float(np.mean([r[f"psnr_{d}"] - r["curve_psnr-rgb"] for r in ok])),
                   "psnr_diff_worst": float(min(r[f"psnr_{d}"] - r["curve_psnr-rgb"] for r in ok))}
               for d in decoders}
    result = {"quality": args.quality, "effort": encoder.effort, "images_in_range": len(ok),
              "images": len(rows), "bpp_mean": float(np.mean([8 * r["bytes"] / (768 * 512)
                                                              for r in rows])),
              "summary": summary, "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
