"""Image members: find them in a sample, decode them for a codec, write them back on restore.

A codec takes ``uint8 HxWx3``. RGB images go in as they are; grayscale ("L") goes in as three
equal channels and comes back as L. Every other mode (alpha, palette, 16-bit, CMYK, ...) is
not representable without loss by an RGB codec, so ``prepare`` raises ``Unsupported`` and the
sample is stored as passthrough (the original bytes, restored byte-identical).
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

# Suffix (last component, lower case) -> the Pillow format written on restore.
IMAGE_SUFFIXES = {
    "jpg": "JPEG",
    "jpeg": "JPEG",
    "png": "PNG",
    "webp": "WEBP",
    "bmp": "BMP",
    "tif": "TIFF",
    "tiff": "TIFF",
    "ppm": "PPM",
}
CODEC_MODES = {"RGB", "L"}
WRITABLE_FORMATS = {"JPEG", "PNG", "WEBP", "BMP", "TIFF", "PPM"}
RESTORE_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP", "bmp": "BMP", "tiff": "TIFF"}


class Unsupported(ValueError):
    """The image cannot go through the codec; the message is the passthrough reason."""


def image_member_index(suffixes: list[str]) -> int | None:
    """Index of the first member whose suffix names an image format, or None."""
    for i, suffix in enumerate(suffixes):
        if suffix.rsplit(".", 1)[-1].lower() in IMAGE_SUFFIXES:
            return i
    return None


def prepare(data: bytes) -> tuple[np.ndarray, str, str]:
    """Decode image bytes for a codec: (uint8 HxWx3, original mode, original format).

    Raises ``Unsupported`` with a short reason for anything the codec cannot take.
    """
    if not data:
        raise Unsupported("empty image member")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                fmt = im.format or "unknown"
                mode = im.mode
                if getattr(im, "n_frames", 1) > 1:
                    raise Unsupported(f"animated {fmt} ({im.n_frames} frames)")
                if mode not in CODEC_MODES:
                    raise Unsupported(f"image mode {mode} is not RGB or L")
                im.load()
                array = np.asarray(im.convert("RGB"))
    except Unsupported:
        raise
    except UnidentifiedImageError:
        raise Unsupported("image does not decode: not a format Pillow recognises") from None
    except Exception as exc:  # Pillow signals bad data with many exception types
        raise Unsupported(f"image does not decode: {type(exc).__name__}: {exc}") from exc
    return np.ascontiguousarray(array), mode, fmt


def psnr(reference: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR in dB over all channels (uint8 peak 255); inf for identical images."""
    diff = reference.astype(np.float64) - decoded.astype(np.float64)
    mse = float(np.mean(diff * diff))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0 * 255.0 / mse)


def encode_for_restore(
    image: np.ndarray, mode: str, pil_format: str, jpeg_quality: int = 95
) -> bytes:
    """Write decoded pixels as a file in ``pil_format`` (lossless except for JPEG)."""
    im = Image.fromarray(image, "RGB")
    if mode == "L":
        im = im.convert("L")
    buf = io.BytesIO()
    if pil_format == "JPEG":
        im.save(buf, format="JPEG", quality=jpeg_quality, subsampling=0)
    elif pil_format == "WEBP":
        im.save(buf, format="WEBP", lossless=True, quality=100)
    else:
        im.save(buf, format=pil_format)
    return buf.getvalue()
