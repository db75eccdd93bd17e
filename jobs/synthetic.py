"""Synthetic photo-like images: the inputs of the fault trials and of the tests.

One definition, because committed golden bitstreams (tests/golden) are encodings of these exact
pixels: the function must not change."""

from __future__ import annotations

import numpy as np


def synthetic_image(seed: int, height: int = 64, width: int = 96) -> np.ndarray:
    """A smooth colour image with noise: compresses like a photo, costs a millisecond."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([
        128 + 100 * np.sin(x / (7 + seed % 5) + c) * np.cos(y / (9 + seed % 3) - c)
        for c in range(3)
    ], axis=-1)
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)
