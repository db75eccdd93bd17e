"""The progress line: rates and the ETA count from the first ready actor (pipeline.runner's
on_start), not from Ray's start-up; small volumes are readable."""

import io

import pytest

import pipeline.progress
from pipeline.progress import Progress


def test_rates_and_eta_count_from_start_and_small_volumes_read_in_kb(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(pipeline.progress.time, "monotonic", lambda: now[0])
    out = io.StringIO()
    log = Progress("compress", 4, out=out)
    now[0] = 120.0  # Ray's start-up and the codec's loading: 20 s
    log.start()
    now[0] = 122.0  # the first shard took 2 s of work
    log.update("s0", images=4, bytes_in=40_000, bytes_out=5_000)
    line = out.getvalue()
    assert line.startswith("[compress 1/4 shards] 4 images, 2.0 img/s, 40.0 kB in, 5.0 kB out, "
                           "ratio 8.0x, ETA 0:00:06 | s0"), line  # not 0:01:06
    now[0] = 124.0
    log.update("s1", images=4, bytes_in=4_000_000, bytes_out=500_000)
    assert "8 images, 2.0 img/s, 4.0 MB in, 0.5 MB out" in out.getvalue().splitlines()[1]


@pytest.mark.parametrize("n, text", [(0, "0.0 kB"), (99_999, "100.0 kB"), (100_000, "0.1 MB")])
def test_volumes(n, text):
    assert pipeline.progress._mb(n) == text


def test_a_failed_shard_is_named_once():
    out = io.StringIO()
    log = Progress("compress", 2, out=out)
    log.update("s0", error="shard s0: tar is damaged (key k)")
    log.update("s1", error="no result returned by the worker")
    first, second = out.getvalue().splitlines()
    assert first.endswith("| FAILED s0: tar is damaged (key k)"), first
    assert second.endswith("| FAILED s1: no result returned by the worker"), second
