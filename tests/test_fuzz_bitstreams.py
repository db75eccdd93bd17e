"""Damaged bitstreams never decode to something other than what was stored (bounded fuzz).

Any byte changed, dropped or appended, with the CRC recomputed so only decoding can notice:
the row check raises RowError, or the decode is exactly the stored content (a change in a
part of the file that carries no pixels). Never another image, never another exception.
"""

import crc32c
import pytest
from conftest import encode_image, synthetic_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from learned_fixtures import tiny_codec

from models.registry import get_codec
from pipeline.rows import RowDecoder, RowError


def _row(codec, stream):
    decoded = codec.decode_batch([stream])[0]
    return {"shard": "s", "key": "k", "bitstream": stream, "codec": codec.id,
            "crc32c": crc32c.crc32c(stream), "weights": codec.weights_sha256(),
            "content_hash": decoded.content_hash, "height": decoded.image.shape[0],
            "width": decoded.image.shape[1], "status": "ok"}


def _stream(codec_id):
    image = synthetic_image(40, 64, 80)
    if codec_id == "test-tiny-msh":
        codec = tiny_codec(3.0)
        return codec, codec.encode_batch([image])[0]
    codec = get_codec(codec_id)
    if codec.takes_source:
        return codec, codec.encode_sources([encode_image(image, "JPEG")])[0]
    return codec, codec.encode_batch([image])[0]


@pytest.mark.parametrize("codec_id", ["webp", "jpeg", "png", "avif", "jpeg-lossless", "test-tiny-msh"])
@settings(max_examples=40, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damage_is_detected_or_harmless(codec_id, data):
    codec, stream = _stream(codec_id)
    row = _row(codec, stream)
    reference = row["content_hash"]
    kind = data.draw(st.sampled_from(["flip", "truncate", "append", "set"]))
    pos = data.draw(st.integers(0, len(stream) - 1))
    if kind == "flip":
        damaged = stream[:pos] + bytes([stream[pos] ^ (1 << data.draw(st.integers(0, 7)))]) + stream[pos + 1:]
    elif kind == "truncate":
        damaged = stream[:pos]
    elif kind == "append":
        damaged = stream + data.draw(st.binary(min_size=1, max_size=16))
    else:
        damaged = stream[:pos] + bytes([data.draw(st.integers(0, 255))]) + stream[pos + 1:]
    row = {**row, "bitstream": damaged, "crc32c": crc32c.crc32c(damaged)}
    decoder = RowDecoder()
    decoder._codecs[codec.id] = codec
    try:
        decoded = decoder.check(row)
    except RowError:
        return
    assert decoded.content_hash == reference  # only a change that alters nothing decoded
