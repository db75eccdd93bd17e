"""Self-describing bitstream framing shared by every codec.

A bitstream is ``header || payload``. The header lets one archive row decode on its own (no
flags, no manifest) and lets the reader refuse a damaged or foreign stream before any codec
touches it, as tensorflow-compression's packed tensors and ``decode_sanity_check`` do::

    magic      2 bytes  b"LA"
    version    1 byte   BITSTREAM_VERSION
    codec      varint   numeric code of the codec (see models.registry)
    height     varint   image height in pixels (unpadded)
    width      varint
    channels   1 byte
    pad_h      varint   rows of padding the codec added (0 for Pillow codecs)
    pad_w      varint
    length     varint   payload length in bytes

Varints are unsigned LEB128. A typical header is 10-12 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

MAGIC = b"LA"
BITSTREAM_VERSION = 1
# Nothing latentarc writes is larger; a declared size beyond this is damage, not data.
MAX_DIM = 1 << 20
MAX_PAYLOAD = 1 << 34


class BitstreamError(ValueError):
    """A bitstream is malformed, truncated, has trailing bytes, or is not ours."""


@dataclass(frozen=True)
class Header:
    codec_code: int
    height: int
    width: int
    channels: int = 3
    pad_h: int = 0
    pad_w: int = 0


def _put_varint(out: bytearray, value: int) -> None:
    if value < 0:
        raise ValueError(f"varint must be non-negative, got {value}")
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _get_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 64, 7):
        if pos >= len(buf):
            raise BitstreamError("bitstream truncated inside its header")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
    raise BitstreamError("varint in header is too long")


def pack(header: Header, payload: bytes) -> bytes:
    """Frame ``payload`` with ``header``; refuse a frame that ``unpack`` would refuse."""
    if not (0 < header.height <= MAX_DIM and 0 < header.width <= MAX_DIM
            and header.pad_h <= MAX_DIM and header.pad_w <= MAX_DIM
            and header.channels in (1, 3) and len(payload) <= MAX_PAYLOAD):
        raise BitstreamError(f"cannot frame a {header.height}x{header.width}x{header.channels} "
                             f"image (padding {header.pad_h}x{header.pad_w}, {len(payload)} bytes)")
    out = bytearray(MAGIC)
    out.append(BITSTREAM_VERSION)
    _put_varint(out, header.codec_code)
    _put_varint(out, header.height)
    _put_varint(out, header.width)
    out.append(header.channels)
    _put_varint(out, header.pad_h)
    _put_varint(out, header.pad_w)
    _put_varint(out, len(payload))
    return bytes(out) + payload


def unpack(stream: bytes) -> tuple[Header, bytes]:
    """Split a stream into header and payload; refuse anything that is not exactly one frame."""
    if len(stream) < 3 or stream[:2] != MAGIC:
        raise BitstreamError("not a latentarc bitstream (bad magic)")
    if stream[2] != BITSTREAM_VERSION:
        raise BitstreamError(
            f"bitstream version {stream[2]} is not supported (this latentarc reads "
            f"version {BITSTREAM_VERSION}); upgrade latentarc"
        )
    pos = 3
    codec_code, pos = _get_varint(stream, pos)
    height, pos = _get_varint(stream, pos)
    width, pos = _get_varint(stream, pos)
    if pos >= len(stream):
        raise BitstreamError("bitstream truncated inside its header")
    channels = stream[pos]
    pos += 1
    pad_h, pos = _get_varint(stream, pos)
    pad_w, pos = _get_varint(stream, pos)
    length, pos = _get_varint(stream, pos)
    if not (0 < height <= MAX_DIM and 0 < width <= MAX_DIM and channels in (1, 3)):
        raise BitstreamError(f"implausible shape in header: {height}x{width}x{channels}")
    if pad_h > MAX_DIM or pad_w > MAX_DIM or length > MAX_PAYLOAD:
        raise BitstreamError("implausible padding or payload length in header")
    remaining = len(stream) - pos
    if remaining < length:
        raise BitstreamError(f"bitstream truncated: payload has {remaining} of {length} bytes")
    if remaining > length:
        raise BitstreamError(f"bitstream has {remaining - length} trailing bytes after payload")
    header = Header(codec_code, height, width, channels, pad_h, pad_w)
    return header, stream[pos:]
