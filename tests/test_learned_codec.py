"""The learned codec's bitstream is exact by construction: tests (a)-(d) of the learned-codec issue.

(a) the hyper path is integer arithmetic: it equals a pure int64 reference, so float details
    cannot move an index; (b) thread count and batch composition do not change symbols;
(c) neither do ATen CPU kernels (default vs avx2); (d) golden bitstreams decode bit-exact.
"""

import json
import os
import struct
import subprocess
import sys

import crc32c
import numpy as np
import pytest
import torch
from conftest import REPO, synthetic_image
from learned_fixtures import GOLDEN, tiny_codec

from models import intnet
from models.bitstream import Header, pack, unpack
from models.codec import CodecError


def _int_reference(layers, z: np.ndarray) -> np.ndarray:
    """The same fixed-point network in plain int64 numpy: no floating point anywhere."""
    a = z.astype(np.int64) * 2**intnet.A_BITS
    for layer in layers:
        w = layer.weight.numpy().astype(np.int64)
        if layer.kind == "deconv":  # transpose conv = stuffing + flipped kernel
            b, c, h, wd = a.shape
            s, k = layer.stride, w.shape[-1]
            st = np.zeros((b, c, (h - 1) * s + 1, (wd - 1) * s + 1), np.int64)
            st[:, :, ::s, ::s] = a
            lo, hi = k - 1 - layer.padding, k - 1 - layer.padding + layer.output_padding
            a = np.pad(st, ((0, 0), (0, 0), (lo, hi), (lo, hi)))
            w, stride, pad = np.flip(w, (2, 3)).transpose(1, 0, 2, 3), 1, 0
        else:
            stride, pad = layer.stride, layer.padding
            a = np.pad(a, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        k = w.shape[-1]
        oh = (a.shape[2] - k) // stride + 1
        ow = (a.shape[3] - k) // stride + 1
        acc = np.zeros((a.shape[0], w.shape[0], oh, ow), np.int64)
        for i in range(k):
            for j in range(k):
                patch = a[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
                acc += np.einsum("bchw,oc->bohw", patch, w[:, :, i, j])
        acc += layer.bias.numpy().astype(np.int64).reshape(1, -1, 1, 1)
        a = (acc + 2 ** (intnet.W_BITS - 1)) >> intnet.W_BITS
        if layer.relu:
            a = np.maximum(a, 0)
        a = np.clip(a, -intnet.A_LIMIT, intnet.A_LIMIT)
    return a


def test_a_hyper_path_is_exact_integer_arithmetic():
    model = tiny_codec().model
    rng = np.random.default_rng(0)
    z = rng.integers(-20, 21, size=(2, model.N, 3, 5))
    exact = intnet.fixed_to_numpy(intnet.run(model.h_s, torch.from_numpy(z)))
    assert np.array_equal(exact, _int_reference(model.h_s, z))
    # Nothing float enters: the input is integer symbols, and a value that is not an integer
    # is not a symbol. Batch composition and thread count do not matter either.
    torch.set_num_threads(1)
    single = intnet.fixed_to_numpy(intnet.run(model.h_s, torch.from_numpy(z[:1])))
    torch.set_num_threads(2)
    assert np.array_equal(single, exact[:1])


def test_roundtrip_and_rate_control():
    low, high = tiny_codec(1.0), tiny_codec(7.0)
    image = synthetic_image(3, 70, 130)  # not a multiple of 64: padding in the header
    streams = [low.encode_batch([image])[0], high.encode_batch([image])[0]]
    header, _ = unpack(streams[0])
    assert (header.height, header.width, header.pad_h, header.pad_w) == (70, 130, 58, 62)
    for codec, stream in zip((low, high), streams, strict=True):
        decoded = codec.decode_batch([stream])[0]
        assert decoded.image.shape == image.shape and decoded.image.dtype == np.uint8


def test_qualities_below_zero_are_stored_signed_and_lower_the_rate():
    """Qualities in [-1, 0) reach rates below quality 0. The field is signed 16-bit, so a
    quality >= 0 keeps the bytes it had when the field was unsigned (the goldens check those
    streams), and a code below the range is refused rather than extrapolated further."""
    image = synthetic_image(4, 64, 128)
    streams = {q: tiny_codec(q).encode_batch([image])[0] for q in (-1.0, -0.5, 0.0)}
    for q, stream in streams.items():
        _, payload = unpack(stream)
        assert struct.unpack(">h", payload[:2])[0] == round(q * 1000)
        assert tiny_codec(q).decode_batch([stream])[0].content[:2] == payload[:2]
    assert unpack(streams[0.0])[1][:2] == struct.pack(">H", 0)
    assert len(streams[-1.0]) <= len(streams[-0.5]) <= len(streams[0.0])
    header, payload = unpack(streams[-1.0])
    with pytest.raises(CodecError, match="outside"):
        tiny_codec().decode_batch([pack(header, struct.pack(">h", -1001) + payload[2:])])
    with pytest.raises(CodecError, match="outside"):
        tiny_codec(-1.001)


def test_b_threads_and_batches_do_not_change_symbols():
    """A stream decodes to the same symbols whatever the batch it is decoded in and the thread
    count; reconstructions differ by at most one level. Encoding in a batch or alone may pick
    other symbols (float analysis), and each stream is still exact."""
    codec = tiny_codec(3.5)
    images = [synthetic_image(5, 64, 64), synthetic_image(6, 100, 90), synthetic_image(7, 64, 64)]
    torch.set_num_threads(2)
    batch = codec.encode_batch(images)
    torch.set_num_threads(1)
    single = [codec.encode_batch([im])[0] for im in images]
    alone = [codec.decode_batch([s])[0] for s in batch]
    torch.set_num_threads(2)
    together = codec.decode_batch(batch)
    largest = 0
    for a, b in zip(alone, together, strict=True):
        assert a.content_hash == b.content_hash
        largest = max(largest, int(np.abs(a.image.astype(int) - b.image.astype(int)).max()))
    assert largest <= 1
    torch.set_num_threads(1)
    single_1 = [d.content_hash for d in codec.decode_batch(single)]
    torch.set_num_threads(2)
    assert [codec.decode_batch([s])[0].content_hash for s in single] == single_1


DECODE_SCRIPT = """
import json, sys
sys.path[:0] = [{repo!r}, {tests!r}]
from learned_fixtures import tiny_codec
from conftest import synthetic_image
codec = tiny_codec(4.0)
stream = codec.encode_batch([synthetic_image(7, 96, 160)])[0]
d = codec.decode_batch([stream])[0]
print(json.dumps({{"stream": stream.hex(), "hash": d.content_hash.hex(), "pixels": d.image.tolist()}}))
"""


def test_c_cpu_kernels_do_not_change_symbols():
    runs = {}
    for capability in ("default", "avx2"):
        env = {**os.environ, "ATEN_CPU_CAPABILITY": capability}
        script = DECODE_SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests"))
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        runs[capability] = json.loads(done.stdout)
    a, b = runs["default"], runs["avx2"]
    assert a["stream"] == b["stream"] and a["hash"] == b["hash"]
    diff = np.abs(np.array(a["pixels"]) - np.array(b["pixels"])).max()
    print(f"largest pixel difference default vs avx2: {diff}")
    assert diff <= 1


def test_d_golden_bitstreams_decode_bit_exact():
    codec = tiny_codec()
    golden = json.loads((GOLDEN / "tiny-msh.json").read_text())
    assert golden["weights_sha256"] == codec.weights_sha256()
    for case in golden["streams"]:
        decoded = codec.decode_batch([bytes.fromhex(case["stream"])])[0]
        assert decoded.content_hash.hex() == case["content_hash"]


SHIPPED_GOLDENS = sorted(p for p in GOLDEN.glob("*.json")
                         if "codec" in json.loads(p.read_text()))
# gan-latent's goldens are generator faces, decoded in tests/test_gan_latent.py
HYPERPRIOR_GOLDENS = [p for p in SHIPPED_GOLDENS if p.stem != "gan-latent"]


@pytest.mark.parametrize("path", HYPERPRIOR_GOLDENS, ids=lambda p: p.stem)
def test_d_shipped_weights_golden_bitstreams_decode_bit_exact(path):
    """Bitstreams of each shipped learned codec (tests/make_goldens.py) decode to the same symbols
    forever, and to a picture of what was encoded (not merely to something)."""
    from models.registry import get_codec
    from pipeline.images import psnr

    golden = json.loads(path.read_text())
    model = get_codec(golden["codec"]).model  # load (and sha-check) the weights once
    assert model.sha256 == golden["weights_sha256"]
    for case in golden["streams"]:
        codec = _registered_class(golden["codec"])(case["quality"], model=model)
        decoded = codec.decode_batch([bytes.fromhex(case["stream"])])[0]
        assert decoded.content_hash.hex() == case["content_hash"]
        assert psnr(synthetic_image(case["seed"], *case["shape"]), decoded.image) > 20


def _registered_class(codec_id: str):
    from models.registry import _CODECS

    return _CODECS[codec_id]


def test_shipped_goldens_exist_for_every_registered_learned_codec():
    from models.weights import read_registry

    covered = {json.loads(p.read_text())["codec"] for p in SHIPPED_GOLDENS}
    assert set(read_registry()) <= covered


@pytest.mark.parametrize("damage", ["flip", "truncate", "extend"])
def test_damaged_learned_streams_never_decode_silently(damage):
    codec = tiny_codec()
    stream = codec.encode_batch([synthetic_image(8, 64, 128)])[0]
    reference = codec.decode_batch([stream])[0].content_hash
    header, payload = unpack(stream)
    if damage == "flip":
        bad = bytearray(payload)
        bad[len(bad) // 2] ^= 0x04
        candidates = [pack(header, bytes(bad))]
    elif damage == "truncate":
        candidates = [pack(header, payload[:-4])]
    else:
        candidates = [pack(header, payload + b"\0\0\0\0")]
    for candidate in candidates:
        try:
            decoded = codec.decode_batch([candidate])[0]
        except CodecError:
            continue
        assert decoded.content_hash != reference


def test_header_that_lies_about_padding_is_refused():
    codec = tiny_codec()
    header, payload = unpack(codec.encode_batch([synthetic_image(9, 64, 64)])[0])
    with pytest.raises(CodecError, match="stride"):
        codec.decode_batch([pack(Header(header.codec_code, 64, 64, 3, 1, 0), payload)])


def test_a_header_too_big_for_its_payload_is_refused_before_decoding():
    """The range decoder reads zeros past the end of its data, so a 64x64 stream framed as
    8192x8192 decoded 4 million symbols (52 s, 5.8 GB for msh-n96) before the re-encode check
    refused it. The payload's length now bounds the symbols it can hold (the message is the
    length check's, which runs before any symbol is decoded)."""
    codec = tiny_codec()
    header, payload = unpack(codec.encode_batch([synthetic_image(9, 64, 64)])[0])
    with pytest.raises(CodecError, match="too short for a 8192x8192 \\(padded\\) image"):
        codec.decode_batch([pack(Header(header.codec_code, 8192, 8192, 3), payload)])


def test_header_that_lies_about_channels_is_refused():
    codec = tiny_codec()
    header, payload = unpack(codec.encode_batch([synthetic_image(9, 64, 64)])[0])
    with pytest.raises(CodecError, match="writes 3 channels, the header says 1"):
        codec.decode_batch([pack(Header(header.codec_code, 64, 64, 1, header.pad_h, header.pad_w),
                                 payload)])


def test_a_view_with_negative_strides_encodes_as_its_copy():
    """image[..., ::-1] (BGR to RGB) raised torch's ValueError, not a CodecError or a stream."""
    codec = tiny_codec()
    bgr = synthetic_image(12, 48, 64)
    view = bgr[..., ::-1]
    assert codec.encode_batch([view]) == codec.encode_batch([view.copy()])


def test_export_writes_a_loadable_self_consistent_model(tmp_path):
    from learned_fixtures import TinyCodec, make_tiny_weights

    from models.learned import LearnedModel

    digest = make_tiny_weights(tmp_path / "w.safetensors")
    model = LearnedModel.from_file(tmp_path / "w.safetensors")
    assert model.sha256 == digest
    codec = TinyCodec(2.5, model=model)
    image = synthetic_image(11, 64, 64)
    decoded = codec.decode_batch(codec.encode_batch([image]))[0]
    assert decoded.image.shape == image.shape


def test_weights_with_another_sha256_are_refused(tmp_path):
    from learned_fixtures import TINY_WEIGHTS

    from models.learned import LearnedCodec

    class Pinned(LearnedCodec):
        id, code = "test-pinned", 251
        weights_file = str(TINY_WEIGHTS)
        weights_sha256_pinned = "0" * 64

    with pytest.raises(CodecError, match="pinned sha256"):
        Pinned(4.0)
    with pytest.raises(ValueError, match="sha256 '' is not 64 lower-case hex digits"):
        from models.registry import _LazyLearned, _register_one

        _register_one(_LazyLearned, tmp_path, "test-unpinned", {
            "file": "w.safetensors", "sha256": "", "code": 252,
            "card": {"title": "t", "budget_label": "b"}})
    Pinned.weights_sha256_pinned = tiny_codec().weights_sha256()
    assert Pinned(4.0).weights_sha256() == Pinned.weights_sha256_pinned


def test_an_archive_row_refuses_other_weights(tmp_path):
    from pipeline.rows import RowDecoder, RowError

    codec = tiny_codec()
    stream = codec.encode_batch([synthetic_image(12, 64, 64)])[0]
    decoder = RowDecoder()
    decoder._codecs[codec.id] = codec
    row = {"shard": "s", "key": "k", "bitstream": stream, "codec": codec.id,
           "crc32c": crc32c.crc32c(stream), "weights": "f" * 64,
           "content_hash": b"", "height": 64, "width": 64}
    with pytest.raises(RowError, match="refusing to decode with other weights"):
        decoder.decode(row)


@pytest.mark.parametrize("prior", ["scale", "factorized"])
def test_other_priors_roundtrip_exactly(tmp_path, prior):
    """Ballé 2018 scale hyperprior and Ballé 2017 factorized prior share the codec machinery."""
    from learned_fixtures import TinyCodec

    from models.hyperprior import MeanScaleHyperprior
    from models.learned import LearnedModel, export_weights

    torch.manual_seed(7)
    export_weights(MeanScaleHyperprior(16, 24, prior=prior), tmp_path / "w.safetensors")
    model = LearnedModel.from_file(tmp_path / "w.safetensors")
    assert model.prior == prior
    codec = TinyCodec(5.0, model=model)
    images = [synthetic_image(13, 70, 100), synthetic_image(14, 64, 64)]
    streams = codec.encode_batch(images)
    torch.set_num_threads(1)
    first = codec.decode_batch(streams)
    torch.set_num_threads(2)
    again = codec.decode_batch(streams)
    for image, a, b in zip(images, first, again, strict=True):
        assert a.image.shape == image.shape and a.content_hash == b.content_hash
    header, payload = unpack(streams[0])
    with pytest.raises(CodecError):
        codec.decode_batch([pack(header, payload + b"\0\0\0\0")])


def test_stream_length_counts_every_byte_a_stream_has():
    """The GAN eval and the realism trials count bpp from range-coder words; stream_length
    adds what the codec writes around them (it once left 15 bytes out)."""
    from models.learned import stream_length

    codec = tiny_codec()
    for h, w in ((64, 64), (37, 130)):
        stream = codec.encode_batch([synthetic_image(5, h, w)])[0]
        header, payload = unpack(stream)
        assert stream_length(codec.code, h, w, header.pad_h, header.pad_w, payload[2:]) == \
            len(stream)
