"""In-process Ray, as `latentarc compress` starts it, runs on 127.0.0.1 only.

The test suite's own Ray (conftest) sets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER before importing Ray,
which hid that the package did not: `latentarc compress` imported Ray first, and Ray 2.60 then
took the host's address for its node and servers despite ``_node_ip_address="127.0.0.1"``.
So this runs the package's path in a fresh interpreter without that variable, once with Ray
imported before the package starts it (a user's script may do that)."""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow

SCRIPT = """
import sys
if sys.argv[1] == "ray-first":
    import ray  # noqa: F401
from pipeline.runner import RayOptions, run_per_shard

class Echo:
    def __call__(self, task):
        return {"task": task}

results = list(run_per_shard(Echo, (), [{"shard": "a"}], RayOptions(actors=1)))
import ray
print("NODES", sorted({n["NodeManagerAddress"] for n in ray.nodes()}), len(results))
ray.shutdown()
"""


@pytest.mark.parametrize("order", ["package-first", "ray-first"])
def test_in_process_ray_binds_to_loopback(tmp_path, order):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
    temp = tempfile.mkdtemp(prefix="lar-lb-", dir="/tmp")  # short: Ray's socket paths
    env["RAY_TMPDIR"] = temp  # its own temp dir, not /tmp/ray
    env["PYTHONPATH"] = str(REPO)
    try:
        out = subprocess.run([sys.executable, "-c", SCRIPT, order], env=env, capture_output=True,
                             text=True, timeout=240, cwd=tmp_path)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("NODES"))
    assert line == "NODES ['127.0.0.1'] 1", line
