"""The bitstream frame: every codec's streams start with it; damaged frames are refused."""

import pytest

from models.bitstream import BITSTREAM_VERSION, BitstreamError, Header, _put_varint, pack, unpack


def test_roundtrip_small_header():
    header = Header(codec_code=2, height=512, width=768, channels=3, pad_h=0, pad_w=64)
    stream = pack(header, b"payload")
    assert unpack(stream) == (header, b"payload")
    assert len(stream) - len(b"payload") <= 12


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda s: b"XX" + s[2:], "bad magic"),
        (lambda s: s[:2] + bytes([BITSTREAM_VERSION + 1]) + s[3:], "version"),
        (lambda s: s[:-1], "truncated"),
        (lambda s: s + b"\0", "trailing"),
        (lambda s: s[:5], "truncated"),
    ],
)
def test_damaged_frames_are_refused(mutate, message):
    stream = pack(Header(1, 10, 20), b"0123456789")
    with pytest.raises(BitstreamError, match=message):
        unpack(mutate(stream))


def test_implausible_shape_is_refused_before_allocating():
    out = bytearray(b"LA")
    out.append(BITSTREAM_VERSION)
    for value in (1, 1 << 30, 4):  # codec, height, width
        _put_varint(out, value)
    out.append(3)
    for value in (0, 0, 1):  # pad_h, pad_w, payload length
        _put_varint(out, value)
    with pytest.raises(BitstreamError, match="implausible"):
        unpack(bytes(out) + b"x")


def test_pack_refuses_what_unpack_would_refuse():
    """An encoder must not write a stream its own decoder rejects."""
    with pytest.raises(BitstreamError, match="cannot frame a 1073741824x4x3 image"):
        pack(Header(1, 1 << 30, 4), b"x")
    with pytest.raises(BitstreamError, match="cannot frame"):
        pack(Header(1, 4, 4, channels=2), b"x")
