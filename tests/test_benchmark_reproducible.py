"""The committed Kodak benchmark is reproducible: re-measuring 4 of its images at 3 qualities
gives the committed per-image bpp and PSNR (benchmarks/kodak/*.json), for the shipped learned
codecs and for the WebP baseline, and at one quality for the default codec with --effort 20
(benchmarks/kodak-effort/). A figure that cannot be re-measured is not a result."""

import json

import pytest
from conftest import REPO, shared_path

from jobs.rd_benchmark import load_images, measure

pytestmark = pytest.mark.slow

IMAGES = 4


@pytest.mark.parametrize("codec, result, qualities", [
    ("msh-n96", "kodak/msh-n96.json", [1.0, 4.0, 7.0]),
    ("msh-n96-v2", "kodak/msh-n96-v2.json", [1.0, 4.0, 7.0]),
    ("webp", "kodak/webp.json", [10, 45, 80]),
    # about 13 s per image: one quality
    ("msh-n96-v2+effort20", "kodak-effort/msh-n96-v2+effort20.json", [7.0]),
])
def test_kodak_figures_are_reproduced(codec, result, qualities):
    images = load_images(shared_path("datasets", "kodak"), IMAGES)
    committed = json.loads((REPO / "benchmarks" / result).read_text())
    assert committed["meta"]["images"][:IMAGES] == [name for name, _ in images]
    by_quality = {row["quality"]: row for row in committed["per_image"]}
    for quality in qualities:
        point = measure(codec, quality, images)
        row = by_quality[quality]
        for i in range(IMAGES):
            # the bar: within 0.001 bpp and 0.01 dB of the committed figures
            assert point.bpp[i] == pytest.approx(row["bpp"][i], abs=0.001), (codec, quality, i)
            assert point.psnr[i] == pytest.approx(row["psnr-rgb"][i], abs=0.01), (codec, quality, i)
