"""``jpeg-lossless``: JPEG files recompressed with JPEG XL's lossless JPEG transcoding.

The JPEG's DCT coefficients are re-coded by JPEG XL (``imagecodecs.jpegxl_encode_jpeg``);
decoding reconstructs the original JPEG file byte for byte, typically 12-20% smaller. Only
JPEG files are accepted; anything else is refused with a reason (and the pipeline keeps it as
passthrough). The content hash covers the reconstructed JPEG bytes, so ``verify`` proves the
original file comes back exactly.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from models.bitstream import Header, pack
from models.codec import Codec, CodecError, Decoded

_SOI = b"\xff\xd8"


class JpegLosslessCodec(Codec):
    id = "jpeg-lossless"
    code = 6
    kind = "transcode"
    lossless = True
    takes_source = True
    header_channels = (1, 3)  # the source JPEG's: grey or colour
    description = "JPEG files recompressed losslessly by JPEG XL (byte-exact restore); JPEG input only"

    def encode_batch(self, images: Sequence[np.ndarray]) -> list[bytes]:
        raise CodecError("jpeg-lossless takes JPEG files, not pixels")

    def encode_sources(self, sources: Sequence[bytes]) -> list[bytes]:
        return [self._encode(s) for s in sources]

    def _encode(self, source: bytes) -> bytes:
        if not source.startswith(_SOI):
            raise CodecError("jpeg-lossless takes only JPEG files")
        try:
            with Image.open(io.BytesIO(source)) as im:
                if im.format != "JPEG":
                    raise CodecError("jpeg-lossless takes only JPEG files")
                width, height = im.size
                channels = 1 if im.mode == "L" else 3
            import imagecodecs  # imported on use: a large library only this codec needs

            payload = imagecodecs.jpegxl_encode_jpeg(source)
        except CodecError:
            raise
        except Exception as exc:  # progressive/arithmetic/odd JPEGs libjxl cannot transcode
            raise CodecError(f"JPEG XL cannot transcode this JPEG: {exc}") from exc
        return pack(Header(self.code, height, width, channels), bytes(payload))

    def decode_batch(self, streams: Sequence[bytes]) -> list[Decoded]:
        return [self._decode(s) for s in streams]

    def _decode(self, stream: bytes) -> Decoded:
        header, payload = self.read_header(stream)
        try:
            import imagecodecs

            jpeg = bytes(imagecodecs.jpegxl_decode_jpeg(payload))
            with Image.open(io.BytesIO(jpeg), formats=["JPEG"]) as im:
                if im.size != (header.width, header.height):
                    raise CodecError("reconstructed JPEG size differs from the header")
                if header.channels != (1 if im.mode == "L" else 3):
                    raise CodecError("reconstructed JPEG channels differ from the header")
                image = np.asarray(im.convert("RGB"))
        except CodecError:
            raise
        except Exception as exc:
            raise CodecError(f"jpeg-lossless payload does not decode: {exc}") from exc
        return Decoded(image, jpeg, source=jpeg)

    def versions(self) -> dict[str, str]:
        import imagecodecs

        return {"imagecodecs": imagecodecs.__version__, "libjxl": str(imagecodecs.jpegxl_version())}
