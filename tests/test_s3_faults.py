"""S3 answering with faults (tests/fault_proxy.py on 127.0.0.1 in front of SeaweedFS): the job
retries and completes with every sample once, or fails with a clear message; never a
half-written shard file that a rerun would trust."""

import pyarrow.parquet as pq
import pytest
import s3fs
from conftest import sample, write_shards
from fault_proxy import FaultProxy

from pipeline.cli import EXIT_OK, main
from pipeline.storage import filesystem

pytestmark = [pytest.mark.s3, pytest.mark.slow, pytest.mark.usefixtures("ray_local")]


def _upload(fs, local_dir, bucket_name):
    for path in sorted(local_dir.glob("*.tar")):
        fs.put_file(str(path), f"{bucket_name}/src/{path.name}")


@pytest.mark.parametrize("seed", [7])
def test_slowdowns_resets_and_delays_are_retried(s3_bucket, tmp_path, seed, capsys):
    bucket, storage = s3_bucket
    src = tmp_path / "src"
    write_shards(src, [[sample(f"k{i}-{j}", 10 * i + j) for j in range(8)] for i in range(4)])
    _upload(s3fs.S3FileSystem(endpoint_url=storage.endpoint_url), src, bucket[len("s3://"):])
    with FaultProxy(storage.endpoint_url, seed, p503=0.15, preset=0.1, pdelay=0.1) as proxy:
        s3fs.S3FileSystem.clear_instance_cache()
        code = main(["compress", f"{bucket}/src", f"{bucket}/arc", "--codec", "jpeg",
                     "--endpoint-url", proxy.endpoint, "-q"])
        counts = dict(proxy.counts)
    print(f"seed {seed}: proxy {counts}")
    assert code == EXIT_OK, capsys.readouterr().err
    assert counts["503"] and counts["reset"]  # faults were really injected
    fs, path = filesystem(f"{bucket}/arc/shards", storage)
    rows = []
    for name in fs.ls(path, detail=False):
        with fs.open(name, "rb") as f:
            rows += pq.read_table(f, columns=["shard", "key"]).to_pylist()
    assert sorted((r["shard"], r["key"]) for r in rows) == \
        sorted((f"shard-{i:06d}", f"k{i}-{j}") for i in range(4) for j in range(8))
    assert main(["verify", f"{bucket}/arc", "--endpoint-url", storage.endpoint_url, "-q"]) == EXIT_OK


def test_an_unreachable_store_fails_with_a_clear_message(s3_bucket, tmp_path, capsys):
    bucket, storage = s3_bucket
    with FaultProxy(storage.endpoint_url, 1, p503=1.0) as proxy:
        s3fs.S3FileSystem.clear_instance_cache()
        code = main(["compress", f"{bucket}/src", f"{bucket}/arc", "--endpoint-url", proxy.endpoint])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != EXIT_OK
    assert any("cannot list the shards of" in line and "SlowDown" in line or "reduce your request rate"
               in line for line in err), err
