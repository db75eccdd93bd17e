"""Widened realistic decoders (models.synthesis): residual blocks after layers of the faithful
g_s. Untrained they are the faithful decoder exactly; trained they ship in the realistic-decoder
file format, load back, interpolate with the realism knob, and tile with a halo that covers
their larger receptive field. Tiny random model, CPU, a few seconds."""

import json

import numpy as np
import pytest
import torch
from conftest import sample, synthetic_image, write_shards
from learned_fixtures import TINY_WEIGHTS, TinyCodec, make_tiny_realistic, make_tiny_weights
from safetensors.torch import load, save

import models.tiling as tiling
from models.codec import CodecError
from models.learned import LearnedModel
from models.realistic import export_realistic, interpolate, load_realistic, read_metadata
from models.synthesis import RefinedSynthesis, parse_spec
from models.tiling import HALO_LATENTS, tiled

SPEC = "1:2:8,3:1:12"


@pytest.fixture(scope="module")
def model() -> LearnedModel:
    if not TINY_WEIGHTS.exists():
        make_tiny_weights()
    return LearnedModel.from_file(TINY_WEIGHTS)


def _trained(model: LearnedModel, seed: int = 5) -> RefinedSynthesis:
    """A widened g_s whose blocks are no longer the identity (stands in for training)."""
    g_s = RefinedSynthesis(model.net.g_s, SPEC)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in g_s.named_parameters():
            if name.startswith("refine."):
                p.copy_(0.2 * torch.randn(p.shape, generator=generator))
    return g_s.eval()


def _latent(model: LearnedModel, h: int = 6, w: int = 5) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(1, model.M, h, w)


def test_untrained_blocks_are_the_faithful_decoder(model):
    g_s = RefinedSynthesis(model.net.g_s, SPEC).eval()
    y = _latent(model)
    with torch.inference_mode():
        assert torch.equal(g_s(y), model.net.g_s(y))
    # the base layers keep the faithful keys; the blocks are extra, and not shared with it
    keys = set(g_s.state_dict())
    assert set(model.net.g_s.state_dict()) <= keys
    assert {k.split(".")[1] for k in keys - set(model.net.g_s.state_dict())} == {"1", "3"}
    assert all(a is not b for a, b in zip(g_s.parameters(), model.net.g_s.parameters(), strict=False))
    # receptive field: 2 blocks at 1/8 resolution (+2 latents), 1 at 1/4 (+0.5), rounded up
    assert g_s.halo_latents == HALO_LATENTS + 3


@pytest.mark.parametrize("spec, message", [("1:2", "LAYER:BLOCKS:WIDTH"), ("1:0:8", "blocks"),
                                           ("1:1:8,1:2:8", "twice"), ("9:1:8", "layers")])
def test_bad_specs_are_refused(model, spec, message):
    with pytest.raises(ValueError, match=message):
        RefinedSynthesis(model.net.g_s, parse_spec(spec))


def test_tiles_with_its_halo_equal_the_whole_pass(model):
    g_s = _trained(model)
    y = _latent(model, 7, 5)
    with torch.inference_mode():
        whole = g_s(y)
        assert not torch.allclose(whole, model.net.g_s(y), atol=1e-3)  # the blocks do something
        for core in (1, 2, 3):
            parts = tiled(g_s, y, 1, 16, core=core, halo=g_s.halo_latents)
            assert torch.allclose(parts, whole, atol=1e-4, rtol=0), core


def test_file_round_trip_and_realism_knob(model, tmp_path):
    g_s = _trained(model)
    path = tmp_path / "wide.safetensors"
    export_realistic(g_s, model.sha256, path, torch.float16,
                     {"architecture": model.net.architecture})
    data = path.read_bytes()
    assert read_metadata(data)["refine"] == SPEC
    loaded = load_realistic(data, model)
    assert isinstance(loaded, RefinedSynthesis) and loaded.spec == g_s.spec
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, g_s.state_dict()[k].half().float()), k

    y = _latent(model)
    with torch.inference_mode():
        at0 = interpolate(model.net.g_s, loaded, 0.0)(y)
        at1 = interpolate(model.net.g_s, loaded, 1.0)(y)
        half = interpolate(model.net.g_s, loaded, 0.5)(y)
        assert torch.allclose(at0, model.net.g_s(y), atol=1e-5)  # realism 0: the faithful decoder
        assert torch.allclose(at1, loaded(y), atol=1e-5)
        assert (half - at0).abs().mean() < (at1 - at0).abs().mean()

    # a file whose spec does not fit this g_s is refused with the decoder named
    bad = tmp_path / "bad.safetensors"
    export_realistic(g_s, model.sha256, bad, torch.float16, {"refine": "1:2:8,3:1:12"})
    tensors = load(bad.read_bytes())
    meta = {**read_metadata(bad.read_bytes()), "refine": "1:2:8"}
    bad.write_bytes(save(tensors, metadata=meta))
    with pytest.raises(CodecError, match="does not fit"):
        load_realistic(bad.read_bytes(), model, where="decoder X")


class _TwoDecoders(TinyCodec):
    decoders = ("faithful", "realistic")


def test_a_codec_decodes_with_it_whole_and_tiled(model, monkeypatch):
    images = [synthetic_image(3, 150, 230)]
    faithful = TinyCodec(4.0, model=model)
    real = _TwoDecoders(4.0, model=model, decoder="realistic", synthesis=_trained(model))
    stream = faithful.encode_batch(images)[0]
    whole = real.decode_batch([stream])[0]
    plain = faithful.decode_batch([stream])[0]
    assert whole.content_hash == plain.content_hash  # same symbols
    assert np.abs(whole.image.astype(int) - plain.image.astype(int)).mean() > 1
    monkeypatch.setattr(tiling, "TILE_ABOVE_PIXELS", 0)
    monkeypatch.setattr(tiling, "TILE_LATENTS", 2)
    from_tiles = real.decode_batch([stream])[0]
    assert np.abs(from_tiles.image.astype(int) - whole.image.astype(int)).max() <= 1


def test_gan_training_widens_g_s_from_a_plain_decoder(tmp_path, monkeypatch):
    """--refine trains blocks on top of g_s; --init-g-s starts g_s from a plain realistic file,
    the blocks from the identity; export writes a file the loader rebuilds."""
    from jobs.train import main as train_main
    from jobs.train_gan import CHECKPOINT, checkpoint_metadata, make_synthesis

    if not TINY_WEIGHTS.exists():
        make_tiny_weights()
    model = LearnedModel.from_file(TINY_WEIGHTS)
    monkeypatch.setattr(LearnedModel, "from_file", classmethod(lambda cls, path: model))
    plain = tmp_path / "plain.safetensors"
    make_tiny_realistic(plain)
    shards = tmp_path / "shards"
    write_shards(shards, [[sample(f"k{i}", i) for i in range(4)]], prefix="train")
    ckpt = tmp_path / "ckpt"
    assert train_main(["run", "--gan", "--init-codec", str(TINY_WEIGHTS), "--shards", str(shards),
                       "--checkpoint-dir", str(ckpt), "--batch", "2", "--crop", "64",
                       "--k-lpips", "0", "--no-log-lpips", "--k-adv", "0.1", "--d-channels", "8,16",
                       "--d-warmup", "0", "--log-every", "1", "--lr-g", "1e-3", "--threads", "1",
                       "--refine", SPEC, "--lr-refine-scale", "4", "--init-g-s", str(plain),
                       "--steps", "2"]) == 0
    raw = (ckpt / CHECKPOINT).read_bytes()
    config = json.loads(checkpoint_metadata(raw)["config"])
    assert config["refine"] == SPEC and config["init_g_s"] == str(plain)
    trained = {k[4:]: v for k, v in load(raw).items() if k.startswith("g_s.")}
    start = {k[4:]: v.float() for k, v in load(plain.read_bytes()).items()}
    # the blocks moved off zero, and the base started from the plain file, not the faithful g_s
    assert any(v.abs().sum() > 0 for k, v in trained.items() if k.startswith("refine.") and "conv2" in k)
    base = [k for k in trained if not k.startswith("refine.")]
    gap_plain = sum(float((trained[k] - start[k]).abs().sum()) for k in base)
    gap_faithful = sum(float((trained[k] - model.net.g_s.state_dict()[k]).abs().sum()) for k in base)
    assert gap_plain < gap_faithful
    g_s = make_synthesis(model, config)
    g_s.load_state_dict(trained)  # strict: eval/export rebuild the same module from the config
    assert isinstance(g_s, RefinedSynthesis) and g_s.spec == parse_spec(SPEC)
