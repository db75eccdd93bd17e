"""Actors give torch the CPUs they reserved, rounded up (Ray alone rounds down)."""

import os

from pipeline.runner import THREADS_ENV, use_reserved_cpus


def test_outside_ray_nothing_changes(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert use_reserved_cpus() is None


def test_ray_workers_round_their_reservation_up(ray_local):
    import ray

    @ray.remote
    def probe():
        import torch

        from pipeline.runner import use_reserved_cpus

        n = use_reserved_cpus()
        return n, torch.get_num_threads(), os.environ["OMP_NUM_THREADS"]

    # Ray's own setting for 1.5 CPUs would be OMP_NUM_THREADS=1.
    assert ray.get(probe.options(num_cpus=1.5).remote()) == (2, 2, "2")
    assert ray.get(probe.options(num_cpus=0.5).remote()) == (1, 1, "1")


def test_the_environment_variable_wins(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv(THREADS_ENV, "3")
    monkeypatch.setenv("OMP_NUM_THREADS", str(before))
    try:
        assert use_reserved_cpus() == 3
        assert torch.get_num_threads() == 3 and os.environ["OMP_NUM_THREADS"] == "3"
    finally:
        torch.set_num_threads(before)
