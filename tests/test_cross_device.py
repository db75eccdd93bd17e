"""The cross-device check tool: streams from one run decode to the same symbols in another, and a
stream altered in transit is reported (exit 1), not passed over."""

import json

import numpy as np
from conftest import synthetic_image
from learned_fixtures import TINY_WEIGHTS
from PIL import Image

from jobs.cross_device import main


def test_encode_then_decode_elsewhere(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i, (h, w) in enumerate(((64, 96), (70, 50))):
        Image.fromarray(synthetic_image(i, h, w)).save(images / f"im{i}.png")
    out = tmp_path / "out"
    assert main(["encode", "--weights", str(TINY_WEIGHTS), "--images", str(images), "--device", "cpu",
                 "--qualities", "2", "4", "--out", str(out)]) == 0
    summary = json.loads((out / "cross_device.json").read_text())
    assert len(summary["rows"]) == 4
    report = tmp_path / "report.md"
    assert main(["decode", "--weights", str(TINY_WEIGHTS), "--dir", str(out), "--report", str(report)]) == 0
    assert "| 4.0 | 2 |" in report.read_text()

    # one stream swapped for another image's: its symbols no longer match what was recorded
    streams = dict(np.load(out / "streams.npz"))
    streams["4.0/im0.png"], streams["4.0/im1.png"] = streams["4.0/im1.png"], streams["4.0/im0.png"]
    np.savez(out / "streams.npz", **streams)
    assert main(["decode", "--weights", str(TINY_WEIGHTS), "--dir", str(out)]) == 1
