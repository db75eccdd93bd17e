"""Encode-time latent refinement (``--effort`` for hyperprior codecs, ``models.refine``).

Refinement changes only which symbols the encoder picks: the stream keeps its format and
decodes with any instance of the codec, effort 0 is the plain encode byte for byte, and on a
real photo with the shipped default codec it lowers the measured rate-distortion cost.
"""

import numpy as np
import pytest
import torch
from conftest import shared_path, synthetic_image
from learned_fixtures import TinyCodec, tiny_codec
from PIL import Image

from models.bitstream import unpack
from models.codec import CodecError
from models.hyperprior import MeanScaleHyperprior
from models.learned import LearnedModel, export_weights
from models.registry import DEFAULT_CODEC, get_codec
from pipeline.images import psnr


def _refined(quality: float, effort: int) -> TinyCodec:
    codec = tiny_codec(quality)
    codec.effort = effort
    return codec


def test_effort_zero_is_the_plain_encode_and_refined_streams_decode_anywhere():
    image = synthetic_image(21, 70, 130)
    plain = tiny_codec(3.0).encode_batch([image])[0]
    assert _refined(3.0, 0).encode_batch([image])[0] == plain
    refined = _refined(3.0, 10).encode_batch([image])[0]
    assert refined != plain, "ten Adam steps left every symbol where it was"
    assert unpack(refined)[0] == unpack(plain)[0]  # same header: same size, padding, codec
    decoded = tiny_codec(3.0).decode_batch([refined])[0]  # a decoder that never refines
    assert decoded.image.shape == image.shape
    # z is not refined: the stream starts with the same hyper symbols (same quality field)
    assert unpack(refined)[1][:2] == unpack(plain)[1][:2]


def test_images_above_the_effort_cap_are_coded_unrefined():
    """--effort-max-mp: an image above the cap gets the plain encode's stream byte for byte (and
    the codec says so, for the pipeline's count); one at the cap is still refined."""
    small, large = synthetic_image(31, 48, 64), synthetic_image(21, 70, 130)
    model = tiny_codec().model
    plain = TinyCodec(3.0, model=model).encode_batch([small, large])
    capped = TinyCodec(3.0, model=model, effort=10, effort_max_pixels=48 * 64)
    assert not capped.skips_effort(48, 64) and capped.skips_effort(70, 130)
    refined_small, unrefined_large = capped.encode_batch([small, large])
    assert refined_small != plain[0], "the image at the cap was not refined"
    assert unrefined_large == plain[1]
    uncapped = TinyCodec(3.0, model=model, effort=10, effort_max_pixels=float("inf"))
    assert uncapped.encode_batch([large])[0] != plain[1] and not uncapped.skips_effort(70, 130)
    assert not TinyCodec(3.0, model=model).skips_effort(10**4, 10**4)  # no effort: nothing skipped
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(CodecError, match="--effort-max-mp"):
            TinyCodec(3.0, model=model, effort=10, effort_max_pixels=bad)
    with pytest.raises(CodecError, match="takes no --effort-max-mp"):
        get_codec("webp", 50, effort_max_pixels=1e6)


def test_refinement_needs_no_parameter_gradients_and_leaves_the_model_alone():
    codec = _refined(4.0, 5)
    before = {k: v.clone() for k, v in codec.model.net.state_dict().items()}
    with torch.inference_mode():  # as the pipeline's workers call it
        codec.encode_batch([synthetic_image(23, 64, 64)])
    assert all(p.grad is None for p in codec.model.net.parameters())
    assert all(torch.equal(before[k], v) for k, v in codec.model.net.state_dict().items())


def test_bad_efforts_are_refused(tmp_path):
    model = tiny_codec().model
    with pytest.raises(CodecError, match="effort"):
        TinyCodec(4.0, model=model, effort=-1)
    torch.manual_seed(7)
    export_weights(MeanScaleHyperprior(16, 24, prior="factorized"), tmp_path / "f.safetensors")
    with pytest.raises(CodecError, match="factorized prior"):
        TinyCodec(4.0, model=LearnedModel.from_file(tmp_path / "f.safetensors"), effort=5)
    with pytest.raises(CodecError, match="takes no --effort"):
        get_codec("webp", 50, effort=5)


@pytest.mark.slow
def test_refinement_lowers_the_measured_rd_cost_of_the_default_codec():
    """On a Kodak crop, with real bytes and the real decode: 8 * bytes / pixel + lambda *
    255^2 * MSE (the loss the codec was trained on) is lower after 20 steps, at a low and a
    high quality. Kodak is evaluation data; nothing here is trained on it."""
    path = shared_path("datasets", "kodak", "kodim15.png")
    image = np.asarray(Image.open(path).convert("RGB"))[128:384, 256:512]
    for quality in (1.0, 6.0):
        costs = {}
        for effort in (0, 20):
            codec = get_codec(DEFAULT_CODEC, quality, effort=effort)
            stream = codec.encode_batch([image])[0]
            decoded = codec.decode_batch([stream])[0].image
            mse = 10 ** (-psnr(image, decoded) / 10)  # of pixels in [0, 1]
            lmbda = float(MeanScaleHyperprior.lmbda(torch.tensor([quality - 1.0])))
            costs[effort] = 8 * len(stream) / image[..., 0].size + lmbda * 255**2 * mse
        assert costs[20] < costs[0], (quality, costs)
