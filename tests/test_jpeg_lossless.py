"""jpeg-lossless: JPEG XL transcoding that restores the original JPEG byte for byte."""

import hashlib

import pyarrow.parquet as pq
import pytest
from conftest import encode_image, read_tar, synthetic_image

from models.codec import CodecError
from models.registry import get_codec
from pipeline.compress import compress
from pipeline.restore import restore
from pipeline.shard_encode import Guard
from pipeline.verify import verify


def test_roundtrip_is_byte_exact_and_smaller():
    codec = get_codec("jpeg-lossless")
    original = encode_image(synthetic_image(1, 240, 320), "JPEG")
    stream = codec.encode_sources([original])[0]
    assert len(stream) < len(original)
    decoded = codec.decode_batch([stream])[0]
    assert hashlib.sha256(decoded.source).digest() == hashlib.sha256(original).digest()
    assert decoded.image.shape == (240, 320, 3)


def test_a_stream_whose_channels_byte_lies_is_refused():
    from models.bitstream import Header, pack, unpack

    codec = get_codec("jpeg-lossless")
    header, payload = unpack(codec.encode_sources([encode_image(synthetic_image(3), "JPEG")])[0])
    assert header.channels == 3
    grey = Header(header.codec_code, header.height, header.width, 1)
    with pytest.raises(CodecError, match="channels differ"):
        codec.decode_batch([pack(grey, payload)])


def test_other_formats_are_refused_with_a_reason():
    codec = get_codec("jpeg-lossless")
    with pytest.raises(CodecError, match="only JPEG"):
        codec.encode_sources([encode_image(synthetic_image(2), "PNG")])
    with pytest.raises(CodecError, match="not pixels"):
        codec.encode_batch([synthetic_image(2)])


@pytest.mark.usefixtures("ray_local")
def test_pipeline_restores_jpegs_byte_identical(small_shards, tmp_path):
    archive = tmp_path / "arc"
    assert compress([str(small_shards)], str(archive), "jpeg-lossless", progress=False).ok
    rows = {r["key"]: r for r in pq.read_table(archive / "shards").to_pylist()}
    assert rows["a1"]["status"] == "ok" and rows["a1"]["codec"] == "jpeg-lossless"
    assert rows["a0"]["status"] == "passthrough" and "only JPEG" in rows["a0"]["reason"]
    assert verify(str(archive), progress=False).ok
    assert restore(str(archive), str(tmp_path / "out"), progress=False).ok
    source = read_tar(small_shards / "shard-000000.tar")
    back = read_tar(tmp_path / "out" / "shard-000000.tar")
    assert back == source


@pytest.mark.usefixtures("ray_local")
def test_guard_falls_back_to_jpeg_lossless_for_jpeg_sources(small_shards, tmp_path):
    archive = tmp_path / "arc"
    assert compress([str(small_shards)], str(archive), "webp", 10, progress=False,
                    guard=Guard(size=True, min_psnr=60)).ok
    rows = {r["key"]: r for r in pq.read_table(archive / "shards").to_pylist()}
    assert rows["a1"]["codec"] == "jpeg-lossless"
    assert rows["a1"]["reason"].startswith("stored with jpeg-lossless: PSNR")
    assert rows["a0"]["status"] == "passthrough"  # a PNG source has no lossless fallback here
    assert verify(str(archive), progress=False).ok
    assert restore(str(archive), str(tmp_path / "out"), progress=False).ok
    restored = read_tar(tmp_path / "out" / "shard-000000.tar")
    assert restored["a1"] == read_tar(small_shards / "shard-000000.tar")["a1"]
