"""The benchmark jobs run end to end on a tiny image set and write their results."""

import json
import re

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


def test_perceptual_benchmark_compares_realistic_and_refined_specs_with_the_faithful_curve(
        realistic, tmp_path):
    """``ID@realistic+effortN`` encodes with refinement aimed at the realistic decoder, is
    measured as its own curve and compared with the faithful one at the bpp it reaches."""
    from learned_fixtures import REALISTIC_CODEC

    from jobs.perceptual_benchmark import parse_spec

    assert parse_spec("msh@realistic:0.5+effort40") == ("msh", "realistic:0.5", 40)
    assert parse_spec("msh") == ("msh", "faithful", None)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        (images / f"im{i}.png").write_bytes(encode_image(synthetic_image(i, 64, 96)))
    refined = f"{REALISTIC_CODEC}@realistic+effort2"
    out = tmp_path / "out"
    assert main(["--perceptual", "--dataset", str(images), "--out", str(out), "--codecs",
                 REALISTIC_CODEC, f"{REALISTIC_CODEC}@realistic", refined, "--quality",
                 f"{REALISTIC_CODEC}=1,7", f"{REALISTIC_CODEC}@realistic=4", f"{refined}=4"]) == 0
    result = json.loads((out / f"{REALISTIC_CODEC}_realistic+effort2.json").read_text())
    assert result["meta"]["qualities"] == [4.0] and "'effort': 2" in result["description"]
    plain = json.loads((out / f"{REALISTIC_CODEC}_realistic.json").read_text())
    assert result["results"]["bytes"] != plain["results"]["bytes"]  # other streams
    md = (out / "results.md").read_text()
    for spec in (f"{REALISTIC_CODEC}@realistic", refined):
        section = md.split(f"## {spec} against {REALISTIC_CODEC} (faithful) at the same bpp")[1]
        row = section.strip().split("\n")[2]  # after the table's head: a row on the curve
        assert re.match(r"\| \d+\.\d{3} \| 0\.\d{4} \| 0\.\d{4} \| [+-]\d", row), row


def test_a_learned_codec_benchmarked_on_its_training_folder_is_labelled_in_sample(tmp_path):
    """msh-n96-v2's archive-of-JPEGs figure was measured on imagenet_samples, every file of
    which it trained on, with nothing in the table saying so."""
    from pathlib import Path

    from jobs.benchmark import to_markdown, trained_on

    assert trained_on("msh-n96-v2", Path("../shared/datasets/imagenet_samples"))
    assert not trained_on("msh-n96-v2", Path("../shared/datasets/kodak"))
    assert not trained_on("jpeg-lossless", Path("../shared/datasets/imagenet_samples"))
    row = {"codec": "msh-n96-v2", "quality": 7.0, "images": 1, "compressed": 1,
           "source_bytes": 1, "archive_bytes": 1, "ratio": 1.0, "image_ratio": 1.0,
           "largest_row_vs_original": 1.0, "mean_bpp": 1.0, "mean_psnr": 40.0,
           "overhead_bytes_per_row": 1.0, "compress_seconds": 1.0, "restore_seconds": 1.0,
           "verify_ok": True}
    summary = {"images": 1, "image_dir": "imagenet_samples", "guard": None}
    assert "In-sample" not in to_markdown({**summary, "results": [row]}, "cmd")
    text = to_markdown({**summary, "results": [{**row, "trained_on_these_images": True}]}, "cmd")
    assert "**In-sample: msh-n96-v2 trained on every image of this folder**" in text


def test_published_kodak_anchors_are_compared_only_on_the_kodak_set():
    """By the folder's name, two thumbnails in a folder named kodak (or a --limit) were
    compared with the anchors of all 24 Kodak images."""
    import numpy as np

    from jobs.rd_benchmark import is_kodak

    kodak = [(f"kodim{i:02d}.png", np.zeros((512, 768, 3), np.uint8)) for i in range(1, 25)]
    kodak[3] = (kodak[3][0], np.zeros((768, 512, 3), np.uint8))  # portrait ones are in the set
    assert is_kodak(kodak)
    assert not is_kodak(kodak[:2])
    assert not is_kodak([(n, a[:256, :384]) for n, a in kodak])
