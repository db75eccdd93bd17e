"""The realistic decoder's training (`jobs.train run --gan`): only g_s moves, it trains on the
exact latents a decoder sees, it resumes, and the low-rate gain extrapolation leaves every
existing bitstream (q >= 0) bit-identical.

A tiny random mean-scale model (tests/learned_fixtures.py) and LPIPS off: no fetched weights,
a few seconds on one thread.
"""

import csv
import json
import struct

import numpy as np
import pytest
import torch
from conftest import sample, synthetic_image, write_shards
from learned_fixtures import TINY_WEIGHTS, make_tiny_weights, tiny_codec
from safetensors.torch import load

from jobs.train import main as train_main
from jobs.train_gan import CHECKPOINT, OPTIMIZER, FrozenEncoder, checkpoint_metadata
from models.hyperprior import MeanScaleHyperprior
from models.learned import LearnedModel


def _old_interpolate(table: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """The interpolation before low-rate extrapolation, verbatim: the reference for q >= 0."""
    q = quality.clamp(0, table.shape[0] - 1)
    lo = q.floor().long().clamp(max=table.shape[0] - 2)
    t = (q - lo).unsqueeze(1)
    return table[lo] * (1 - t) + table[lo + 1] * t


def test_interpolate_bit_identical_for_nonnegative_quality_and_linear_below():
    torch.manual_seed(0)
    table = torch.randn(7, 144)
    q = torch.cat([torch.linspace(0, 6, 6001), torch.rand(500) * 6,
                   torch.tensor([0.0, -0.0, 1.0, 5.999, 6.0, 6.5, 100.0])])
    new = MeanScaleHyperprior._interpolate(table, q)
    assert torch.equal(new.view(torch.int32), _old_interpolate(table, q).view(torch.int32))
    below = MeanScaleHyperprior._interpolate(table, torch.tensor([-1.0, -0.5]))
    torch.testing.assert_close(below[0], 2 * table[0] - table[1])
    torch.testing.assert_close(below[1], 1.5 * table[0] - 0.5 * table[1])


def test_frozen_encoder_gives_the_codecs_symbols():
    """The latents g_s trains on are the decoder's, bit for bit: same y and z symbols as a real
    bitstream (read back from the decoded content, which is made of them)."""
    codec = tiny_codec(2.5)
    image = synthetic_image(3, 64, 128)
    decoded = codec.decode_batch(codec.encode_batch([image]))[0]
    m = codec.model
    z_count, y_count = m.N * 1 * 2, m.M * 4 * 8
    header = struct.calcsize(">hII")
    z = np.frombuffer(decoded.content[header:header + 4 * z_count], "<i4")
    y = np.frombuffer(decoded.content[header + 4 * z_count:], "<i4")
    assert y.size == y_count
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    y_sym, z_sym, _, _, _ = FrozenEncoder(m).symbols(x, torch.tensor([1.5]))
    assert np.array_equal(z_sym.numpy().reshape(-1), z)
    assert np.array_equal(y_sym.numpy().reshape(-1), y)


@pytest.fixture
def gan_setup(tmp_path, monkeypatch):
    if not TINY_WEIGHTS.exists():
        make_tiny_weights()
    model = LearnedModel.from_file(TINY_WEIGHTS)
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    # fit_gan loads the faithful weights itself; hand it this instance so the test can look at it
    monkeypatch.setattr(LearnedModel, "from_file", classmethod(lambda cls, path: model))
    shards = tmp_path / "shards"
    write_shards(shards, [[sample(f"k{i}", i) for i in range(4)]], prefix="train")
    ckpt = tmp_path / "ckpt"
    args = ["run", "--gan", "--init-codec", str(TINY_WEIGHTS), "--shards", str(shards),
            "--checkpoint-dir", str(ckpt), "--batch", "2", "--crop", "64", "--k-lpips", "0",
            "--no-log-lpips", "--k-adv", "0.1", "--d-channels", "8,16", "--d-warmup", "1",
            "--log-every", "1",
            "--ref-every", "1", "--lr-g", "1e-3", "--threads", "1", "--snapshots"]
    return model, before, ckpt, args


def test_gan_training_moves_only_g_s_and_resumes(gan_setup):
    model, before, ckpt, args = gan_setup
    assert train_main([*args, "--steps", "3"]) == 0

    # The faithful network (g_a, h_a, gains, its own g_s) is untouched.
    for k, v in model.net.state_dict().items():
        assert torch.equal(v, before[k]), k
    raw = (ckpt / CHECKPOINT).read_bytes()
    tensors = load(raw)
    g_s = {k[4:]: v for k, v in tensors.items() if k.startswith("g_s.")}
    assert set(g_s) == set(model.net.g_s.state_dict())
    assert all(v.dtype == torch.float32 for v in g_s.values())
    assert any(not torch.equal(v, before[f"g_s.{k}"]) for k, v in g_s.items())
    assert any(k.startswith("D.") for k in tensors)
    meta = checkpoint_metadata(raw)
    assert meta["step"] == "3" and meta["pairs_with"] == model.sha256
    snapshot = load((ckpt / "snapshots" / "g_s-000003.safetensors").read_bytes())
    assert set(snapshot) == {f"g_s.{k}" for k in g_s}

    # Resume: continues at 3 with both Adams' state, the log never repeats a step.
    assert train_main([*args, "--steps", "5"]) == 0
    rows = list(csv.DictReader(open(ckpt / "loss_log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]
    assert all(r["d_loss"] and r["psnr_faithful"] for r in rows)
    assert [bool(r["g_adv"]) for r in rows] == [False, True, True, True, True]  # D-only warm-up
    assert checkpoint_metadata((ckpt / CHECKPOINT).read_bytes())["step"] == "5"
    moments = load((ckpt / OPTIMIZER).read_bytes())
    # D stepped every step, g_s from step 1 on (one D-only warm-up step)
    assert float(moments["opt_g.0.step"][0]) == 4 and float(moments["opt_d.0.step"][0]) == 5
    assert json.loads(meta["config"])["k_adv"] == 0.1


def test_resume_refuses_a_checkpoint_for_other_weights(gan_setup):
    model, _, ckpt, args = gan_setup
    assert train_main([*args, "--steps", "1"]) == 0
    model.sha256 = "0" * 64
    with pytest.raises(SystemExit, match="pairs with"):
        train_main([*args, "--steps", "2"])


def _export_weights_dir(tmp_path, model, monkeypatch):
    """A weights folder with the tiny model registered as ``tiny-export``, on the search path."""
    import shutil

    from models.weights import EXTRA_DIRS_ENV, register_weights

    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(TINY_WEIGHTS, weights / "tiny.safetensors")
    register_weights("tiny-export", "tiny.safetensors", model.sha256, 248, {"title": "t"}, weights)
    monkeypatch.setenv(EXTRA_DIRS_ENV, str(weights))
    return weights


def test_export_ships_the_checkpoints_g_s_as_a_registered_decoder(gan_setup, tmp_path, monkeypatch):
    from jobs.train_gan import main as gan_main
    from models.realistic import load_realistic
    from models.weights import read_registry

    model, _, ckpt, args = gan_setup
    assert train_main([*args, "--steps", "2"]) == 0
    weights = _export_weights_dir(tmp_path, model, monkeypatch)
    common = ["export", "--checkpoint-dir", str(ckpt), "--codec", "tiny-export",
              "--budget-label", "tests only", "--data", "synthetic", "--hardware", "cpu",
              "--record", "here"]
    assert gan_main(common) == 0

    entry = read_registry(weights)["tiny-export"]["decoders"]["realistic"]
    data = (weights / entry["file"]).read_bytes()
    assert entry["file"] == "tiny-export-realistic.safetensors"
    card = entry["card"]
    assert card["steps"] == 2 and card["crops"] == "2 x 64x64 per step"
    assert "0.1 non-saturating adversarial (conditional patch discriminator 8,16" in card["loss"]
    # the loader accepts it for these weights (sha pinned) and it is the checkpoint's g_s in fp16
    g_s = load_realistic(data, model, entry["sha256"])
    trained = {k[4:]: v for k, v in load((ckpt / CHECKPOINT).read_bytes()).items()
               if k.startswith("g_s.")}
    for k, v in g_s.state_dict().items():
        assert torch.allclose(v, trained[k].half().float()), k
    assert any(not torch.equal(v, model.net.g_s.state_dict()[k]) for k, v in g_s.state_dict().items())

    model.sha256 = "0" * 64  # other faithful weights under the same id: refused
    with pytest.raises(SystemExit, match="pairs with"):
        gan_main(common)


def test_export_of_a_continued_run_counts_the_steps_it_continued_from(gan_setup, tmp_path,
                                                                       monkeypatch):
    """A run started from a shipped decoder (--init-g-s) records that file's sha256 and steps;
    the export's card counts both runs, also when exported again, and a resume keeps the record
    whatever the file is by then. A checkpoint from before that record (session 10's kind)
    falls back to the file of that name in the weights folder, read before it is overwritten;
    a re-export of that checkpoint is recognised and not counted twice."""
    import hashlib

    from safetensors.torch import save

    from jobs.train_gan import main as gan_main
    from jobs.train_gan import trained_steps
    from models.weights import read_registry

    model, _, ckpt, args = gan_setup
    assert train_main([*args, "--steps", "2"]) == 0
    weights = _export_weights_dir(tmp_path, model, monkeypatch)
    common = ["--codec", "tiny-export", "--budget-label", "tests only", "--data", "synthetic",
              "--hardware", "cpu", "--record", "here"]

    def export(directory) -> dict:
        assert gan_main(["export", "--checkpoint-dir", str(directory), *common]) == 0
        return read_registry(weights)["tiny-export"]["decoders"]["realistic"]["card"]

    assert export(ckpt)["steps"] == 2
    shipped = weights / "tiny-export-realistic.safetensors"
    first = shipped.read_bytes()
    first_sha = hashlib.sha256(first).hexdigest()

    ckpt2 = tmp_path / "ckpt2"
    args2 = [a if a != str(ckpt) else str(ckpt2) for a in args]
    assert train_main([*args2, "--steps", "3", "--init-g-s", str(shipped)]) == 0
    config = json.loads(checkpoint_metadata((ckpt2 / CHECKPOINT).read_bytes())["config"])
    assert config["init_g_s_steps"] == 2 and config["init_g_s_sha256"] == first_sha
    # a snapshot or checkpoint used as --init-g-s counts its own run and what that started from
    snapshot = (ckpt2 / "snapshots" / "g_s-000003.safetensors").read_bytes()
    assert trained_steps(checkpoint_metadata(snapshot)) == 3 + 2

    card = export(ckpt2)
    assert card["steps"] == 5
    assert first_sha[:16] in card["continued_from"] and "added 3 steps" in card["continued_from"]
    assert checkpoint_metadata(shipped.read_bytes())["steps"] == "5"
    assert export(ckpt2)["steps"] == 5  # exported again: the record, not the file, counts

    # resume after the init file changed (or is gone): the record is the one the run started with
    shipped.unlink()
    assert train_main([*args2, "--steps", "4", "--init-g-s", str(shipped)]) == 0
    config = json.loads(checkpoint_metadata((ckpt2 / CHECKPOINT).read_bytes())["config"])
    assert config["init_g_s_steps"] == 2 and config["init_g_s_sha256"] == first_sha

    # the same checkpoint without the record (as runs before it): the file named is read once
    raw = (ckpt2 / CHECKPOINT).read_bytes()
    meta = checkpoint_metadata(raw)
    for k in ("init_g_s_steps", "init_g_s_sha256"):
        config.pop(k)
    meta["config"] = json.dumps(config, sort_keys=True)
    (ckpt2 / CHECKPOINT).write_bytes(save(load(raw), metadata=meta))
    shipped.write_bytes(first)  # the decoder that run started from, as the weights folder had it
    card = export(ckpt2)
    assert card["steps"] == 2 + 4 and "read at export" in card["continued_from"]
    card = export(ckpt2)  # the file there is now this checkpoint's own export
    assert card["steps"] == 2 + 4 and "read at export" in card["continued_from"]


@pytest.mark.gpu
def test_gan_training_runs_on_cuda_and_saves_cpu_tensors(gan_setup):
    model, _, ckpt, args = gan_setup
    assert train_main([*args, "--steps", "2", "--device", "cuda"]) == 0
    tensors = load((ckpt / CHECKPOINT).read_bytes())
    assert all(v.device.type == "cpu" for v in tensors.values())
    assert checkpoint_metadata((ckpt / CHECKPOINT).read_bytes())["step"] == "2"


def test_gan_help_lists_its_flags(capsys):
    with pytest.raises(SystemExit) as exc:
        train_main(["run", "--gan", "--help"])
    assert exc.value.code == 0
    assert "--k-lpips" in capsys.readouterr().out


def test_k_mse_controller_keeps_psnr_drop_near_target():
    from jobs.train_gan import _control_k_mse

    config = {"k_mse": 0.002, "max_psnr_drop": 1.25, "k_mse_rate": 0.1}
    assert _control_k_mse(0.002, 2.0, config) > 0.002  # dropped too far: more MSE weight
    assert _control_k_mse(0.002, 0.5, config) < 0.002  # headroom left: less
    assert _control_k_mse(0.002, 1.25, config) == pytest.approx(0.002)
    assert _control_k_mse(0.002 * 50, 100.0, config) == pytest.approx(0.002 * 50)  # bounded
