"""Classical codecs through Pillow: the baselines in every benchmark and the pipeline's fallbacks.

The payload inside the latentarc frame is the unmodified file Pillow writes (a JPEG, WebP, AVIF
or PNG file), so a row can also be inspected with any image tool. Decoding checks that the
container spans the payload exactly (JPEG SOI..EOI, RIFF size, PNG IEND, ISOBMFF box sizes),
because Pillow itself ignores trailing garbage.

The content hash is taken over the decoded pixels, which depend on the library build (libjpeg
vs libjpeg-turbo, libwebp, libavif versions): ``versions()`` reports them and the archive
records them next to the hash.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Sequence

import numpy as np
import PIL
from PIL import Image, features

from models.bitstream import Header, pack
from models.codec import Codec, CodecError, Decoded, check_image


def pixel_content(image: np.ndarray) -> bytes:
    """What the content hash of a pixel-domain decode covers: shape and pixels."""
    h, w, c = image.shape
    return b"%dx%dx%d:" % (h, w, c) + np.ascontiguousarray(image).tobytes()


def _jpeg_spans(payload: bytes) -> bool:
    return payload[:2] == b"\xff\xd8" and payload[-2:] == b"\xff\xd9"


def _riff_spans(payload: bytes) -> bool:
    if len(payload) < 12 or payload[:4] != b"RIFF" or payload[8:12] != b"WEBP":
        return False
    (size,) = struct.unpack("<I", payload[4:8])
    return size + 8 == len(payload)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def _png_spans(payload: bytes) -> bool:
    """Signature, then chunks whose CRCs hold, ending exactly at IEND. Pillow checks neither
    chunk CRCs nor zlib's checksum while decoding, so a flipped bit inside IDAT decoded to
    other pixels with no error; the "lossless" codec must refuse it instead."""
    if not (payload.startswith(_PNG_SIGNATURE) and payload.endswith(_PNG_IEND)):
        return False
    pos, view = len(_PNG_SIGNATURE), memoryview(payload)  # CRCs over views: no chunk copied
    while pos + 12 <= len(payload):
        (length,) = struct.unpack(">I", payload[pos:pos + 4])
        end = pos + 12 + length
        if end > len(payload):
            return False
        (crc,) = struct.unpack(">I", payload[end - 4:end])
        if zlib.crc32(view[pos + 4:end - 4]) != crc:
            return False
        if payload[pos + 4:pos + 8] == b"IEND":
            return end == len(payload)
        pos = end
    return False


def _isobmff_spans(payload: bytes) -> bool:
    pos = 0
    while pos < len(payload):
        if pos + 8 > len(payload):
            return False
        (size,) = struct.unpack(">I", payload[pos : pos + 4])
        if size == 1:
            if pos + 16 > len(payload):
                return False
            (size,) = struct.unpack(">Q", payload[pos + 8 : pos + 16])
        elif size == 0:
            size = len(payload) - pos
        if size < 8:
            return False
        pos += size
    return pos == len(payload) and payload[4:8] == b"ftyp"


class PillowCodec(Codec):
    """Shared encode/decode for codecs that are one Pillow format plus save options."""

    kind = "classical"
    pil_format: str
    # One image at a time: batches of 4, not 8, so a worker holds 4 + 4 decoded images, not
    # 8 + 8. On one 256-row webp shard this took 14-18 MiB off a worker's peak, and brought
    # its big/small-shard ratio under 1.10, for 1-6 % of its speed in alternated runs (the
    # glibc trim after each batch: the next batch faults its pages in again); batches of 2
    # took 26 MiB for about 5 % (benchmarks/pipeline/batch-memory, session 18).
    batch_samples = 4
    spans = staticmethod(lambda payload: True)

    def save_options(self) -> dict:
        return {}

    def encode_batch(self, images: Sequence[np.ndarray]) -> list[bytes]:
        streams = []
        for image in images:
            check_image(image)
            h, w, _ = image.shape
            bomb = Image.MAX_IMAGE_PIXELS
            if bomb is not None and h * w > 2 * bomb:  # what Image.open refuses as a bomb
                raise CodecError(f"{self.id} cannot encode a {w}x{h} image: Pillow would refuse "
                                 f"to decode it (above {2 * bomb} pixels)")
            buf = io.BytesIO()
            try:
                Image.fromarray(image, "RGB").save(buf, format=self.pil_format, **self.save_options())
            except Exception as exc:  # Pillow's encoders raise OSError, ValueError (WebP's
                # 16383-pixel limit), RuntimeError (AVIF above 65536 pixels wide), ...: any of
                # them means this image cannot take this codec, and it is kept as it was.
                raise CodecError(f"{self.id} cannot encode a {image.shape[1]}x{image.shape[0]} "
                                 f"image: {exc}") from exc
            h, w, c = image.shape
            streams.append(pack(Header(self.code, h, w, c), buf.getvalue()))
        return streams

    def decode_batch(self, streams: Sequence[bytes]) -> list[Decoded]:
        return [self._decode(stream) for stream in streams]

    def _decode(self, stream: bytes) -> Decoded:
        header, payload = self.read_header(stream)
        if not self.spans(payload):
            raise CodecError(f"{self.id} payload is not one complete {self.pil_format} file")
        try:
            with Image.open(io.BytesIO(payload), formats=[self.pil_format]) as im:
                if im.size != (header.width, header.height):
                    raise CodecError(
                        f"decoded size {im.size[0]}x{im.size[1]} != header {header.width}x{header.height}"
                    )
                im.load()
                array = np.asarray(im.convert("RGB") if im.mode != "RGB" else im)
        except CodecError:
            raise
        except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ...
            raise CodecError(f"{self.id} payload does not decode: {exc}") from exc
        return Decoded(array, pixel_content(array))

    def versions(self) -> dict[str, str]:
        return {"pillow": PIL.__version__, **self.library_versions()}

    def library_versions(self) -> dict[str, str]:
        return {}


def _feature_version(name: str) -> str:
    return str(features.version(name) or "unknown")


class JpegCodec(PillowCodec):
    id = "jpeg"
    code = 1
    pil_format = "JPEG"
    quality_range = (1.0, 100.0)
    default_quality = 85.0
    description = "JPEG (baseline, 4:2:0) through Pillow"
    spans = staticmethod(_jpeg_spans)

    def save_options(self) -> dict:
        return {"quality": int(round(self.quality)), "optimize": True}

    def library_versions(self) -> dict[str, str]:
        return {"libjpeg": _feature_version("jpg"), "libjpeg_turbo": _feature_version("libjpeg_turbo")}


class WebpCodec(PillowCodec):
    id = "webp"
    code = 2
    pil_format = "WEBP"
    quality_range = (0.0, 100.0)
    default_quality = 80.0
    description = "WebP lossy through Pillow (method 4)"
    spans = staticmethod(_riff_spans)

    def save_options(self) -> dict:
        return {"quality": int(round(self.quality)), "method": 4}

    def library_versions(self) -> dict[str, str]:
        return {"libwebp": _feature_version("webp")}


class WebpLosslessCodec(WebpCodec):
    id = "webp-lossless"
    code = 3
    lossless = True
    quality_range = None
    default_quality = None
    description = "WebP lossless through Pillow"

    def save_options(self) -> dict:
        return {"lossless": True, "quality": 100, "method": 4}


class AvifCodec(PillowCodec):
    id = "avif"
    code = 4
    pil_format = "AVIF"
    quality_range = (0.0, 100.0)
    default_quality = 60.0
    description = "AVIF (AV1 intra) through Pillow, speed 6"
    spans = staticmethod(_isobmff_spans)

    def save_options(self) -> dict:
        return {"quality": int(round(self.quality)), "speed": 6}

    def library_versions(self) -> dict[str, str]:
        return {"libavif": _feature_version("avif")}


class PngCodec(PillowCodec):
    id = "png"
    code = 5
    pil_format = "PNG"
    lossless = True
    description = "PNG (lossless) through Pillow"
    spans = staticmethod(_png_spans)

    def save_options(self) -> dict:
        return {"compress_level": 6}

    def library_versions(self) -> dict[str, str]:
        return {"zlib": _feature_version("zlib")}


CLASSICAL_CODECS: tuple[type[Codec], ...] = (
    JpegCodec,
    WebpCodec,
    WebpLosslessCodec,
    AvifCodec,
    PngCodec,
)
