"""System test: a Ray head started with `ray start` on 127.0.0.1, jobs sent with `ray job submit`.

The head requires Ray's token auth, as the deployment files in infra/ configure it: `ray job
submit` gets the token from a file named in its environment (RAY_AUTH_TOKEN_PATH), and a
submission without it is refused. The head inherits the S3 test credentials from the
environment; the entrypoints carry only the non-secret endpoint, and the test checks that Ray's
job table holds neither secret.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import s3fs
from conftest import REPO, _load_infra, read_tar

pytestmark = [pytest.mark.slow, pytest.mark.system, pytest.mark.s3]
RAY = str(Path(sys.executable).parent / "ray")


@pytest.fixture(scope="module")
def ray_head(s3_server):
    local_ray = _load_infra("local_ray")
    temp_dir = tempfile.mkdtemp(prefix="larh-")
    info = local_ray.start(temp_dir, auth=True)
    try:
        yield info
    finally:
        local_ray.stop_pid(info["pid"], info["dir"])


def _client_env(head) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}, **head["client_env"]}


def _submit(head, *entrypoint: str) -> subprocess.CompletedProcess:
    env = _client_env(head)
    return subprocess.run(
        [RAY, "job", "submit", "--address", head["dashboard"], "--", *entrypoint],
        capture_output=True, text=True, env=env, timeout=300, cwd=REPO,
    )


def test_compress_and_restore_as_ray_jobs(ray_head, s3_bucket, small_shards, tmp_path, s3_server):
    bucket, storage = s3_bucket
    fs = s3fs.S3FileSystem(endpoint_url=storage.endpoint_url)
    name = bucket[len("s3://"):]
    for path in sorted(small_shards.glob("*.tar")):
        fs.put_file(str(path), f"{name}/src/{path.name}")
    endpoint = ["--endpoint-url", storage.endpoint_url]

    done = _submit(ray_head, "python", "-m", "jobs.compress",
                   f"{bucket}/src/shard-{{000000..000001}}.tar", f"{bucket}/arc", "--codec", "webp",
                   *endpoint)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[compress 2/2 shards]" in done.stdout + done.stderr
    assert "succeeded" in done.stdout + done.stderr

    done = _submit(ray_head, "python", "-m", "jobs.restore", f"{bucket}/arc", f"{bucket}/out", *endpoint)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    for shard in ("shard-000000.tar", "shard-000001.tar"):
        fs.get_file(f"{name}/out/{shard}", str(tmp_path / shard))
        back, source = read_tar(tmp_path / shard), read_tar(small_shards / shard)
        assert sorted(back) == sorted(source)
        for key, members in source.items():
            assert {k: v for k, v in back[key].items() if k not in ("png", "jpg", "webp")} == \
                {k: v for k, v in members.items() if k not in ("png", "jpg", "webp")}

    manifest = json.loads(fs.cat_file(f"{name}/arc/_archive.json"))
    assert manifest["totals"]["samples"] == 6

    # A failing job fails visibly: a refused rerun with another quality exits non-zero.
    refused = _submit(ray_head, "python", "-m", "jobs.compress", f"{bucket}/src", f"{bucket}/arc",
                      "--codec", "webp", "--quality", "10", *endpoint)
    assert refused.returncode != 0

    jobs = subprocess.run([RAY, "job", "list", "--address", ray_head["dashboard"]],
                          capture_output=True, text=True, timeout=60, env=_client_env(ray_head))
    assert "jobs.compress" in jobs.stdout
    token = Path(ray_head["client_env"]["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
    for secret in (s3_server["secret_key"], token):
        assert secret not in jobs.stdout + jobs.stderr

    # Without the token the head refuses the submission (and so anyone who can reach 8265).
    anonymous = subprocess.run(
        [RAY, "job", "submit", "--address", ray_head["dashboard"], "--", "python", "-c", "pass"],
        capture_output=True, text=True, timeout=60,
        env={**_client_env(ray_head), "RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN_PATH": ""})
    assert anonymous.returncode != 0
    assert "Authentication required" in anonymous.stdout + anonymous.stderr


def test_ray_job_stop_keeps_finished_shards_and_a_resubmitted_job_does_the_rest(
        ray_head, s3_bucket, tmp_path_factory, s3_server):
    """`ray job stop` sends SIGTERM and SIGKILLs 3 s later (RAY_JOB_STOP_WAIT_TIME_S): within
    those, compress stops its actors, records the run in _stats.json and says what it kept
    (pipeline/interrupt.py)."""
    import time

    from jobs.fault_trials import trial_input

    bucket, storage = s3_bucket
    fs = s3fs.S3FileSystem(endpoint_url=storage.endpoint_url)
    name = bucket[len("s3://"):]
    src, expected = trial_input(tmp_path_factory.getbasetemp(), 12, 160)
    for path in sorted(src.glob("*.tar")):
        fs.put_file(str(path), f"{name}/src/{path.name}")
    entry = ["python", "-m", "jobs.compress", f"{bucket}/src", f"{bucket}/arc", "--codec", "webp",
             "--actors", "1", "--no-size-guard", "--endpoint-url", storage.endpoint_url]
    env = _client_env(ray_head)
    job_id = f"latentarc-stop-{os.urandom(3).hex()}"
    started = subprocess.run([RAY, "job", "submit", "--address", ray_head["dashboard"],
                              "--submission-id", job_id, "--no-wait", "--", *entry],
                             capture_output=True, text=True, env=env, timeout=120, cwd=REPO)
    assert started.returncode == 0, started.stdout + started.stderr
    deadline = time.monotonic() + 240
    while not fs.glob(f"{name}/arc/shards/*.parquet"):
        fs.invalidate_cache()
        assert time.monotonic() < deadline, "no shard file within 240 s"
        time.sleep(0.2)
    asked = time.monotonic()
    stop = subprocess.run([RAY, "job", "stop", "--address", ray_head["dashboard"], job_id],
                          capture_output=True, text=True, env=env, timeout=120)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    print(f"\nray job stop returned after {time.monotonic() - asked:.1f} s")
    logs = subprocess.run([RAY, "job", "logs", "--address", ray_head["dashboard"], job_id],
                          capture_output=True, text=True, env=env, timeout=60).stdout

    fs.invalidate_cache()
    finished = sorted(p.rsplit("/", 1)[-1].removesuffix(".parquet")
                      for p in fs.glob(f"{name}/arc/shards/*.parquet"))
    assert 1 <= len(finished) < 12, logs[-3000:]
    # The line is printed after _stats.json is written: if it is in the log, the stop path ran
    # to its end before the SIGKILL that follows 3 s after the SIGTERM. ray.kill is
    # asynchronous, so the line may count one shard fewer than there are files.
    said = re.search(r"latentarc compress: stopped by SIGTERM: (\d+) shard\(s\) finished", logs)
    assert said and len(finished) - 1 <= int(said[1]) <= len(finished), logs[-3000:]
    assert "Traceback" not in logs, logs[-3000:]
    stats = json.loads(fs.cat_file(f"{name}/arc/_stats.json"))
    assert stats["run"]["stopped_by"] == "SIGTERM" and len(stats["run"]["done"]) == int(said[1])
    assert not fs.exists(f"{name}/arc/_archive.json")

    done = _submit(ray_head, *entry)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"skipping {len(finished)} finished shard(s)" in done.stdout + done.stderr
    manifest = json.loads(fs.cat_file(f"{name}/arc/_archive.json"))
    assert manifest["totals"]["samples"] == 12 * 160
    assert sorted(e["shard"] for e in manifest["shards"]) == sorted(expected)
