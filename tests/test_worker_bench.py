"""``python -m jobs.worker_bench`` (one compress worker on a device, without Ray): it runs the
bare codec and ``encode_shard`` on the same images and reports both, per batch size."""

import json

from conftest import synthetic_image
from PIL import Image

from jobs.worker_bench import main


def test_worker_bench_reports_bare_and_worker_runs_per_batch(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.fromarray(synthetic_image(i, 48, 64)).save(images / f"im{i}.png")
    out = tmp_path / "out"
    assert main(["--images", str(images), "--codec", "test-tiny-msh", "--batches", "2", "4",
                 "--n", "6", "--rows", "4", "--out", str(out)]) == 0
    summary = json.loads((out / "worker_bench.json").read_text())
    assert [b["batch"] for b in summary["bare"]] == [2, 4]
    assert sorted((r["batch"], r["prefetch"]) for r in summary["worker"]) == [
        (2, False), (2, True), (4, False), (4, True)]
    assert all(r["images"] == 6 for r in summary["worker"])
    assert all(b["images"] == 6 and b["bitstream_bytes"] > 0 for b in summary["bare"])
    assert "| 4 |" in (out / "worker_bench.md").read_text()
