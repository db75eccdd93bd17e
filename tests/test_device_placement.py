"""Codecs run their network where the worker says (``Codec.to``): CPU actors on the CPU, GPU
actors (``--gpus-per-actor``) on their GPU, and a device that is not there is refused up front
with a message that says why, instead of a CUDA error in the middle of a shard."""

import numpy as np
import pytest
import torch
from conftest import synthetic_image
from learned_fixtures import tiny_codec

from models.codec import CodecError
from models.registry import get_codec
from pipeline.rows import RowDecoder
from pipeline.runner import RayOptions, worker_device


def test_actors_with_gpus_run_their_codec_on_cuda():
    assert worker_device(RayOptions()) == "cpu"
    assert worker_device(RayOptions(num_gpus=0.25)) == "cuda"


def test_cpu_placement_is_accepted_by_every_codec():
    for codec_id in ("webp", "png", "test-tiny-msh"):
        codec = get_codec(codec_id)
        assert codec.to("cpu") is codec
    assert RowDecoder(device="cpu").codec("test-tiny-msh").model.device.type == "cpu"


def test_unknown_device_is_refused():
    with pytest.raises(CodecError, match="unknown device 'tpu'"):
        get_codec("webp").to("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_is_refused_with_the_reason():
    for codec_id in ("webp", "test-tiny-msh"):
        with pytest.raises(CodecError, match="sees no CUDA device"):
            get_codec(codec_id).to("cuda")


@pytest.mark.gpu
def test_gpu_encode_decodes_to_the_same_symbols_on_the_cpu():
    image = synthetic_image(3, 96, 128)
    on_gpu, on_cpu = tiny_codec().to("cuda"), tiny_codec()
    assert on_gpu.model.device.type == "cuda"
    stream = on_gpu.encode_batch([image])[0]
    a, b = on_gpu.decode_batch([stream])[0], on_cpu.decode_batch([stream])[0]
    assert a.content == b.content
    assert np.abs(a.image.astype(np.int16) - b.image).max() <= 1


@pytest.mark.gpu
def test_integer_hyper_decoder_is_bit_identical_on_the_gpu():
    from models import intnet

    model = tiny_codec().model
    z = torch.randint(-40, 41, (2, model.N, 12, 8), generator=torch.Generator().manual_seed(5))
    on_cpu = intnet.fixed_to_numpy(intnet.run(model.h_s, z))
    on_gpu = intnet.fixed_to_numpy(intnet.run(intnet.to_device(model.h_s, "cuda"), z))
    assert np.array_equal(on_cpu, on_gpu)
