"""The training crop sampler: every crop is a window of one training image (maybe flipped)."""

import numpy as np
import torch
from conftest import synthetic_image

from jobs.train import CropSampler, learning_rate


def _windows(image: np.ndarray, crop: int):
    h, w = image.shape[:2]
    for y in range(h - crop + 1):
        for x in range(w - crop + 1):
            win = image[y:y + crop, x:x + crop]
            yield from (win, win[::-1], win[:, ::-1], win[::-1, ::-1])


def test_crops_are_windows_of_the_images():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((9, 12), (8, 8), (11, 10))]
    sampler = CropSampler(images, crop=8, device="cpu", seed=3)
    batch = sampler(64)
    assert batch.shape == (64, 3, 8, 8) and batch.dtype == torch.float32
    crops = (batch * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    flips = 0
    for crop in crops:
        matches = [i for i, im in enumerate(images)
                   if any(np.array_equal(crop, win) for win in _windows(im, 8))]
        assert matches, "a crop is not a window of any training image"
        flips += not any(np.array_equal(crop, im[y:y + 8, x:x + 8]) for im in images
                         for y in range(im.shape[0] - 7) for x in range(im.shape[1] - 7))
    assert 0 < flips < 64  # flips happen, not always


def test_small_images_are_edge_replicated():
    image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    crops = (CropSampler([image], crop=6, device="cpu", seed=0)(16) * 255).round().to(torch.uint8)
    ys = [np.minimum(np.arange(6), 3), np.minimum(np.arange(6), 3)[::-1]]
    xs = [np.minimum(np.arange(6), 4), np.minimum(np.arange(6), 4)[::-1]]
    expected = [image[y][:, x] for y in ys for x in xs]
    for crop in crops.permute(0, 2, 3, 1).numpy():
        assert any(np.array_equal(crop, e) for e in expected)


def test_learning_rate_warms_up_and_anneals():
    config = {"lr": 1e-3, "warmup": 10, "decay_last": 0.5, "minutes": 1}
    assert learning_rate(config, 0, 0, 0) == 1e-4
    assert learning_rate(config, 10, 0, 10) == 1e-3
    assert learning_rate(config, 100, 0, 45) < 1e-3
    assert abs(learning_rate(config, 100, 0, 60) - 5e-5) < 1e-12


def test_prepare_keeps_the_shorter_side_for_the_crop_when_asked(tmp_path):
    """``prepare --min-side`` downscales less where needed so that crops of that size never
    edge-replicate; without it the same images come out smaller than that."""
    from PIL import Image

    from jobs.train import load_images, prepare

    for name in ("bsds500", "imagenet_samples"):
        (tmp_path / "sets" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(synthetic_image(i, 60, 80)).save(tmp_path / "sets" / name / f"im{i}.png")
    assert prepare(tmp_path / "sets", tmp_path / "plain", image_format="jpg") == 6
    assert max(min(im.shape[:2]) for im in load_images(str(tmp_path / "plain"))) < 48
    prepare(tmp_path / "sets", tmp_path / "kept", image_format="jpg", min_side=48, subsampling=2)
    assert min(min(im.shape[:2]) for im in load_images(str(tmp_path / "kept"))) >= 48
