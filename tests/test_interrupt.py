"""Ctrl-C and SIGTERM (pipeline/interrupt.py): a verb stops its actors, keeps what it finished,
says so in one line and exits 130 or 143; the same command run again does the rest.

SIGTERM is what `ray job stop`, Kubernetes and `timeout` send. The stopped runs are `python -m
jobs.compress` / `jobs.restore` in their own process group, each with its own in-process Ray; a
terminal's Ctrl-C reaches the whole group (Ray's raylet and GCS too), so SIGINT goes to the
group here and SIGTERM to the driver alone. Reruns use the session's Ray (``ray_local``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

from jobs.fault_trials import TrialResult, _alive, check_archive, descendants, trial_input
from pipeline import interrupt

SHARDS, SAMPLES = 12, 160  # webp: several seconds of work after the first shard file


def test_signals_become_keyboard_interrupt_only_inside_and_the_old_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), interrupt.catch_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises in this thread long before this ends
    assert interrupt.received() == signal.SIGTERM and interrupt.name() == "SIGTERM"
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    interrupt.reinstall()  # outside catch_signals: installs nothing
    assert signal.getsignal(signal.SIGTERM) == before[0]
    stopped = interrupt.Interrupted("x", signal.SIGTERM)
    assert isinstance(stopped, KeyboardInterrupt) and stopped.exit_code == 143


def test_a_sigterm_while_ray_starts_is_ours_too():
    """ray.init installs sys.exit(15) for SIGTERM; while it runs, that is turned into ours."""
    with pytest.raises(KeyboardInterrupt), interrupt.catch_signals(), interrupt.ray_starting():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))  # as ray.init does
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert interrupt.received() == signal.SIGTERM
    with interrupt.catch_signals():
        with interrupt.ray_starting():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # replaced, as by ray.init ...
        assert signal.getsignal(signal.SIGTERM) is interrupt._handler  # ... and put back


def test_a_second_signal_while_the_record_is_written_is_ignored():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), interrupt.catch_signals():
        with interrupt.shielded():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)  # either would have raised here
            finished = True
        assert finished and signal.getsignal(signal.SIGINT) is interrupt._handler
        os.kill(os.getpid(), signal.SIGINT)  # after it: ours again
        time.sleep(5)
    assert signal.getsignal(signal.SIGINT) == before
    with interrupt.shielded():  # outside catch_signals (a library caller): changes nothing
        assert signal.getsignal(signal.SIGINT) == before


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled")
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, env=env,
                                start_new_session=True, stdout=out, stderr=subprocess.STDOUT)


def _stop_after_first(proc: subprocess.Popen, directory: Path, pattern: str, sig: int,
                      group: bool) -> tuple[int, set[int]]:
    """Send ``sig`` once a first file matching ``pattern`` is in ``directory``; returns the
    exit code and the run's processes as they were just before."""
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if directory.exists() and any(directory.glob(pattern)):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the signal: give it more work"
    tree = descendants(proc.pid)
    (os.killpg if group else os.kill)(proc.pid, sig)
    try:
        return proc.wait(timeout=60), tree
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _leftovers(tree: set[int]) -> list[int]:
    """The run's processes still alive a while after it exited (Ray's shutdown ends them)."""
    deadline = time.monotonic() + 20
    while (alive := [p for p in tree if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in alive:  # ours: our child started them
        os.kill(pid, signal.SIGKILL)
    return alive


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
@pytest.mark.parametrize("sig, group", [(signal.SIGTERM, False), (signal.SIGINT, True)],
                         ids=["SIGTERM-to-driver", "SIGINT-to-group"])
def test_a_stopped_compress_keeps_its_finished_shards_and_the_rerun_does_the_rest(
        tmp_path_factory, tmp_path, sig, group):
    from pipeline.compress import compress
    from pipeline.shard_encode import Guard

    src, expected = trial_input(tmp_path_factory.getbasetemp(), SHARDS, SAMPLES)
    archive, log = tmp_path / "arc", tmp_path / "run.log"
    proc = _start(["jobs.compress", str(src), str(archive), "--codec", "webp", "--actors", "1",
                   "--no-size-guard"], log)
    code, tree = _stop_after_first(proc, archive / "shards", "*.parquet", sig, group)
    out = log.read_text()
    name = signal.Signals(sig).name

    assert code == 128 + sig, out[-3000:]
    finished = sorted(p.stem for p in (archive / "shards").glob("*.parquet"))
    assert 1 <= len(finished) < SHARDS, out[-3000:]
    said = re.search(rf"latentarc compress: stopped by {name}: (\d+) shard\(s\) finished in this "
                     rf"run are kept in {re.escape(str(archive))}, (\d+) not done; rerun the same "
                     "command", out)
    assert said, out[-3000:]
    # ray.kill is asynchronous: the one actor may finish a shard after the driver has listed
    # the files, so the line may count one fewer than there are; never more
    kept = int(said[1])
    assert kept + int(said[2]) == SHARDS and len(finished) - 1 <= kept <= len(finished)
    assert "Traceback" not in out and "SIGTERM received" not in out, out[-3000:]
    assert "will be retried" not in out, out[-3000:]
    stats = json.loads((archive / "_stats.json").read_text())
    assert stats["run"]["stopped_by"] == name and len(stats["run"]["done"]) == kept
    assert set(stats["run"]["done"]) <= set(finished) and set(stats["shards"]) <= set(finished)
    assert not (archive / "_archive.json").exists()  # incomplete until a run finishes
    assert _leftovers(tree) == []

    report = compress(str(src), str(archive), "webp", guard=Guard(size=False), progress=False)
    assert report.ok and sorted(report.skipped) == finished
    assert sorted(report.done) == sorted(set(expected) - set(finished))
    result = TrialResult("stop", 0, 0, 0.0, name)
    check_archive(archive, expected, result)  # each sample once, every row verified
    assert result.problems == [] and result.rows_verified == SHARDS * SAMPLES


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_a_stopped_redo_counts_only_the_files_it_replaced(tmp_path_factory, tmp_path):
    """compress --redo stopped mid-run: a shard still in flight has its old (finished) file,
    which the stop's count of files present took for one this run had finished (run.done
    in _stats.json), so a later run would never redo it."""
    from pipeline.compress import compress
    from pipeline.shard_encode import Guard

    src, _ = trial_input(tmp_path_factory.getbasetemp(), SHARDS, SAMPLES)
    archive, log = tmp_path / "arc", tmp_path / "run.log"
    assert compress(str(src), str(archive), "webp", guard=Guard(size=False), progress=False).ok
    files = {p.stem: p for p in (archive / "shards").glob("*.parquet")}
    before = {name: p.stat().st_ino for name, p in files.items()}
    proc = _start(["jobs.compress", str(src), str(archive), "--codec", "webp", "--actors", "1",
                   "--no-size-guard", "--redo", *sorted(files)], log)

    def replaced() -> set[str]:
        return {n for n, p in files.items() if p.exists() and p.stat().st_ino != before[n]}

    deadline = time.monotonic() + 240
    while proc.poll() is None and not replaced() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the signal: give it more work"
    tree = descendants(proc.pid)
    os.kill(proc.pid, signal.SIGTERM)
    try:
        assert proc.wait(timeout=60) == 143, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    done = set(json.loads((archive / "_stats.json").read_text())["run"]["done"])
    new = replaced()
    assert done and done <= new and len(new) < SHARDS, (sorted(done), sorted(new))
    assert _leftovers(tree) == []


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_a_stopped_restore_leaves_whole_tars_only_and_names_the_rest(tmp_path_factory, tmp_path):
    from pipeline.compress import compress
    from pipeline.restore import restore
    from pipeline.shard_encode import Guard

    src, expected = trial_input(tmp_path_factory.getbasetemp(), SHARDS, SAMPLES)
    archive, out_dir, log = tmp_path / "arc", tmp_path / "out", tmp_path / "run.log"
    assert compress(str(src), str(archive), "webp", guard=Guard(size=False),
                    progress=False).ok
    # two actors: both have a shard in flight when they are killed
    proc = _start(["jobs.restore", str(archive), str(out_dir), "--actors", "2"], log)
    code, tree = _stop_after_first(proc, out_dir, "*.tar", signal.SIGTERM, False)
    out = log.read_text()

    assert code == 143, out[-3000:]
    whole = sorted(p.name for p in out_dir.glob("*.tar"))
    assert 1 <= len(whole) < SHARDS, out[-3000:]
    said = re.search(rf"latentarc restore: stopped by SIGTERM: (\d+) shard\(s\) restored to "
                     rf"{re.escape(str(out_dir))}; .* Not restored \((\d+)\): ([^;]*);", out)
    assert said, out[-3000:]
    # as for compress: a tar per actor may land after the driver's listing
    assert int(said[1]) + int(said[2]) == SHARDS and len(whole) - 2 <= int(said[1]) <= len(whole)
    named = said[3].removesuffix(", ...").split(", ")
    assert set(named) <= set(expected) and len(named) == min(10, int(said[2]))
    late = set(named) & {w[:-4] for w in whole}  # named as not restored, yet whole: the late one
    assert len(late) == len(whole) - int(said[1])
    assert "Traceback" not in out
    # the shards in flight are not retried, and Ray does not say they will be
    assert "will be retried" not in out, out[-3000:]
    assert _leftovers(tree) == []

    # The tars that are there are whole; the rest, restored by name, replaces any temp file.
    rest = sorted(set(f"{s}.tar" for s in expected) - set(whole))
    report = restore(str(archive), str(out_dir), shards=[s[:-4] for s in rest], progress=False)
    assert report.ok
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(f"{s}.tar" for s in expected)
    import webdataset as wds

    for shard, keys in expected.items():
        samples = list(wds.WebDataset(str(out_dir / f"{shard}.tar"), shardshuffle=False))
        assert [s["__key__"] for s in samples] == keys
