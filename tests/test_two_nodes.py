"""Two Ray nodes on one machine (each in its own network namespace, infra/netns_cluster.py):
a compress job submitted with `ray job submit` spreads over both and accounts for every sample."""

import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import _load_infra, sample, write_shards

pytestmark = [pytest.mark.slow, pytest.mark.system]


def _netns_available() -> bool:
    probe = f"la-probe-{os.getpid()}"
    ok = subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return ok


@pytest.fixture(scope="module")
def two_nodes():
    if shutil.which("ip") is None or not _netns_available():
        if os.environ.get("CI"):
            pytest.fail("network namespaces (ip netns, root) are needed for the two-node test")
        pytest.skip("network namespaces (ip netns, root) are not available here")
    netns = _load_infra("netns_cluster")
    directory = tempfile.mkdtemp(prefix="la2n-")
    info = netns.start(directory)
    try:
        yield netns, info
    finally:
        netns.stop(directory)
        shutil.rmtree(directory, ignore_errors=True)


def test_compress_job_spreads_over_two_nodes(two_nodes, tmp_path):
    netns, info = two_nodes
    src, archive = tmp_path / "src", tmp_path / "arc"
    # Enough work per shard that the second node's actors start before the first node is done.
    write_shards(src, [[sample(f"k{i}-{j}", 100 * i + j) for j in range(40)] for i in range(12)])
    env = {**os.environ, "RAY_AUTH_MODE": "disabled",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = netns.run_in(info["ns"][0], [
        str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", info["dashboard"], "--",
        "python", "-m", "jobs.compress", str(src), str(archive), "--codec", "avif",
        "--actors", "2", "--cpus-per-actor", "2", "--no-size-guard", "-q",  # one actor fits a node
    ], capture_output=True, text=True, env=env, timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    stats = json.loads((archive / "_stats.json").read_text())
    nodes = collections.Counter(s["node"] for s in stats["shards"].values())
    print(f"shards per node: {dict(nodes)}")
    assert len(nodes) == 2, nodes
    rows = pq.read_table(archive / "shards", columns=["shard", "key"]).to_pylist()
    assert sorted((r["shard"], r["key"]) for r in rows) == \
        sorted((f"shard-{i:06d}", f"k{i}-{j}") for i in range(12) for j in range(40))
