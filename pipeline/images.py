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
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

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
    "gif": "GIF",
}
CODEC_MODES = {"RGB", "L"}
WRITABLE_FORMATS = {"JPEG", "PNG", "WEBP", "BMP", "TIFF", "PPM"}
RESTORE_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP", "bmp": "BMP", "tiff": "TIFF"}


class Unsupported(ValueError):
    """The image cannot go through the codec; the message is the passthrough reason.
    ``header``: (format, mode, height, width) where Pillow read the image's header, so that
    the passthrough row records them (``--where "width > 8000"`` finds it), else None."""

    def __init__(self, reason: str, header: tuple[str, str, int, int] | None = None) -> None:
        super().__init__(reason)
        self.header = header


def image_member_index(suffixes: list[str]) -> int | None:
    """Index of the first member whose suffix names an image format, or None."""
    for i, suffix in enumerate(suffixes):
        if suffix.rsplit(".", 1)[-1].lower() in IMAGE_SUFFIXES:
            return i
    return None


DEFAULT_MAX_PIXELS = 40_000_000


def prepare(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, str, str]:
    """Decode image bytes for a codec: (uint8 HxWx3, original mode, original format).

    Raises ``Unsupported`` with a short reason for anything the codec cannot take. An image
    above ``max_pixels`` is refused from its header, before any pixel is decoded, so one huge
    photo cannot exhaust a worker (it is kept as it was).
    """
    if not data:
        raise Unsupported("empty image member")
    header = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                fmt = im.format or "unknown"
                mode = im.mode
                header = (fmt, mode, im.height, im.width)
                if im.width * im.height > max_pixels:
                    raise Unsupported(
                        f"{im.width}x{im.height} ({im.width * im.height / 1e6:.3g} MP) is above "
                        f"the per-image budget of {max_pixels / 1e6:g} MP (--max-pixels)")
                if getattr(im, "n_frames", 1) > 1:
                    if fmt == "MPO":  # a camera JPEG with a depth map or preview: not animated
                        raise Unsupported(f"multi-picture JPEG (MPO, {im.n_frames} pictures): kept "
                                          "as it came so that every picture is kept")
                    raise Unsupported(f"animated {fmt} ({im.n_frames} frames)")
                if mode not in CODEC_MODES:
                    raise Unsupported(f"image mode {mode} is not RGB or L")
                depth = _sample_depth(im, data)
                if depth is not None:
                    raise Unsupported(f"{fmt} with {depth}; Pillow reads it as 8-bit {mode}, "
                                      "so the codec would store it at a lower precision")
                if "transparency" in im.info:
                    raise Unsupported(f"{mode} {fmt} with a transparent colour, which an RGB "
                                      "codec would drop")
                im.load()
                array = np.asarray(im.convert("RGB"))
    except Unsupported as exc:
        exc.header = header
        raise
    except UnidentifiedImageError:
        raise Unsupported("image does not decode: not a format Pillow recognises") from None
    except Exception as exc:  # Pillow signals bad data with many exception types
        raise Unsupported(f"image does not decode: {type(exc).__name__}: {exc}", header) from exc
    return np.ascontiguousarray(array), mode, fmt


def _sample_depth(im: Image.Image, data: bytes) -> str | None:
    """How the source stores samples, where that is not 8 bits and Pillow hides it.

    Pillow opens a 16-bit RGB PNG or a PPM with maxval 65535 as plain 8-bit RGB, and a PPM
    with another maxval rescaled to 0..255; restored, any of them would come back at another
    precision with no error. None for 8-bit sources (and for 1/2/4-bit grey PNGs, which
    Pillow scales up exactly)."""
    if im.format == "PNG" and data[12:16] == b"IHDR" and len(data) > 24 and data[24] > 8:
        return f"{data[24]}-bit samples"
    if im.format == "PPM":
        maxval = _netpbm_maxval(data)
        if maxval is not None and maxval != 255:
            return f"maxval {maxval}"
    if im.format == "TIFF":
        bits = im.tag_v2.get(258)  # BitsPerSample
        bits = bits if isinstance(bits, tuple) else (bits,) if bits else ()
        if any(b > 8 for b in bits):
            return f"{max(bits)}-bit samples"
    return None


def _netpbm_maxval(data: bytes) -> int | None:
    """The maxval of a P2/P3/P5/P6 header (its fourth token; "#" comments skipped)."""
    tokens: list[bytes] = []
    for line in data[:4096].split(b"\n"):
        tokens += line.split(b"#", 1)[0].split()
        if len(tokens) >= 4:
            break
    if len(tokens) < 4 or tokens[0] not in (b"P2", b"P3", b"P5", b"P6") or not tokens[3].isdigit():
        return None
    return int(tokens[3])


# png_colour: a PNG's gAMA, cHRM and sRGB chunks, verbatim (length, type, data, CRC): how its
# tones are meant to be shown where it has no ICC profile; written back into restored PNGs.
METADATA_KEYS = ("exif", "icc_profile", "xmp", "png_colour")
# Which metadata Pillow writes back as save() options, per format (png_colour is written as
# chunks, in encode_for_restore; all are kept in the archive row regardless).
_WRITES_METADATA = {"JPEG": ("exif", "icc_profile", "xmp"), "WEBP": ("exif", "icc_profile", "xmp"),
                    "PNG": ("exif", "icc_profile"), "TIFF": ("exif", "icc_profile")}
_PNG_COLOUR_CHUNKS = (b"gAMA", b"cHRM", b"sRGB")


def image_metadata(data: bytes) -> dict[str, bytes | None]:
    """EXIF (orientation included), ICC profile, XMP and a PNG's colour chunks of an image
    file, as raw bytes.

    Pixels are compressed as stored (no EXIF rotation applied), so writing the same EXIF back
    on restore shows the image the way the original was shown.
    """
    out: dict[str, bytes | None] = dict.fromkeys(METADATA_KEYS)
    try:
        with Image.open(io.BytesIO(data)) as im:
            for key in ("exif", "icc_profile", "xmp"):
                value = im.info.get(key)
                if isinstance(value, str):
                    value = value.encode("utf-8")
                out[key] = bytes(value) if value else None
            if im.format == "PNG":
                if out["exif"] is None:
                    out["exif"] = _png_exif_after_idat(data)
                out["png_colour"] = _png_colour(data)
    except Exception:  # no metadata is better than no image; prepare() reports bad files
        pass
    return out


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, bytes, bytes]]:
    """(type, data, the whole chunk) of each chunk of a PNG file, up to IEND or the first
    chunk cut short. Walks the headers only: no pixel is decoded."""
    pos, end = 8, len(data)
    while pos + 8 <= end:
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        if kind == b"IEND" or pos + 12 + length > end:
            return
        yield kind, data[pos + 8:pos + 8 + length], data[pos:pos + 12 + length]
        pos += 12 + length


def _png_colour(data: bytes) -> bytes | None:
    """A PNG's gAMA, cHRM and sRGB chunks, whole and in order, or None. They must come before
    the image data, so the walk stops at the first IDAT: a few header reads per image on the
    compress path, not one per IDAT chunk (a 12 MP PNG has thousands)."""
    colour = []
    for kind, _, raw in _png_chunks(data):
        if kind == b"IDAT":
            break
        if kind in _PNG_COLOUR_CHUNKS:
            colour.append(raw)
    return b"".join(colour) or None


def _png_exif_after_idat(data: bytes) -> bytes | None:
    """The eXIf chunk of a PNG that stores it after its image data, as Pillow's
    ``info["exif"]`` holds it (``Exif\\0\\0`` + TIFF bytes), or None.

    Pillow reads the chunks after IDAT only when it decodes the pixels (``load()``), so such an
    orientation was lost and the restored image displayed rotated. Walking the chunk headers
    finds it without decoding the image a second time (``prepare`` already did)."""
    if b"eXIf" not in data:  # most PNGs: one scan in C instead of a walk in Python
        return None
    body = next((body for kind, body, _ in _png_chunks(data) if kind == b"eXIf"), None)
    return b"Exif\x00\x00" + body if body else None  # as Pillow's chunk_eXIf


_PSNR_SLICE = 1 << 20


def psnr(reference: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR in dB over all channels (uint8 peak 255); inf for identical images.

    The squared error is summed in integers (int32 squares, int64 sums), so it is exact in any
    order; slices keep the temporaries a few MB for 40 MP photos. Deliberately no ``np.dot``:
    that calls OpenBLAS, whose threads spin for a while after each call and take the cores from
    torch's threads, so in a compress worker the codec's next decode ran 28 % slower
    (benchmarks/pipeline/profile/README.md, session 10).
    """
    a, b = reference.reshape(-1), decoded.reshape(-1)
    total = 0
    for start in range(0, a.size, _PSNR_SLICE):  # slices: temporaries stay small for 40 MP photos
        d = np.subtract(a[start:start + _PSNR_SLICE], b[start:start + _PSNR_SLICE], dtype=np.int32)
        np.multiply(d, d, out=d)  # at most 255**2
        total += int(d.sum(dtype=np.int64))
    mse = total / a.size
    return math.inf if mse == 0 else 10.0 * math.log10(255.0 * 255.0 / mse)


def encode_for_restore(
    image: np.ndarray, mode: str, pil_format: str, jpeg_quality: int = 95,
    metadata: dict[str, bytes | None] | None = None,
) -> bytes:
    """Write decoded pixels as a file in ``pil_format`` (lossless except for JPEG), with the
    original's EXIF, ICC profile and XMP where the format carries them."""
    im = Image.fromarray(image, "RGB")
    if mode == "L":
        im = im.convert("L")
    extra: dict[str, Any] = {k: v for k, v in (metadata or {}).items()
                             if v and k in _WRITES_METADATA.get(pil_format, ())}
    if pil_format == "PNG" and (colour := (metadata or {}).get("png_colour")):
        chunks = PngImagePlugin.PngInfo()
        for kind, body, _ in _png_chunks(b"\x89PNG\r\n\x1a\n" + colour):
            chunks.add(kind, body)  # before the image data, where PNG wants them
        extra["pnginfo"] = chunks
    buf = io.BytesIO()
    if pil_format == "JPEG":
        im.save(buf, format="JPEG", quality=jpeg_quality, subsampling=0, **extra)
    elif pil_format == "WEBP":
        im.save(buf, format="WEBP", lossless=True, quality=100, **extra)
    else:
        im.save(buf, format=pil_format, **extra)
    return buf.getvalue()
