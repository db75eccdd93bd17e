"""JPEG copies of a folder of PNGs, for an archive-of-JPEGs benchmark on images a codec never
trained on (msh-n96-v2 trained on every file of imagenet_samples, so that folder cannot say).

    python benchmarks/jpeg_unseen/make_jpegs.py ../shared/datasets/kodak /tmp/kodak-q90 --quality 90

Pillow's encoder, 4:2:0 chroma subsampling, no optimisation: what a camera or a web pipeline
typically writes. The copies are derived from evaluation images: never train on them either.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="folder of PNG images")
    parser.add_argument("out", type=Path, help="folder for the JPEG copies (created)")
    parser.add_argument("--quality", type=int, default=90)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for path in sorted(args.src.glob("*.png")):
        with Image.open(path) as im:
            im.convert("RGB").save(args.out / f"{path.stem}.jpg", "JPEG", quality=args.quality,
                                   subsampling=2)
    print(f"{len(list(args.out.glob('*.jpg')))} JPEGs in {args.out}")


if __name__ == "__main__":
    main()
