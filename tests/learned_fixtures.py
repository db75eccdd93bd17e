"""A tiny mean-scale hyperprior with fixed random weights: fast enough for every test run.

Its weights file and a few bitstreams are committed under tests/golden, so the meaning of a
learned bitstream (integer hyper path, tables, coder framing) cannot change unnoticed.
"""

import copy
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


# ---------------------------------------------------------------- realistic decoders (issue 6)

REALISTIC_CODEC = "test-tiny-real"  # registered per test (register_tiny_realistic), never shipped
REALISTIC_CODE = 249


def make_tiny_realistic(path: Path, pairs_with: str | None = None, scale: float = 0.3) -> str:
    """A stand-in realistic decoder for the tiny codec: its g_s with perturbed weights (the real
    one comes from GAN training). Enough to prove the plumbing: other pixels, same symbols."""
    from models.realistic import export_realistic

    if not TINY_WEIGHTS.exists():
        make_tiny_weights()
    model = LearnedModel.from_file(TINY_WEIGHTS)
    g_s = copy.deepcopy(model.net.g_s)
    generator = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for p in g_s.parameters():
            p.add_(scale * p.abs().mean() * torch.randn(p.shape, generator=generator))
    return export_realistic(g_s, pairs_with or model.sha256, path, torch.float16,
                            {"architecture": model.net.architecture, "purpose": "tests only"})


def register_tiny_realistic(directory: Path) -> type:
    """Register (in this process only) ``test-tiny-real``: the tiny weights plus a realistic
    decoder, in a registry.json under ``directory``, as a team would ship one. Returns the class;
    call ``unregister(REALISTIC_CODEC)`` when done."""
    import shutil

    from models.registry import _LazyLearned, _register_one
    from models.weights import read_registry, register_decoder, register_weights

    if not TINY_WEIGHTS.exists():
        make_tiny_weights()
    shutil.copy(TINY_WEIGHTS, directory / "tiny.safetensors")
    sha = LearnedModel.from_file(directory / "tiny.safetensors").sha256
    card = {"title": "tiny test codec with a realistic decoder", "budget_label": "tests only"}
    register_weights(REALISTIC_CODEC, "tiny.safetensors", sha, REALISTIC_CODE, card, directory)
    real_sha = make_tiny_realistic(directory / "tiny-realistic.safetensors")
    register_decoder(REALISTIC_CODEC, "realistic", "tiny-realistic.safetensors", real_sha,
                     {"title": "perturbed g_s", "budget_label": "tests only"}, directory)
    _register_one(_LazyLearned, directory, REALISTIC_CODEC, read_registry(directory)[REALISTIC_CODEC])
    from models.registry import _CODECS

    return _CODECS[REALISTIC_CODEC]


def unregister(codec_id: str) -> None:
    from models.registry import _CODECS

    _CODECS.pop(codec_id, None)


def run_in_process(monkeypatch) -> None:
    """Run compress/restore/verify workers in this process instead of on Ray: codecs registered only
    here (register_tiny_realistic) are then visible to them, and no cluster is needed."""
    import pipeline.compress
    import pipeline.restore
    import pipeline.runner
    import pipeline.verify

    def run(worker_cls, worker_args, tasks, options, on_start=None):
        worker = worker_cls(*worker_args)
        if on_start is not None:
            on_start()
        for task in tasks:
            yield worker(task)

    for module in (pipeline.compress, pipeline.restore, pipeline.verify):
        monkeypatch.setattr(module, "run_per_shard", run)
    monkeypatch.setattr(pipeline.compress, "check_fits", lambda options: None)  # no Ray to ask
    # ... nor for the per-actor resources: those of a CPU-only node of 2 CPUs
    from dataclasses import replace

    def resolve(options, uses_gpu):
        auto = pipeline.runner.auto_resources([{"CPU": 2.0}], options, uses_gpu)
        return replace(options, **auto)

    for module in (pipeline.compress, pipeline.restore):
        monkeypatch.setattr(module, "resolve", resolve)
    monkeypatch.setattr(pipeline.compress, "default_actors", lambda options, n: 1)
    # Outside a Ray worker, asking Ray for the node id would start Ray in this process.
    monkeypatch.setattr(pipeline.runner, "_node_id", lambda: None)
