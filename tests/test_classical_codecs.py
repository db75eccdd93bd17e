"""Pillow codecs behind the codec interface: round trips, quality ranges, damaged payloads."""

import struct

import numpy as np
import pytest
from conftest import synthetic_image

from models.bitstream import Header, pack, unpack
from models.codec import CodecError
from models.registry import get_codec, list_codecs
from pipeline.images import psnr

CODECS = [c.id for c in list_codecs() if c.kind == "classical"]


@pytest.mark.parametrize("codec_id", CODECS)
def test_roundtrip(codec_id):
    codec = get_codec(codec_id)
    images = [synthetic_image(1), synthetic_image(2, 40, 30)]
    streams = codec.encode_batch(images)
    decoded = codec.decode_batch(streams)
    for image, d in zip(images, decoded, strict=True):
        assert d.image.shape == image.shape and d.image.dtype == np.uint8
        if codec.lossless:
            assert np.array_equal(d.image, image)
        else:
            assert 25 < psnr(image, d.image) < 60
    # The content hash is a pure function of the stream.
    assert [d.content_hash for d in codec.decode_batch(streams)] == [d.content_hash for d in decoded]


def test_quality_changes_rate_and_range_is_enforced():
    image = synthetic_image(3)
    low = get_codec("webp", 10).encode_batch([image])[0]
    high = get_codec("webp", 95).encode_batch([image])[0]
    assert len(low) < len(high)
    with pytest.raises(CodecError, match="outside"):
        get_codec("jpeg", 101)
    with pytest.raises(CodecError, match="takes no"):
        get_codec("png", 50)
    with pytest.raises(CodecError, match="unknown codec"):
        get_codec("nope")


@pytest.mark.parametrize("codec_id", CODECS)
def test_payload_with_trailing_or_missing_bytes_is_refused(codec_id):
    codec = get_codec(codec_id)
    header, payload = unpack(codec.encode_batch([synthetic_image(4)])[0])
    for bad in (payload + b"\x00\x01", payload[:-3]):
        with pytest.raises(CodecError):
            codec.decode_batch([pack(header, bad)])


def test_stream_of_another_codec_is_refused():
    stream = get_codec("jpeg").encode_batch([synthetic_image(5)])[0]
    with pytest.raises(CodecError, match="not webp"):
        get_codec("webp").decode_batch([stream])


def test_header_shape_must_match_payload():
    codec = get_codec("png")
    header, payload = unpack(codec.encode_batch([synthetic_image(6)])[0])
    lying = Header(header.codec_code, header.height + 1, header.width)
    with pytest.raises(CodecError, match="decoded size"):
        codec.decode_batch([pack(lying, payload)])


def test_input_must_be_uint8_rgb():
    with pytest.raises(CodecError):
        get_codec("png").encode_batch([np.zeros((4, 4), np.uint8)])
    with pytest.raises(CodecError):
        get_codec("png").encode_batch([np.zeros((4, 4, 3), np.float32)])


@pytest.mark.parametrize("codec_id, width", [("webp", 20000), ("avif", 70000)])
def test_an_image_pillow_cannot_write_is_a_codec_error(codec_id, width):
    """WebP raises OSError here and AVIF RuntimeError; either must become the image's
    passthrough reason, not a failure of its whole shard."""
    with pytest.raises(CodecError, match=f"cannot encode a {width}x1 image"):
        get_codec(codec_id).encode_batch([np.zeros((1, width, 3), np.uint8)])


def test_psnr_sums_exactly_across_slices():
    """PSNR's integer sum over slices (pipeline.images) equals the exact squared error: an image
    of several slices, all channels, and inf for identical images."""
    import math

    import numpy as np

    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (700, 900, 3), dtype=np.uint8)  # 1.9 M samples: two slices
    b = np.clip(a.astype(int) + rng.integers(-9, 10, a.shape), 0, 255).astype(np.uint8)
    sse = int(((a.astype(np.int64) - b) ** 2).sum())
    assert psnr(a, b) == 10 * math.log10(255.0**2 / (sse / a.size))
    assert psnr(a, a) == math.inf
    worst = np.zeros_like(a)
    worst[..., 0] = 255
    assert psnr(worst, np.zeros_like(a)) == 10 * math.log10(3)  # MSE 255^2 / 3


def test_a_side_the_header_cannot_carry_is_a_codec_error():
    """png encoded a 1x1048577 image into a stream that its own decoder then refused."""
    with pytest.raises(CodecError, match="1048577x1 image: a side above 1048576 pixels"):
        get_codec("png").encode_batch([np.zeros((1, (1 << 20) + 1, 3), np.uint8)])


@pytest.mark.parametrize("codec_id", ["png", "jpeg"])
def test_an_image_pillow_would_refuse_to_decode_is_not_encoded(codec_id, monkeypatch):
    """Pillow's decoder refuses more than 2 * MAX_IMAGE_PIXELS as a decompression bomb: png and
    jpeg encoded such images (about 179 MP by default) into streams they then could not read.
    The bound is lowered here so the test needs no 500 MB image."""
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    codec = get_codec(codec_id)
    codec.encode_batch([np.zeros((20, 50, 3), np.uint8)])  # 1000 pixels: still decodes
    with pytest.raises(CodecError, match="50x21 image: Pillow would refuse to decode it"):
        codec.encode_batch([np.zeros((21, 50, 3), np.uint8)])


def test_png_payload_with_a_flipped_bit_inside_a_chunk_is_refused():
    """Pillow checks neither chunk CRCs nor zlib's checksum: a flip inside IDAT decoded to
    other pixels, with no error, from the lossless codec."""
    codec = get_codec("png")
    (stream,) = codec.encode_batch([synthetic_image(3, 40, 50)])
    header, payload = unpack(stream)
    idat = payload.index(b"IDAT")
    (length,) = struct.unpack(">I", payload[idat - 4:idat])
    for offset in range(idat + 4, idat + 4 + length, max(1, length // 40)):
        damaged = bytearray(payload)
        damaged[offset] ^= 0x10
        with pytest.raises(CodecError, match="not one complete PNG"):
            codec.decode_batch([pack(header, bytes(damaged))])


@pytest.mark.parametrize("field", ["channels", "pad_h", "pad_w"])
def test_header_fields_the_codec_never_writes_are_refused(field):
    codec = get_codec("webp")
    header, payload = unpack(codec.encode_batch([synthetic_image(4)])[0])
    value = {"channels": 1, "pad_h": 7, "pad_w": 9}[field]
    lying = Header(**{**header.__dict__, field: value})
    with pytest.raises(CodecError, match="writes"):
        codec.decode_batch([pack(lying, payload)])
