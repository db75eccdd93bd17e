"""A corpus of hostile and odd WebDataset samples, generated (nothing binary is committed).

``samples()`` returns (key, members, expected) for each case, where expected is "ok" (through
the codec), "passthrough" (stored as it was, with a reason), with the reason's expected text.
``shard_cases()`` returns whole shard files that are damaged as tars.
"""

from __future__ import annotations

import io
import struct
import tarfile
import zlib

import numpy as np
from conftest import synthetic_image
from PIL import Image


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _rgb(seed: int = 0, h: int = 48, w: int = 64) -> Image.Image:
    return Image.fromarray(synthetic_image(seed, h, w))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png() -> bytes:
    """A tiny PNG whose header declares 30000 x 30000 pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    chunks = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def png_rgb16(seed: int = 0, h: int = 24, w: int = 32) -> bytes:
    """A 16-bit RGB PNG, written by hand: Pillow reads such files (as 8-bit RGB) but cannot write them."""
    pixels = np.random.default_rng(seed).integers(0, 65536, size=(h, w, 3), dtype=np.uint16)
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in pixels)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    chunks = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def ppm(maxval: int, seed: int = 0, h: int = 24, w: int = 32) -> bytes:
    """A binary PPM (P6) with this maxval, a comment in its header."""
    dtype = ">u2" if maxval > 255 else "u1"
    pixels = np.random.default_rng(seed).integers(0, maxval + 1, size=(h, w, 3)).astype(dtype)
    return f"P6\n# made for the bad-input corpus\n{w} {h}\n{maxval}\n".encode() + pixels.tobytes()


def animated(fmt: str) -> bytes:
    frames = [_rgb(i) for i in range(3)]
    return _save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _half_transparent(seed: int) -> Image.Image:
    im = _rgb(seed).convert("RGBA")
    im.putalpha(128)  # an all-opaque alpha is dropped by the WebP encoder
    return im


def samples() -> list[tuple[str, list[tuple[str, bytes]], str, str]]:
    jpeg = _save(_rgb(1), "JPEG", quality=90)
    png = _save(_rgb(2), "PNG")
    webp = _save(_rgb(3), "WEBP", quality=80)
    exif = Image.Exif()
    exif[0x0112] = 6
    cases = [
        ("truncated-jpeg", [("jpg", jpeg[: len(jpeg) // 2])], "passthrough", "does not decode"),
        ("truncated-png", [("png", png[: len(png) // 2])], "passthrough", "does not decode"),
        ("truncated-webp", [("webp", webp[: len(webp) // 2])], "passthrough", "does not decode"),
        ("zero-byte", [("jpg", b"")], "passthrough", "empty image member"),
        ("text-as-jpg", [("jpg", b"hello, I am not an image\n" * 4)], "passthrough", "not a format"),
        ("random-as-jpg", [("jpg", np.random.default_rng(0).bytes(3000))], "passthrough", "not a format"),
        ("png-named-jpg", [("jpg", png)], "ok", ""),
        ("cmyk-jpeg", [("jpg", _save(_rgb(4).convert("CMYK"), "JPEG"))], "passthrough", "CMYK"),
        ("png-16bit", [("png", _save(Image.fromarray(
            synthetic_image(5)[:, :, 0].astype(np.uint16) * 257), "PNG"))], "passthrough", "I;16"),
        ("png-rgb-16bit", [("png", png_rgb16(5))], "passthrough", "PNG with 16-bit samples"),
        ("ppm-16bit", [("ppm", ppm(65535, 5))], "passthrough", "PPM with maxval 65535"),
        ("ppm-maxval-1023", [("ppm", ppm(1023, 6))], "passthrough", "PPM with maxval 1023"),
        ("ppm-8bit", [("ppm", ppm(255, 7))], "ok", ""),
        ("rgb-png-transparent-colour", [("png", _save(_rgb(5), "PNG", transparency=(0, 0, 0)))],
         "passthrough", "RGB PNG with a transparent colour"),
        ("gray-png-transparent-colour", [("png", _save(_rgb(5).convert("L"), "PNG", transparency=0))],
         "passthrough", "L PNG with a transparent colour"),
        ("gray-png", [("png", _save(_rgb(6).convert("L"), "PNG"))], "ok", ""),
        ("gray-jpeg", [("jpg", _save(_rgb(7).convert("L"), "JPEG"))], "ok", ""),
        ("palette-transparency", [("png", _save(_rgb(8).convert("P"), "PNG", transparency=0))],
         "passthrough", "mode P"),
        ("rgba-png", [("png", _save(_rgb(9).convert("RGBA"), "PNG"))], "passthrough", "RGBA"),
        ("la-png", [("png", _save(_rgb(10).convert("LA"), "PNG"))], "passthrough", "LA"),
        ("bilevel-png", [("png", _save(_rgb(11).convert("1"), "PNG"))], "passthrough", "mode 1"),
        ("exif-rotated", [("jpg", _save(_rgb(12), "JPEG", exif=exif.tobytes()))], "ok", ""),
        ("one-pixel", [("png", _save(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"))], "ok", ""),
        ("one-by-20000", [("png", _save(Image.new("RGB", (20000, 1), (9, 9, 9)), "PNG"))],
         "passthrough", "cannot encode"),
        ("animated-gif", [("gif", animated("GIF"))], "passthrough", "animated GIF"),
        ("animated-webp", [("webp", animated("WEBP"))], "passthrough", "animated"),
        ("bomb", [("png", bomb_png())], "passthrough", "DecompressionBomb"),
        ("dup-in-shard", [("png", png), ("txt", b"first")], "ok", ""),
        ("dup-in-shard", [("png", png), ("txt", b"second")], "ok", ""),
        ("dup-across", [("png", png), ("txt", b"here")], "ok", ""),
        ("with.dots", [("png", png)], "ok", ""),  # WebDataset: key "with", suffix "dots.png"
        ("with spaces", [("png", png)], "ok", ""),
        ("ünïcödé-鍵", [("png", png)], "ok", ""),
        ("no-image", [("json", b'{"label": 3}'), ("txt", b"caption")], "passthrough", "no image member"),
        ("two-images", [("png", png), ("seg.png", _save(_rgb(13).convert("L"), "PNG"))], "ok", ""),
        ("bmp", [("bmp", _save(_rgb(14), "BMP"))], "ok", ""),
        ("tiff", [("tiff", _save(_rgb(15), "TIFF"))], "ok", ""),
        ("webp-alpha", [("webp", _save(_half_transparent(16), "WEBP", lossless=True))],
         "passthrough", "RGBA"),
        ("jpeg-garbage-tail", [("jpg", jpeg + b"trailing garbage after EOI")], "ok", ""),
    ]
    return cases


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def shard_cases() -> dict[str, tuple[bytes, str]]:
    """Shard file name -> (bytes, expected outcome text)."""
    good = _tar([("a.png", _save(_rgb(20), "PNG")), ("b.png", _save(_rgb(21), "PNG"))])
    corrupt_header = bytearray(good)
    corrupt_header[148:156] = b"garbage!"  # the first header's checksum field
    return {
        "corrupt-header.tar": (bytes(corrupt_header), "tar is damaged"),
        "truncated.tar": (good[: len(good) // 2], "tar is damaged"),
        "zero-bytes.tar": (b"", "tar is damaged"),
        "empty.tar": (_tar([]), "ok"),
    }
