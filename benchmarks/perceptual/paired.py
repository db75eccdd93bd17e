"""Per image: a curve's DISTS and PSNR against the faithful decoder's curve of the same image.

    python benchmarks/perceptual/paired.py FAITHFUL.json OTHER.json

Both files come from one `python -m jobs.benchmark --perceptual` run. results.md compares mean
curves (mean bpp against mean DISTS); this compares each image with itself: for every image
and quality of OTHER, the faithful curve of that image (its qualities, linear in log bytes:
one image has one pixel count) is read at OTHER's bytes. Images whose bytes fall outside
their faithful curve's range are counted and left out, never extrapolated.
"""

from __future__ import annotations

import json
import sys

import numpy as np


def main(argv: list[str]) -> int:
    faithful, other = (json.loads(open(p).read()) for p in argv[:2])
    names = faithful["meta"]["images"]
    if other["meta"]["images"] != names:
        raise SystemExit("the two files are not over the same images")
    curve = sorted(faithful["per_image"], key=lambda p: p["quality"])
    print(f"{other['name']} against {faithful['name']} (faithful), per image at the same bytes\n")
    print("| quality | images in range | mean bpp | DISTS change: mean | median | range | "
          "images at -20 % or better | PSNR - faithful: mean | worst |")
    print("|---|---|---|---|---|---|---|---|---|")
    for point in other["per_image"]:
        changes, psnr = [], []
        for i in range(len(names)):
            x = np.log([c["bytes"][i] for c in curve])
            b = np.log(point["bytes"][i])
            if not x[0] <= b <= x[-1] or np.any(np.diff(x) <= 0):
                continue
            d = float(np.interp(b, x, [c["dists"][i] for c in curve]))
            p = float(np.interp(b, x, [c["psnr-rgb"][i] for c in curve]))
            changes.append(point["dists"][i] / d - 1)
            psnr.append(point["psnr-rgb"][i] - p)
        if not changes:
            print(f"| {point['quality']:g} | 0 of {len(names)} | | | | | | | |")
            continue
        c = 100 * np.asarray(changes)
        mean_bpp = np.mean(other["results"]["bpp"][other["meta"]["qualities"].index(point["quality"])])
        print(f"| {point['quality']:g} | {len(c)} of {len(names)} | {mean_bpp:.3f} | "
              f"{c.mean():+.1f} % | {np.median(c):+.1f} % | {c.min():+.1f} .. {c.max():+.1f} % | "
              f"{int(np.sum(c <= -20))} | {np.mean(psnr):+.2f} dB | {min(psnr):+.2f} dB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
