"""Object-store writes: the local temp file of a SIGKILLed writer is removed by the next write.

``memory://`` stands in for an object store: it is not local, so ``write_atomic`` takes the
same temp-file-then-``put_file`` path as s3://. Every temp file lives in this test's own temp
directory (``TMPDIR``), and only processes this test started are signalled.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import tempfile

import fsspec

from pipeline.storage import remove_dead_writers_parts, write_atomic

WRITER = """
import sys, time
from pipeline.storage import write_atomic

def write(f):
    f.write(b"x" * 1000)
    f.flush()
    print("writing", flush=True)
    time.sleep(120)  # killed here, mid-write

write_atomic("memory://parts/" + sys.argv[1], write)
"""


def _writer(tmp_path, name: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, name], stdout=subprocess.PIPE,
                            env={**os.environ, "TMPDIR": str(tmp_path)}, text=True)
    assert proc.stdout.readline().strip() == "writing"
    return proc


def _parts(tmp_path) -> dict[int, str]:
    out = {}
    for name in os.listdir(tmp_path):
        if name.startswith("latentarc-") and name.endswith(".part") and name.split("-")[1].isdigit():
            out[int(name.split("-")[1])] = name
    return out


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_killed_writers_part_file_is_removed_by_the_next_write(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead, live = _writer(tmp_path, "dead.bin"), _writer(tmp_path, "live.bin")
    try:
        os.kill(dead.pid, signal.SIGKILL)
        dead.wait()
        parts = _parts(tmp_path)
        assert set(parts) == {dead.pid, live.pid}, "the killed writer's temp file is left behind"
        # Files this rule must not touch: an older name without a PID (owner unknown), and a
        # dead PID's file whose lock is held (a live writer in another PID namespace).
        (tmp_path / "latentarc-abc123.part").write_bytes(b"old")
        foreign = tmp_path / f"latentarc-{_dead_pid()}-ns.part"
        foreign.write_bytes(b"elsewhere")
        with open(foreign, "rb") as held:
            fcntl.flock(held.fileno(), fcntl.LOCK_EX)
            assert write_atomic("memory://parts/next.bin", lambda f: f.write(b"ok")) == 2
            assert foreign.exists()
        assert fsspec.filesystem("memory").cat("/parts/next.bin") == b"ok"
        left = set(os.listdir(tmp_path))
        assert parts[dead.pid] not in left
        assert parts[live.pid] in left  # its writer is still running
        assert "latentarc-abc123.part" in left
        assert remove_dead_writers_parts() == [str(foreign)]  # its lock is released now
    finally:
        live.kill()
        live.wait()
    assert remove_dead_writers_parts() == [str(tmp_path / parts[live.pid])]
    assert os.listdir(tmp_path) == ["latentarc-abc123.part"]
