"""The S3 server stopped and restarted in the middle of a compress run, and a failure at
multipart-upload completion (the two S3 faults that tests/test_s3_faults.py does not cover).

Expected either way: the run completes (the S3 client retries with backoff) or fails with a
clear message once its retry budget is spent; a rerun of the same command then completes; the
archive holds every sample exactly once and every row decodes (``verify``); and no
half-written or temporary shard file is ever visible, let alone trusted by the rerun.

Real parts only: SeaweedFS (its own instance here, so that restarting it leaves the session's
server alone), the in-process Ray of the fixtures, tests/fault_proxy.py on 127.0.0.1.
"""

from __future__ import annotations

import glob
import os
import tempfile
import threading
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import s3fs
from conftest import _load_infra, sample, write_shards
from fault_proxy import FaultProxy

from pipeline.archive_format import validate_shard_file
from pipeline.cli import EXIT_INCOMPLETE, EXIT_OK, main
from pipeline.compress import compress
from pipeline.storage import StorageOptions
from pipeline.verify import verify

pytestmark = [pytest.mark.s3, pytest.mark.slow, pytest.mark.usefixtures("ray_local")]


@pytest.fixture
def own_s3(s3_server, tmp_path_factory):
    """A second SeaweedFS with the session's credentials (which the Ray workers already hold in
    their environment), stopped and restarted by the test; stopped by PID at the end."""
    local_s3 = _load_infra("local_s3")
    info = local_s3.start(str(tmp_path_factory.mktemp("s3-restart")),
                          access_key=s3_server["access_key"], secret_key=s3_server["secret_key"])
    try:
        yield local_s3, info
    finally:
        local_s3.stop_pid(info["pid"])  # the PID of the latest (re)start: info is updated in place


def _client(endpoint: str) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)


def _upload(fs: s3fs.S3FileSystem, local_dir, bucket_name: str) -> None:
    for path in sorted(local_dir.glob("*.tar")):
        fs.put_file(str(path), f"{bucket_name}/src/{path.name}")


def _shard_files(fs: s3fs.S3FileSystem, bucket_name: str) -> list[str]:
    try:
        return sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{bucket_name}/arc/shards", refresh=True))
    except FileNotFoundError:
        return []


def _visible_shard_files(fs, bucket_name: str, archive: str, storage) -> tuple[list[str], list[str]]:
    """(complete shard files, incomplete ones) under shards/; no temp names at all."""
    names = _shard_files(fs, bucket_name)
    assert not [n for n in names if ".tmp-" in n or not n.endswith(".parquet")], names
    complete, incomplete = [], []
    for name in (n[: -len(".parquet")] for n in names):
        found, reason = validate_shard_file(archive, name, storage)
        (complete if found is not None else incomplete).append(name)
        if found is None:
            print(f"visible but incomplete after the fault: {name}: {reason}")
    return complete, incomplete


def _check_rerun_and_archive(archive: str, sources: str, storage, codec: str,
                             visible: tuple[list[str], list[str]],
                             expected: list[tuple[str, str]]) -> None:
    """The rerun trusts exactly the complete files (an incomplete one, which an object store
    should never show, is redone), completes, and every sample is there exactly once."""
    complete, incomplete = visible
    s3fs.S3FileSystem.clear_instance_cache()
    report = compress([sources], archive, codec, storage=storage, progress=False)
    assert report.ok, report.failed
    assert sorted(report.skipped) == sorted(complete)
    assert sorted(report.redone) == sorted(incomplete)
    fs = _client(storage.endpoint_url)
    rows = []
    for name in fs.ls(archive[len("s3://"):] + "/shards", refresh=True):
        with fs.open(name, "rb") as f:
            rows += pq.read_table(f, columns=["shard", "key"]).to_pylist()
    assert sorted((r["shard"], r["key"]) for r in rows) == sorted(expected)
    assert verify(archive, storage=storage, progress=False).ok


def _clear_failure(code: int, err: str, n_shards: int) -> None:
    """A failed run says so in a few plain lines: which shard, what happened, what to do."""
    assert code == EXIT_INCOMPLETE, err
    lines = [line for line in err.splitlines() if "FAILED" in line or "latentarc" in line]
    assert lines, err
    assert any(
        f"of {n_shards} shards not compressed; rerun the same command" in line
        or (line.startswith("latentarc compress: error: ")
            and line.endswith("rerun the same command to do the rest")) for line in lines
    ), err
    for line in lines:
        assert "Traceback" not in line and len(line) < 1000, line


# --- the S3 server stopped and restarted mid-run ------------------------------------------------

SHARDS, PER_SHARD = 6, 20


@pytest.mark.timeout(480)
@pytest.mark.parametrize(("hard", "down"), [(True, 1.0), (False, 20.0)],
                         ids=["sigkill-down-1s", "sigterm-down-20s"])
def test_s3_server_restarted_mid_run(own_s3, tmp_path, capsys, hard, down):
    """SIGKILL (a crash) or SIGTERM the server once the first shard file is visible, keep it
    down ``down`` seconds, start it again on the same port and data; then rerun."""
    local_s3, info = own_s3
    storage = StorageOptions(endpoint_url=info["endpoint"])
    fs = _client(info["endpoint"])
    bucket_name = "restart-" + os.urandom(3).hex()
    fs.makedirs(bucket_name)
    src = tmp_path / "src"
    write_shards(src, [[sample(f"k{i}-{j}", 10 * i + j) for j in range(PER_SHARD)]
                       for i in range(SHARDS)])
    _upload(fs, src, bucket_name)
    archive, sources = f"s3://{bucket_name}/arc", f"s3://{bucket_name}/src"

    event: dict = {}

    def restart_when_writing() -> None:
        watcher = _client(info["endpoint"])
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not _shard_files(watcher, bucket_name):
            time.sleep(0.1)
        event["visible_at_stop"] = len(_shard_files(watcher, bucket_name))
        started = time.monotonic()
        local_s3.restart(info, down=down, hard=hard)
        event["outage_s"] = round(time.monotonic() - started, 1)

    restarter = threading.Thread(target=restart_when_writing)
    started = time.monotonic()
    restarter.start()
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        code = main(["compress", sources, archive, "--codec", "avif",
                     "--endpoint-url", info["endpoint"]])
    finally:
        restarter.join()
    seconds = time.monotonic() - started
    out, err = capsys.readouterr()
    with capsys.disabled():
        print(f"\nrestart ({'SIGKILL' if hard else 'SIGTERM'}, down {down} s): {event}, "
              f"exit {code} after {seconds:.1f} s\n{err}")
    assert "outage_s" in event, "the server was never restarted: the trial tested nothing"
    assert event["visible_at_stop"] < SHARDS, "the run was over before the server stopped"
    if code != EXIT_OK:
        _clear_failure(code, err, SHARDS)
    assert info["secret_key"] not in out + err

    visible = _visible_shard_files(_client(info["endpoint"]), bucket_name, archive, storage)
    assert not visible[1], "the store showed a half-written object (the rerun redoes it)"
    _check_rerun_and_archive(archive, sources, storage, "avif", visible,
                             [(f"shard-{i:06d}", f"k{i}-{j}") for i in range(SHARDS)
                              for j in range(PER_SHARD)])


# --- a failure at multipart-upload completion ---------------------------------------------------

# s3fs's put_file (what storage.write_atomic uses for object stores) switches from one PUT to a
# multipart upload at twice its 50 MiB chunk size: this shard file is one 101 MiB member.
BIG = 101 << 20


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("fault", "times"), [("503", 2), ("reset", 1 << 30), ("reset_after", 1)],
                         ids=["503-twice", "reset-always", "completed-then-reset"])
def test_failure_at_multipart_completion(s3_server, tmp_path, capsys, fault, times):
    """``503``: retried, completes. ``reset`` on every completion: the shard fails with a clear
    message, nothing is visible, the rerun (no faults) completes. ``reset_after``: the upload
    completes upstream but the client never hears of it; the retry finds it done."""
    storage = StorageOptions(endpoint_url=s3_server["endpoint"])
    bucket_name = "mpu-" + os.urandom(3).hex()
    bucket = f"s3://{bucket_name}"
    src = tmp_path / "src"
    big = np.random.default_rng(5).bytes(BIG)
    write_shards(src, [
        [sample("img-0", 0), {"__key__": "big", "bin": big, "txt": b"a big member"}],
        [sample(f"s1-{j}", 20 + j) for j in range(4)],
        [sample(f"s2-{j}", 30 + j) for j in range(4)],
    ])
    fs = _client(storage.endpoint_url)
    fs.makedirs(bucket_name)
    _upload(fs, src, bucket_name)
    del big
    archive, sources = f"{bucket}/arc", f"{bucket}/src"
    parts_before = set(glob.glob(os.path.join(tempfile.gettempdir(), "latentarc-*.part")))

    started = time.monotonic()
    with FaultProxy(storage.endpoint_url, 0, on_complete=fault, complete_faults=times) as proxy:
        s3fs.S3FileSystem.clear_instance_cache()
        code = main(["compress", sources, archive, "--codec", "jpeg",
                     "--endpoint-url", proxy.endpoint])
        counts = dict(proxy.counts)
    seconds = time.monotonic() - started
    err = capsys.readouterr().err
    with capsys.disabled():
        print(f"\nmultipart completion fault {fault} x{min(times, counts['complete'])}: proxy "
              f"{counts}, exit {code} after {seconds:.1f} s\n{err}")
    assert counts["create_mpu"] >= 1 and counts["part"] >= 3, "no multipart upload happened"
    assert counts["complete_faulted"] >= 1, "no completion was faulted: the trial tested nothing"
    if fault == "reset":
        _clear_failure(code, err, 3)
        assert "FAILED shard-000000: " in err
        assert all(f"FAILED shard-00000{i}" not in err for i in (1, 2))
    else:
        assert code == EXIT_OK, err
    # The failed attempt's local temp file was removed with it.
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "latentarc-*.part"))) <= parts_before

    visible = _visible_shard_files(fs, bucket_name, archive, storage)
    assert not visible[1], "the store showed a half-written object (the rerun redoes it)"
    assert ("shard-000000" in visible[0]) == (fault != "reset")
    _check_rerun_and_archive(
        archive, sources, storage, "jpeg", visible,
        [("shard-000000", "img-0"), ("shard-000000", "big")]
        + [(f"shard-00000{i}", f"s{i}-{j}") for i in (1, 2) for j in range(4)])
