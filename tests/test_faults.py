"""Faults during compress: a codec actor SIGKILLed mid-run at a random (seeded, logged) moment.

Ray Data restarts the actor and retries its shard; per-shard output is atomic, so the archive
ends with every sample exactly once. (More trials and the other faults: the reliability issue.)
"""

import os
import random
import signal
import subprocess
import threading
import time

import pyarrow.parquet as pq
import pytest
from conftest import sample, write_shards

from pipeline.compress import compress
from pipeline.shard_encode import Guard
from pipeline.verify import verify

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]


def _kill_a_codec_actor(shards_dir, delay: float, killed: list[int]) -> None:
    """Once a shard is being written (its temp file exists), wait ``delay`` and SIGKILL an actor."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pids = subprocess.run(["pgrep", "-f", r"MapBatches\(CompressWorker\)"],
                              capture_output=True, text=True).stdout.split()
        writing = shards_dir.exists() and any(shards_dir.glob(".*.tmp-*"))
        if pids and writing:
            time.sleep(delay)
            try:
                os.kill(int(pids[0]), signal.SIGKILL)
                killed.append(int(pids[0]))
            except ProcessLookupError:
                continue
            return
        time.sleep(0.1)


@pytest.mark.parametrize("seed", [1])
def test_killed_actor_loses_and_duplicates_nothing(tmp_path, seed):
    rng = random.Random(seed)
    delay = rng.uniform(0.0, 0.5)
    print(f"seed {seed}: SIGKILL a codec actor {delay:.2f} s into a shard write")
    src = tmp_path / "src"
    write_shards(src, [[sample(f"k{i}-{j}", 10 * i + j) for j in range(30)] for i in range(6)])
    killed: list[int] = []
    killer = threading.Thread(target=_kill_a_codec_actor,
                              args=(tmp_path / "arc" / "shards", delay, killed))
    killer.start()
    report = compress([str(src)], str(tmp_path / "arc"), "avif", progress=False, guard=Guard(size=False))
    killer.join()
    assert killed, "no actor was killed: the trial tested nothing"
    assert report.ok and len(report.done) == 6
    # A killed attempt's half-written file (if the killed actor was mid-write) is counted in
    # report.interrupted and removed: none is left behind either way.
    assert not list((tmp_path / "arc" / "shards").glob(".*tmp-*"))
    rows = pq.read_table(tmp_path / "arc" / "shards", columns=["shard", "key"]).to_pylist()
    pairs = [(r["shard"], r["key"]) for r in rows]
    assert sorted(pairs) == sorted((f"shard-{i:06d}", f"k{i}-{j}") for i in range(6) for j in range(30))
    assert verify(str(tmp_path / "arc"), progress=False).ok


def test_stopped_run_resumes_and_redoes_only_unfinished_shards(tmp_path):
    """The driver (with its in-process Ray) killed once a shard is written; a rerun finishes."""
    import sys

    src = tmp_path / "src"
    write_shards(src, [[sample(f"k{i}-{j}", 10 * i + j) for j in range(30)] for i in range(6)])
    archive = tmp_path / "arc"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.compress", str(src), str(archive), "--codec", "avif",
         "--actors", "1", "--no-size-guard", "-q"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        shards_dir = archive / "shards"
        if shards_dir.exists() and any(shards_dir.glob("*.parquet")):
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group we started, and nothing else
    proc.wait()
    finished = sorted(p.stem for p in (archive / "shards").glob("*.parquet"))
    assert 1 <= len(finished) < 6, finished
    assert not (archive / "_archive.json").exists()

    report = compress([str(src)], str(archive), "avif", progress=False, guard=Guard(size=False))
    assert report.ok
    assert sorted(report.skipped) == finished
    # An attempt in progress when the driver died (if any) was counted and its file removed.
    assert not list((archive / "shards").glob(".*tmp-*"))
    assert sorted(report.done) == sorted(set(f"shard-{i:06d}" for i in range(6)) - set(finished))
    rows = pq.read_table(archive / "shards", columns=["shard", "key"]).to_pylist()
    assert len(rows) == len({(r["shard"], r["key"]) for r in rows}) == 180
    assert verify(str(archive), progress=False).ok
