"""The actor pool in ``pipeline.runner``: every shard yields exactly one result, whatever its
worker does (returns, raises, dies once, dies every time, never starts), and the actors are gone
when the run ends so that the next run finds its CPUs free."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from pipeline.runner import TASK_RETRIES, RayOptions, run_per_shard, shard_task, worker_env

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _workers_travel_by_value(ray_local):
    """Ray's workers cannot import this test module: send its classes by value."""
    ray_local.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray_local.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


class Moody:
    """Does to each shard what the shard's name says; counts its attempts in ``log_dir``."""

    def __init__(self, log_dir: str):
        self.log_dir = Path(log_dir)

    @shard_task
    def __call__(self, task):
        name = task["shard"]
        attempts = self.log_dir / f"{name}.attempts"
        with attempts.open("a") as f:
            f.write(f"{os.getpid()}\n")
        tries = len(attempts.read_text().split())
        if name == "raises":
            raise ValueError("member 0001.png is not an image")
        if name == "dies-always" or (name == "dies-once" and tries == 1):
            os._exit(1)  # as a SIGKILL or the OOM killer would end it: no Python clean-up
        return {"shard": name, "tries": tries}


class NeverStarts:
    def __init__(self):
        raise RuntimeError("weights file models/weights/x.safetensors is missing")

    @shard_task
    def __call__(self, task):  # pragma: no cover - never reached
        return {}


class ArrowPool:
    """Reports the Arrow memory pool its process allocates from."""

    @shard_task
    def __call__(self, task):
        import pyarrow as pa

        return {"shard": task["shard"], "pool": pa.default_memory_pool().backend_name,
                "env": os.environ.get("ARROW_DEFAULT_MEMORY_POOL")}


def _wait_for_free_cpus(ray, cpus: float, timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        free = ray.available_resources().get("CPU", 0.0)
        if free >= cpus:
            return free
        time.sleep(0.2)
    return ray.available_resources().get("CPU", 0.0)


def test_every_shard_gets_one_result_whatever_its_worker_does(ray_local, tmp_path):
    names = ["ok-1", "raises", "dies-once", "dies-always", "ok-2", "ok-3"]
    results = list(run_per_shard(Moody, (str(tmp_path),), [{"shard": n} for n in names],
                                 RayOptions(actors=2, num_cpus=0.5)))
    by_shard = {r["shard"]: r for r in results}
    assert sorted(r["shard"] for r in results) == sorted(names)  # one each, none lost or doubled

    for name in ("ok-1", "ok-2", "ok-3"):
        assert by_shard[name]["ok"] and by_shard[name]["tries"] == 1
    assert by_shard["dies-once"]["ok"] and by_shard["dies-once"]["tries"] == 2  # retried on a new actor
    assert by_shard["raises"] == {**by_shard["raises"], "ok": False,
                                  "error": "shard raises: ValueError: member 0001.png is not an image"}
    died = by_shard["dies-always"]
    assert not died["ok"]
    assert died["error"].startswith(f"shard dies-always: its worker died {TASK_RETRIES + 1} times on it")
    assert len((tmp_path / "dies-always.attempts").read_text().split()) == TASK_RETRIES + 1

    pids = {(tmp_path / f"{n}.attempts").read_text().split()[-1] for n in names}
    assert len(pids) > 2  # the killed actors were replaced by new processes
    assert _wait_for_free_cpus(ray_local, 2.0) == 2.0  # the pool's actors are gone


class SlowStart:
    """Loads for a while, as a codec does: the progress line's clock starts after that."""

    def __init__(self):
        time.sleep(2)

    @shard_task
    def __call__(self, task):
        return {"shard": task["shard"], "at": time.time()}


def test_on_start_is_called_once_when_the_first_actor_is_ready(ray_local):
    calls: list[float] = []
    began = time.time()
    results = list(run_per_shard(SlowStart, (), [{"shard": n} for n in "abc"],
                                 RayOptions(actors=2, num_cpus=0.5),
                                 on_start=lambda: calls.append(time.time())))
    assert len(calls) == 1 and all(r["ok"] for r in results)
    assert began + 2 <= calls[0] <= min(r["at"] for r in results) + 1


def test_a_worker_that_cannot_start_fails_each_shard_with_its_cause(ray_local):
    starts: list[int] = []
    results = list(run_per_shard(NeverStarts, (), [{"shard": "a"}, {"shard": "b"}],
                                 RayOptions(actors=2, num_cpus=0.5),
                                 on_start=lambda: starts.append(1)))
    assert starts == []
    assert sorted(r["shard"] for r in results) == ["a", "b"]
    for r in results:
        assert not r["ok"]
        assert r["error"].startswith(f"shard {r['shard']}: no worker could start")
        assert r["error"].endswith("RuntimeError: weights file models/weights/x.safetensors is missing")
    assert _wait_for_free_cpus(ray_local, 2.0) == 2.0


def test_actors_the_cluster_cannot_place_hold_no_shard(ray_local, tmp_path):
    """Four actors of 1.5 CPUs on 2 CPUs: one starts, three wait for room that never comes.
    The started one must do every shard instead of shards waiting on the unplaced actors."""
    names = [f"ok-{i}" for i in range(5)]
    results = list(run_per_shard(Moody, (str(tmp_path),), [{"shard": n} for n in names],
                                 RayOptions(actors=4, num_cpus=1.5)))
    assert sorted(r["shard"] for r in results) == names
    assert all(r["ok"] for r in results)
    assert len({r["pid"] for r in results}) == 1
    assert _wait_for_free_cpus(ray_local, 2.0) == 2.0


def test_workers_allocate_arrow_through_malloc_unless_the_driver_names_a_pool(ray_local, monkeypatch):
    """The trims after each batch reach only what glibc's malloc holds (pipeline.runner.worker_env);
    the pool must be chosen in the environment the worker starts with."""
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    (result,) = run_per_shard(ArrowPool, (), [{"shard": "a"}], RayOptions(actors=1, num_cpus=0.5))
    assert result["ok"] and (result["pool"], result["env"]) == ("system", "system")
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
    assert worker_env() == {}  # the user's choice: the actors get no pool of ours
