"""A tiny mean-scale hyperprior with fixed random weights: fast enough for every test run.

Its weights file and a few bitstreams are committed under tests/golden, so the meaning of a
learned bitstream (integer hyper path, tables, coder framing) cannot change unnoticed.
"""

from pathlib import Path

import torch

from models.hyperprior import MeanScaleHyperprior
from models.learned import LearnedCodec, LearnedModel, export_weights

GOLDEN = Path(__file__).parent / "golden"
TINY_WEIGHTS = GOLDEN / "tiny-msh.safetensors"


class TinyCodec(LearnedCodec):
    """The same weights as the registered ``test-tiny-msh`` (tests/golden/registry.json)."""

    id = "test-tiny-msh"
    code = 250


def make_tiny_weights(path: Path = TINY_WEIGHTS) -> str:
    torch.manual_seed(1234)
    net = MeanScaleHyperprior(N=16, M=24)
    with torch.no_grad():  # a spread of scales and means, as a trained model would give
        net.h_s[-1].bias.uniform_(-2, 2)
    return export_weights(net, path, metadata={"purpose": "tests only, random weights"})


def tiny_codec(quality: float = 4.0) -> TinyCodec:
    if not TINY_WEIGHTS.exists():
        make_tiny_weights()
    return TinyCodec(quality, model=LearnedModel.from_file(TINY_WEIGHTS))
