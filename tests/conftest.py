"""Fixtures with real parts: a SeaweedFS S3 server, an in-process Ray, WebDataset shards.

Test credentials for the local S3 server are put in the environment before Ray starts, so Ray
workers find them exactly as they would on a cluster: never through arguments.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from jobs.synthetic import synthetic_image  # noqa: F401  (tests import it from here)

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("LATENTARC_SHARED", REPO.parent / "shared"))

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # loopback-only test clusters
# The tiny learned test codec (random weights, tests/golden) is registered in every process,
# Ray workers included, through the registry's extra weights path.
os.environ["LATENTARC_WEIGHTS_PATH"] = str(REPO / "tests" / "golden")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def _load_infra(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "infra" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need a CUDA device: skipped, saying so, where torch sees none (CI)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=f"needs a CUDA device; torch {torch.__version__} sees none")
    for item in gpu_items:
        item.add_marker(skip)


def shared_path(*parts: str) -> Path:
    """A path in ../shared; skip (or fail under LATENTARC_REQUIRE_SHARED=1) when absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        message = f"{path} is missing: this test reads ../shared (the shared data folder)"
        if os.environ.get("LATENTARC_REQUIRE_SHARED") == "1":
            pytest.fail(message + " and LATENTARC_REQUIRE_SHARED=1")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 server on 127.0.0.1 for the whole session; credentials in the environment."""
    local_s3 = _load_infra("local_s3")
    directory = tempfile.mkdtemp(prefix="latentarc-s3-")
    info = local_s3.start(directory)
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ["AWS_ACCESS_KEY_ID"] = info["access_key"]
    os.environ["AWS_SECRET_ACCESS_KEY"] = info["secret_key"]
    try:
        yield info
    finally:
        local_s3.stop_pid(info["pid"])
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """In-process Ray (2 CPUs, no dashboard), started after the S3 credentials are set."""
    import ray

    temp_dir = tempfile.mkdtemp(prefix="lar-")  # short: Ray's socket paths have a length limit
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp_dir,
             _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh bucket URL (s3://name) and the endpoint's StorageOptions."""
    import s3fs

    from pipeline.storage import StorageOptions

    name = "t-" + request.node.name.lower().replace("_", "-")[:40].strip("-") + "-" + os.urandom(3).hex()
    fs = s3fs.S3FileSystem(endpoint_url=s3_server["endpoint"])
    fs.makedirs(name, exist_ok=True)
    return f"s3://{name}", StorageOptions(endpoint_url=s3_server["endpoint"])


def encode_image(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    """A tar of these (name, data) members, in this order, made with tarfile: for names and
    orders that webdataset's TarWriter would not write (repeats, "./", "::", no suffix)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_shards(directory: Path, samples_per_shard: list[list[dict]], prefix: str = "shard") -> list[Path]:
    """Write WebDataset shards with webdataset's own TarWriter; samples are dicts with __key__."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, samples in enumerate(samples_per_shard):
        path = directory / f"{prefix}-{i:06d}.tar"
        with wds.TarWriter(str(path), encoder=False) as writer:
            for sample in samples:
                writer.write(sample)
        paths.append(path)
    return paths


def sample(key: str, seed: int, fmt: str = "png", **extra: bytes) -> dict:
    pil = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}[fmt]
    return {
        "__key__": key,
        fmt: encode_image(synthetic_image(seed), pil),
        "json": json.dumps({"key": key, "seed": seed}).encode(),
        "txt": f"caption of {key}".encode(),
        **extra,
    }


@pytest.fixture
def small_shards(tmp_path) -> Path:
    """Two shards, three samples each, one of them a sample whose image does not decode."""
    src = tmp_path / "src"
    write_shards(src, [
        [sample("a0", 0), sample("a1", 1, "jpg"),
         {"__key__": "bad", "jpg": b"this is not a jpeg", "txt": b"kept as is"}],
        [sample("b0", 2), sample("b1", 3, "webp"), sample("b2", 4)],
    ])
    return src


@pytest.fixture
def realistic(tmp_path):
    """``test-tiny-real`` registered in this process for one test: the tiny learned codec plus a
    stand-in realistic decoder (learned_fixtures.register_tiny_realistic); yields its class."""
    from learned_fixtures import REALISTIC_CODEC, register_tiny_realistic, unregister

    weights = tmp_path / "weights"
    weights.mkdir()
    cls = register_tiny_realistic(weights)
    try:
        yield cls
    finally:
        unregister(REALISTIC_CODEC)


def read_tar(path: Path) -> dict[str, dict[str, bytes]]:
    """key -> {suffix: bytes} of a restored shard, read with webdataset's own reader."""
    out: dict[str, dict[str, bytes]] = {}
    for s in wds.WebDataset(str(path), shardshuffle=False):
        out[s["__key__"]] = {k: v for k, v in s.items() if not k.startswith("__")}
    return out
