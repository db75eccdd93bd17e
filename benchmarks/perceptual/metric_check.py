"""Our LPIPS-alex, LPIPS-vgg and DISTS on the five TID2013 pairs that come with the official values.

    make checks    # once: python -m jobs.fetch_metric_checks
    python benchmarks/perceptual/metric_check.py > benchmarks/perceptual/metric-check.md

The perceptual tables in this folder are computed with `models.perceptual`. This prints, per
pair, the value the official LPIPS and DISTS code gave (pyiqa's ResultsCalibra, as published
there) next to ours, and the difference. `tests/test_perceptual.py` asserts the same agreement;
this is the table behind it. There is no official LPIPS-vgg value in the file: ours is listed
for the record.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from jobs.fetch_metric_checks import PACKAGE, STAMP, checks_dir, official_values, pair_images  # noqa: E402
from models.perceptual import perceptual_scores  # noqa: E402


def main() -> int:
    folder = checks_dir()
    if not (folder / STAMP).is_file():
        print(f"{folder} is missing: run `make checks`", file=sys.stderr)
        return 1
    official = official_values(folder)
    print(f"# LPIPS / DISTS against the official code's values ({PACKAGE.requirement}, ResultsCalibra)\n")
    print("Command: `python benchmarks/perceptual/metric_check.py`. Pairs: TID2013 reference and "
          "distorted images, 512x384, no resizing.\n")
    print("| pair | LPIPS-alex official | ours | diff | DISTS official | ours | diff | LPIPS-vgg ours |")
    print("|---|---|---|---|---|---|---|---|")
    worst = {"lpips": 0.0, "dists": 0.0}
    for pair in official["lpips"]:
        ours = perceptual_scores(*pair_images(folder, pair))
        cells = []
        for metric, name in (("lpips", "lpips-alex"), ("dists", "dists")):
            diff = ours[name] - float(official[metric][pair])
            worst[metric] = max(worst[metric], abs(diff))
            cells += [official[metric][pair], f"{ours[name]:.5f}", f"{diff:+.5f}"]
        print(f"| {pair} | {' | '.join(cells)} | {ours['lpips-vgg']:.5f} |")
    print(f"\nLargest |difference|: LPIPS-alex {worst['lpips']:.5f}, DISTS {worst['dists']:.5f} "
          "(the official values are printed to 4-5 decimals).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
