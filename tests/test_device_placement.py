"""Codecs run their network where the worker says (``Codec.to``): CPU actors on the CPU, GPU
actors (``--gpus-per-actor``) on their GPU, and a device that is not there is refused up front
with a message that says why, instead of a CUDA error in the middle of a shard."""

import numpy as np
import pytest
import torch
from conftest import synthetic_image
from learned_fixtures import tiny_codec

from models.codec import CodecError
from models.registry import get_codec, uses_gpu
from pipeline.rows import RowDecoder
from pipeline.runner import RayOptions, auto_resources, worker_device


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


def test_auto_resources_put_learned_codecs_on_the_clusters_gpus():
    """--cpus-per-actor / --gpus-per-actor auto (the CLI's default), from the nodes' resources."""
    auto = RayOptions()
    cpu_node, gpu_node = {"CPU": 2.0}, {"CPU": 16.0, "GPU": 1.0}
    # no GPU in the cluster, or a codec without a network: CPU actors of half a CPU
    assert auto_resources([cpu_node], auto, uses_gpu=True) == {"num_cpus": 0.5, "num_gpus": 0.0}
    assert auto_resources([gpu_node], auto, uses_gpu=False) == {"num_cpus": 0.5, "num_gpus": 0.0}
    # a learned codec on a GPU node: two actors per GPU, sharing the node's CPUs less half a CPU
    assert auto_resources([cpu_node, gpu_node], auto, True) == {"num_cpus": 7.75, "num_gpus": 0.5}
    # an explicit share is kept, and the CPUs follow it; the smallest node's share holds
    assert auto_resources([gpu_node, {"CPU": 96.0, "GPU": 8.0}], RayOptions(num_gpus=0.25),
                          True) == {"num_cpus": 2.98, "num_gpus": 0.25}
    # explicit values are never changed; 0 GPUs keeps a learned codec on CPUs
    assert auto_resources([gpu_node], RayOptions(num_cpus=1.5, num_gpus=0.0), True) == {
        "num_cpus": 1.5, "num_gpus": 0.0}
    assert auto_resources([gpu_node], RayOptions(num_cpus=3.0), True) == {
        "num_cpus": 3.0, "num_gpus": 0.5}
    assert worker_device(RayOptions(num_gpus=None)) == "cpu"  # unresolved: nothing asked for


def test_which_codecs_want_a_gpu():
    assert uses_gpu("msh-n96-v2") and uses_gpu("test-tiny-msh")
    assert not uses_gpu("webp") and not uses_gpu("gan-latent")


def test_resource_options_take_a_number_or_auto(capsys):
    from pipeline.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["compress", "in", "out"])
    assert (args.cpus_per_actor, args.gpus_per_actor) == (None, None)  # auto: from the cluster
    args = parser.parse_args(["restore", "in", "out", "--cpus-per-actor", "1.5",
                              "--gpus-per-actor", "auto"])
    assert (args.cpus_per_actor, args.gpus_per_actor) == (1.5, None)
    for bad in ("half", "-1"):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["compress", "in", "out", "--gpus-per-actor", bad])
        assert exit_info.value.code == 2
    assert "takes a number or auto, not 'half'" in capsys.readouterr().err
