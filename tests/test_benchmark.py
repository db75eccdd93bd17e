"""The benchmark jobs run end to end on a tiny image set and write their results."""

import json

from conftest import encode_image, synthetic_image
from learned_fixtures import GOLDEN

from jobs.benchmark import main


def test_rd_benchmark_writes_json_table_and_plot(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        (images / f"im{i}.png").write_bytes(encode_image(synthetic_image(i, 170, 200)))
    out = tmp_path / "out"
    tiny = f"learned:{GOLDEN / 'tiny-msh.safetensors'}"
    assert main(["--dataset", str(images), "--out", str(out), "--codecs", "jpeg", "webp", tiny,
                 f"{tiny}+effort3", "--qualities", "jpeg=20,80", "--qualities", "webp=20,80",
                 "--qualities", f"{tiny}=2,6", "--qualities", f"{tiny}+effort3=2",
                 "--anchors", str(tmp_path / "no-anchors")]) == 0
    result = json.loads((out / "webp.json").read_text())
    assert len(result["results"]["bpp"]) == 2 and result["results"]["bpp"][0] < result["results"]["bpp"][1]
    assert all(0 < m <= 1 for m in result["results"]["ms-ssim-rgb"])
    assert len(result["per_image"][0]["psnr-rgb"]) == 2
    assert (out / "rd.png").stat().st_size > 10_000
    assert "| webp | 80 |" in (out / "results.md").read_text()
    learned = json.loads((out / "tiny-msh.json").read_text())
    assert learned["meta"]["qualities"] == [2.0, 6.0] and "weights_sha256" in learned["description"]
    refined = json.loads((out / "tiny-msh+effort3.json").read_text())  # the +effortN spec
    assert refined["meta"]["qualities"] == [2.0] and "'effort': '3'" in refined["description"]
