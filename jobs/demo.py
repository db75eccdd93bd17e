"""`make demo`: build a small WebDataset from real photos, compress, restore, verify, report.

The photos are the ones scikit-image ships inside its wheel (astronaut, coffee, chelsea, rocket,
Hubble deep field, ...), so the demo needs no network and no ../shared. Everything runs on an
in-process Ray, on local files under ``--out`` (default ``demo-out/``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from models.registry import DEFAULT_CODEC
from pipeline.cli import summary_table
from pipeline.compress import compress
from pipeline.restore import restore
from pipeline.tars import Sample, write_samples
from pipeline.verify import verify

PHOTO_SUFFIXES = (".png", ".jpg")


def bundled_photos() -> list[Path]:
    import skimage

    data = Path(skimage.__file__).parent / "data"
    return sorted(p for p in data.iterdir() if p.suffix in PHOTO_SUFFIXES)


def build_shards(directory: Path, shards: int = 2) -> int:
    """Write the bundled photos as WebDataset shards: image + .json metadata + .txt caption."""
    directory.mkdir(parents=True, exist_ok=True)
    photos = bundled_photos()
    groups = [photos[i::shards] for i in range(shards)]
    for i, group in enumerate(groups):
        samples = [
            Sample(p.stem, [
                (p.suffix[1:], p.read_bytes()),
                ("json", json.dumps({"source": f"scikit-image data/{p.name}"}).encode()),
                ("txt", f"scikit-image sample image {p.stem}".encode()),
            ])
            for p in group
        ]
        with open(directory / f"photos-{i:06d}.tar", "wb") as f:
            write_samples(f, samples)
    return len(photos)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo-out", help="working directory (recreated)")
    parser.add_argument("--codec", default=DEFAULT_CODEC)
    parser.add_argument("--quality", type=float)
    args = parser.parse_args(argv)

    out = Path(args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    src, archive, restored = out / "src", out / "archive", out / "restored"
    n = build_shards(src)
    print(f"demo: {n} photos from scikit-image in 2 WebDataset shards under {src}", flush=True)

    report = compress([str(src)], str(archive), args.codec, args.quality)
    if not report.ok:
        print(f"demo: compress failed: {report.failed}", file=sys.stderr)
        return 1
    back = restore(str(archive), str(restored))
    checked = verify(str(archive))
    print()
    print(f"latentarc demo: codec {report.codec} quality {report.quality}")
    print(summary_table(report.totals, str(archive), extra=[
        ("restored to", f"{restored} ({sum(back.written.values())} samples)"),
        ("verify", "OK" if checked.ok else str(checked.problems)),
    ]))
    passthrough = report.totals["passthrough"]
    if passthrough:
        print(f"  ({passthrough} sample(s) stored as passthrough, see `latentarc info {archive}`)")
    print(f"\nTry: latentarc info {archive}")
    return 0 if back.ok and checked.ok else 1


if __name__ == "__main__":
    sys.exit(main())
