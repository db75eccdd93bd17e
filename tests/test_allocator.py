"""models.allocator keeps a freed large block resident (no munmap, no trim) so a learned codec
does not fault its working set in again for every image, unless LATENTARC_MALLOC=glibc; workers
hand freed pages back after each batch (malloc_trim), which keeps their memory bounded. The
pipeline's workers ask for the setting; library code does not."""

import os
import subprocess
import sys

import pytest
from conftest import REPO

SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from models.allocator import keep_freed_memory

def rss_mib():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) // 1024

tuned = keep_freed_memory()
block = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB, touched
before = rss_mib()
del block
freed = before - rss_mib()
if len(sys.argv) > 2:  # then a worker's end-of-batch call
    from models.allocator import release_freed_memory
    release_freed_memory()
print(tuned, freed, before - rss_mib())
"""


def _freed_mib(env_extra: dict[str, str], release: bool = False) -> tuple[str, int, int]:
    """(tuned?, MiB returned when the block was freed, MiB returned after the release call)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATENTARC_MALLOC")} | env_extra
    argv = [sys.executable, "-c", SCRIPT, str(REPO), *(["release"] if release else [])]
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120,
                         check=True).stdout.split()
    return out[0], int(out[1]), int(out[2])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_blocks_stay_resident_unless_glibc_is_asked_for():
    tuned, returned, _ = _freed_mib({})
    assert tuned == "True" and returned < 8  # the default: the 64 MiB block stayed in the process
    tuned, returned, _ = _freed_mib({"LATENTARC_MALLOC": "keep"})
    assert tuned == "True" and returned < 8
    tuned, returned, _ = _freed_mib({"LATENTARC_MALLOC": "glibc"})
    assert tuned == "False" and returned > 56  # glibc's default: unmapped at once


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc: Linux only")
def test_finding_libc_starts_no_process(monkeypatch):
    """Every worker calls it as it starts. ctypes.util.find_library("c") forks ``ldconfig -p``,
    and the fork carries the worker's title for a moment: the benchmark's RSS sampler once
    counted it as a third worker of two."""
    from models import allocator

    def refuse(*args, **kwargs):
        raise AssertionError(f"a process was started: {args}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(os, "fork", refuse)
    monkeypatch.setattr(allocator, "_libc", None)
    assert allocator._glibc() is not None


def test_an_unknown_setting_is_refused(monkeypatch):
    from models import allocator

    monkeypatch.setattr(allocator, "_done", None)
    monkeypatch.setenv("LATENTARC_MALLOC", "kept")
    with pytest.raises(ValueError, match="keep .the default. or glibc"):
        allocator.keep_freed_memory()
    assert allocator._done is None  # not decided: a corrected setting still applies


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim: Linux only")
def test_the_end_of_batch_release_returns_what_keep_held():
    _, held, released = _freed_mib({}, release=True)
    assert held < 8 and released > 56  # kept through the batch, handed back after it
    _, held, released = _freed_mib({"LATENTARC_MALLOC_TRIM": "off"}, release=True)
    assert held < 8 and released < 8  # the off switch (for measuring) holds


def test_shard_encode_releases_after_each_batch(monkeypatch, tmp_path):
    from conftest import sample, write_shards

    import pipeline.shard_encode as se
    from models.registry import get_codec
    from pipeline.sources import Shard

    calls = []
    monkeypatch.setattr(se, "release_freed_memory", lambda: calls.append(1) or True)
    (src,) = write_shards(tmp_path / "src", [[sample(f"k{i}", i) for i in range(8)]])
    stats = se.encode_shard(Shard(str(src), "shard-000000", src.name), str(tmp_path / "arc"),
                            get_codec("webp"), batching=se.Batching(samples=4, prefetch=True))
    assert stats["compressed"] == 8
    # batches of 1, 2, 4 (the reader's ramp) and the remaining 1: a release after each
    assert len(calls) == 4


def test_workers_ask_for_the_allocator_setting_and_library_code_does_not(monkeypatch, tmp_path):
    """The setting is process-wide, so only processes the pipeline owns (its Ray actors) take
    it; a user's process that loads a codec (Archive.get, ArchiveDataset) keeps its malloc."""
    import pipeline.compress
    import pipeline.restore
    from models.registry import get_codec

    calls = []
    monkeypatch.setattr(pipeline.compress, "keep_freed_memory", lambda: calls.append("compress"))
    monkeypatch.setattr(pipeline.restore, "keep_freed_memory", lambda: calls.append("restore"))
    monkeypatch.setattr("models.allocator.keep_freed_memory", lambda: calls.append("library"))
    get_codec("msh-n96-v2", 4.0)
    assert calls == []
    pipeline.compress.CompressWorker("webp", None, str(tmp_path / "a"), {}, {})
    pipeline.restore.RestoreWorker(str(tmp_path / "a"), str(tmp_path / "d"), None, 90, {}, None,
                                   "webdataset")
    assert calls == ["compress", "restore"]
