"""Encode-time refinement aimed at a realistic decoder (``--effort-for realistic``, issue 6).

The steps run through the realistic g_s with LPIPS-alex in the loss. The stream format does not
change: both decoders still read the archive, content hashes still verify, and only the symbols
the encoder picks differ. The slow test checks, with real bytes and real decodes of the shipped
codec, that the refinement lowers the very objective it aims at, through the decoder it aims at.
"""

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import shared_path, synthetic_image
from learned_fixtures import REALISTIC_CODEC, run_in_process
from PIL import Image

from models import refine
from models.bitstream import unpack
from models.codec import CodecError
from models.hyperprior import MeanScaleHyperprior
from models.registry import DEFAULT_CODEC, get_codec
from pipeline.cli import EXIT_OK, EXIT_REFUSED, main


def test_refining_for_realistic_picks_other_symbols_in_the_same_format(realistic):
    image = synthetic_image(31, 64, 96)
    plain = get_codec(realistic.id, 5.0).encode_batch([image])[0]
    for_faithful = get_codec(realistic.id, 5.0, effort=8).encode_batch([image])[0]
    codec = get_codec(realistic.id, 5.0, effort=8, effort_for="realistic")
    assert codec.refine_metric is not None and codec.refine_synthesis is not None
    for_realistic = codec.encode_batch([image])[0]
    assert len({plain, for_faithful, for_realistic}) == 3, "the aim made no difference"
    assert unpack(for_realistic)[0] == unpack(plain)[0]  # same header: size, padding, codec
    for decoder in ("faithful", "realistic"):  # decoders that never refine read it
        assert get_codec(realistic.id, 5.0, decoder=decoder).decode_batch(
            [for_realistic])[0].image.shape == image.shape
    # No parameter moved, in either g_s.
    fresh = get_codec(realistic.id, 5.0, decoder="realistic")
    for ours, theirs in ((codec.refine_synthesis, fresh.synthesis),
                         (codec.model.net.g_s, fresh.model.net.g_s)):
        for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True):
            assert torch.equal(a, b)


def test_the_steps_run_through_the_realistic_g_s_with_lpips(realistic, monkeypatch):
    """What refine_latent is handed: the realistic decoder's g_s (the full one, also when the
    codec restores at another realism) and LPIPS-alex; for the faithful aim, the faithful g_s
    and no metric. No parameter of any g_s gets a gradient."""
    from models.perceptual import LPIPS

    seen = []
    real_refine = refine.refine_latent

    def spy(g_s, *args, **kwargs):
        seen.append((g_s, args[-1]))
        return real_refine(g_s, *args, **kwargs)

    monkeypatch.setattr(refine, "refine_latent", spy)
    image = synthetic_image(33, 64, 64)
    realistic_g_s = get_codec(realistic.id, 5.0, decoder="realistic").synthesis
    for decoder in ("faithful", "realistic", "realistic:0.5"):
        codec = get_codec(realistic.id, 5.0, decoder=decoder, effort=2, effort_for="realistic")
        codec.encode_batch([image])
        g_s, metric = seen.pop()
        assert isinstance(metric, LPIPS) and metric.net_name == "alex"
        assert g_s is not codec.model.net.g_s
        for ours, theirs in zip(g_s.state_dict().values(), realistic_g_s.state_dict().values(),
                                strict=True):
            assert torch.equal(ours, theirs), decoder  # not the interpolated one at 0.5
        for module in (g_s, codec.model.net.g_s, codec.synthesis):
            assert module is None or all(p.grad is None for p in module.parameters())
    codec = get_codec(realistic.id, 5.0, decoder="realistic", effort=2)  # aimed at faithful
    codec.encode_batch([image])
    assert seen.pop() == (codec.model.net.g_s, None)


def test_effort_defaults_and_the_tiling_cap(realistic, monkeypatch):
    assert get_codec(realistic.id, 3.0, effort_for="realistic").effort == refine.PERCEPTUAL_STEPS
    assert get_codec(realistic.id, 3.0).effort == 0
    # a realistic decoder that is also the restore decoder is loaded once
    for decoder in ("realistic", "realistic:1"):
        codec = get_codec(realistic.id, 3.0, decoder=decoder, effort=2, effort_for="realistic")
        assert codec.refine_synthesis is codec.synthesis
    assert codec.refine_max_pixels == refine.PERCEPTUAL_MAX_PIXELS
    assert get_codec(realistic.id, 3.0, effort=2).refine_max_pixels == refine.MAX_PIXELS
    # above the cap, the refinement goes in tiles (tests/test_tiled_refinement.py): it is handed
    # the cap of the decoder it aims at
    caps = []
    real_refine = refine.refine_latent
    monkeypatch.setattr(refine, "refine_latent",
                        lambda *a, **k: caps.append(k["max_pixels"]) or real_refine(*a, **k))
    image = synthetic_image(32, 64, 64)
    get_codec(realistic.id, 3.0, effort=1, effort_for="realistic").encode_batch([image])
    get_codec(realistic.id, 3.0, effort=1).encode_batch([image])
    assert caps == [refine.PERCEPTUAL_MAX_PIXELS, refine.MAX_PIXELS]


def test_refinement_limits_depend_on_the_workers_device(realistic):
    """A GPU refines in larger passes and has no default size limit; a CPU keeps both caps. The
    compress driver (on a CPU) asks the codec for its GPU workers' limits to record them."""
    perceptual = get_codec(realistic.id, 3.0, effort=2, effort_for="realistic")
    faithful = get_codec(realistic.id, 3.0, effort=2)
    assert perceptual.refine_limits() == perceptual.refine_limits("cpu") == (
        refine.PERCEPTUAL_MAX_PIXELS, refine.MAX_REFINED_PIXELS)
    assert perceptual.refine_limits("cuda") == (refine.GPU_PERCEPTUAL_MAX_PIXELS, math.inf)
    assert refine.GPU_PERCEPTUAL_MAX_PIXELS > refine.PERCEPTUAL_MAX_PIXELS
    assert faithful.refine_limits("cuda") == (refine.MAX_PIXELS, math.inf)  # not measured larger
    # --effort-max-mp, when given, holds on every device
    capped = get_codec(realistic.id, 3.0, effort=2, effort_for="realistic", effort_max_pixels=4e6)
    assert capped.refine_limits("cuda")[1] == capped.refine_limits("cpu")[1] == 4e6
    assert capped.skips_effort(2001, 2000) and not perceptual.skips_effort(2001, 2000)


def test_effort_for_a_decoder_the_codec_lacks_is_refused():
    with pytest.raises(CodecError, match="has no such decoder to refine for; its decoders: faithful"):
        get_codec("test-tiny-msh", 3.0, effort=2, effort_for="realistic")
    with pytest.raises(CodecError, match="no such decoder"):
        get_codec("webp", 50, effort_for="realistic")
    with pytest.raises(CodecError, match="name a decoder"):
        get_codec("test-tiny-msh", 3.0, effort_for="realistic:0.5")
    assert get_codec("webp", 50, effort_for="faithful").id == "webp"  # the default aim


def test_compress_cli_records_the_aim_and_both_decoders_restore(realistic, small_shards, tmp_path,
                                                                 monkeypatch, capsys):
    run_in_process(monkeypatch)
    archive = tmp_path / "arc"
    assert main(["compress", str(small_shards), str(archive), "--codec", REALISTIC_CODEC,
                 "--quality", "3", "--effort", "3", "--effort-for", "realistic",
                 "--no-size-guard", "-q"]) == EXIT_OK
    run = json.loads((archive / "_stats.json").read_text())["run"]
    assert (run["effort"], run["effort_for"]) == (3, "realistic")
    rows = pq.read_table(archive / "shards").to_pylist()
    assert sum(r["status"] == "ok" for r in rows) == 5
    assert main(["verify", str(archive), "-q"]) == EXIT_OK
    for decoder in ("faithful", "realistic"):
        assert main(["restore", str(archive), str(tmp_path / decoder), "--decoder", decoder,
                     "-q"]) == EXIT_OK
    capsys.readouterr()
    assert main(["info", str(archive)]) == EXIT_OK
    assert ("refined latents: --effort 3 for the realistic decoder; images above 0.52 MP "
            "(padded) in tiles; images above 16 MP unrefined (0 in the archive)"
            in capsys.readouterr().out)
    assert run["refine_tile_above_pixels"] == refine.PERCEPTUAL_MAX_PIXELS
    # a rerun with nothing left to do refined nothing, and says nothing about it
    assert main(["compress", str(small_shards), str(archive), "--codec", REALISTIC_CODEC,
                 "--quality", "3", "--effort", "3", "--effort-for", "realistic",
                 "--no-size-guard", "-q"]) == EXIT_OK
    capsys.readouterr()
    assert main(["info", str(archive)]) == EXIT_OK
    assert "refined latents" not in capsys.readouterr().out

    assert main(["compress", str(small_shards), str(tmp_path / "no"), "--codec", "test-tiny-msh",
                 "--effort-for", "realistic", "-q"]) == EXIT_REFUSED
    assert "no such decoder to refine for" in capsys.readouterr().err
    assert main(["compress", str(small_shards), str(tmp_path / "no"), "--codec", "test-tiny-msh",
                 "--effort", "2", "--effort-max-mp", "0", "-q"]) == EXIT_REFUSED
    assert "--effort-max-mp must be above 0" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


@pytest.mark.slow
def test_refinement_for_realistic_lowers_its_objective_through_that_decoder():
    """The shipped default codec and realistic decoder on a Kodak crop at quality -1 (Kodak is
    evaluation data; nothing is trained on it). With real bytes and the realistic decoder's real
    output: bits/pixel + lambda 255^2 MSE + 3 LPIPS-alex is lower for the stream refined for
    that decoder than for the unrefined stream and for the stream refined for the faithful
    decoder with as many steps. Aiming at the wrong g_s, or leaving LPIPS out, fails this."""
    from models.perceptual import LPIPS

    path = shared_path("datasets", "kodak", "kodim23.png")
    image = np.array(Image.open(path).convert("RGB"))[128:384, 256:512]
    lpips = LPIPS("alex")
    restore = get_codec(DEFAULT_CODEC, -1.0, decoder="realistic")
    lmbda = float(MeanScaleHyperprior.lmbda(torch.tensor([-2.0])))
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    costs = {}
    for name, effort, aim in (("plain", 0, "faithful"), ("faithful", 12, "faithful"),
                              ("realistic", 12, "realistic")):
        stream = get_codec(DEFAULT_CODEC, -1.0, effort=effort, effort_for=aim).encode_batch([image])[0]
        out = restore.decode_batch([stream])[0].image
        y = torch.from_numpy(out).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            costs[name] = (8 * len(stream) / image[..., 0].size
                           + lmbda * 255**2 * float(((y - x) ** 2).mean())
                           + refine.PERCEPTUAL_WEIGHT * float(lpips(y, x)))
    assert costs["realistic"] < min(costs["plain"], costs["faithful"]), costs
