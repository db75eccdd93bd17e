"""The training job on Ray Train: a few steps, a checkpoint, a resume, an export that decodes."""

import csv
import json

import pytest
from conftest import sample, write_shards

from jobs.train import main as train_main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]


def test_train_checkpoint_resume_and_export(tmp_path):
    shards = tmp_path / "shards"
    write_shards(shards, [[sample(f"k{i}", i) for i in range(6)]], prefix="train")
    ckpt = tmp_path / "ckpt"
    common = ["run", "--shards", str(shards), "--checkpoint-dir", str(ckpt), "--N", "8", "--M", "12",
              "--batch", "2", "--crop", "64", "--log-every", "2", "--threads", "1"]
    assert train_main([*common, "--steps", "4"]) == 0
    assert train_main([*common, "--steps", "8"]) == 0  # resumes at 4, stops at 8
    rows = list(csv.DictReader(open(ckpt / "loss_log.csv")))
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8]
    assert all(float(r["bpp"]) > 0 for r in rows)

    weights = tmp_path / "weights"
    weights.mkdir()
    assert train_main(["export", "--checkpoint-dir", str(ckpt), "--id", "t-msh", "--code", "240",
                       "--label", "8 steps, test", "--weights-dir", str(weights)]) == 0
    registry = json.loads((weights / "registry.json").read_text())
    assert registry["t-msh"]["card"]["steps"] == 8

    from conftest import synthetic_image

    from models.learned import LearnedCodec, LearnedModel

    class Exported(LearnedCodec):
        id, code = "t-msh", 240

    codec = Exported(3.0, model=LearnedModel.from_file(weights / "t-msh.safetensors"))
    assert codec.weights_sha256() == registry["t-msh"]["sha256"]
    image = synthetic_image(1, 64, 64)
    assert codec.decode_batch(codec.encode_batch([image]))[0].image.shape == image.shape
