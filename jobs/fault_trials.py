"""Fault trials for ``compress``: kill a codec actor, or stop the whole driver, then check the archive.

Two kinds of trial on synthetic WebDataset shards (local files, written once and read by every
trial; a cheap classical codec), each with a moment drawn from a seeded RNG that is printed:

* kill: ``compress()`` runs on this process's Ray instance (one instance for all trials, so a
  trial costs seconds); once a shard's temp file appears, a thread waits the drawn delay and
  SIGKILLs one of this run's ``CompressWorker`` actors by PID (drawn among those writing a
  shard at that moment). Ray restarts the actor and retries its shard on it.
* stop: ``python -m jobs.compress`` (with its own in-process Ray) runs in its own process group;
  once a shard file is finished, the drawn delay later the whole group is SIGKILLed (SIGKILL,
  not SIGTERM: nothing gets a chance to clean up), and at once, by PID, every process it
  started that is outside the group (Ray's services and, under the raylet, the actors), as a
  machine dying would take them. The same compress run is then started again, as
  ``compress()`` on this process's Ray instance: what the command calls.

After each trial: every sample of every input shard is in the archive exactly once (by shard
and key), every row decodes and matches its stored content hash (``pipeline.verify``), no temp
file is left, and an attempt cut off mid-write is counted in ``_stats.json``
(``run.interrupted_attempts``). compress counts the actor restarts it can see (worker processes
that returned a result beyond the pool's size: ``run.actor_restarts_seen``, a lower bound); the
trial also records what it observes itself: the PIDs of codec actors that started after the kill.

Only processes this process started are ever signalled: actors are found among this process's
descendants (Linux ``/proc``), and a stop trial kills the process group it created. That is
why the kill trials refuse to run against an external cluster (``RAY_ADDRESS``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from jobs.synthetic import synthetic_image

REPO = Path(__file__).resolve().parent.parent
ACTOR_MARK = "ray::CompressWorker"  # a codec actor's process title (+ ".__call__" while busy)
DEFAULT_CODEC = "webp"
KILL_SHARDS, STOP_SHARDS = 6, 12  # per trial, unless --shards says
STOP_SEED_OFFSET = 1000  # stop trial j uses seed + 1000 + j; kill trial i uses seed + i


# ---------------------------------------------------------------------------------------------
# Input data


def write_input(directory: Path, shards: int, samples: int, seed: int) -> dict[str, list[str]]:
    """Write ``shards`` WebDataset tars of ``samples`` samples (PNG, json, txt members).

    Returns shard name -> keys, the exact content the archive must hold once each.
    """
    import webdataset as wds
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    expected: dict[str, list[str]] = {}
    for i in range(shards):
        keys = [f"s{i}-{j:04d}" for j in range(samples)]
        with wds.TarWriter(str(directory / f"shard-{i:06d}.tar"), encoder=False) as writer:
            for j, key in enumerate(keys):
                buf = io.BytesIO()
                Image.fromarray(synthetic_image(seed * 7919 + i * 1000 + j)).save(buf, "PNG")
                writer.write({"__key__": key, "png": buf.getvalue(),
                              "json": json.dumps({"key": key}).encode(),
                              "txt": f"caption of {key}".encode()})
        expected[f"shard-{i:06d}"] = keys
    return expected


def trial_input(workdir: Path, shards: int, samples: int) -> tuple[Path, dict[str, list[str]]]:
    """The input shards under ``workdir``, written once and shared (read-only) by every trial.

    Writing them costs about as much as a trial's compress run, so they are not redrawn.
    """
    src = workdir / f"input-{shards}x{samples}"
    expected = {f"shard-{i:06d}": [f"s{i}-{j:04d}" for j in range(samples)] for i in range(shards)}
    if not (src / ".complete").exists():
        written = write_input(src, shards, samples, 0)
        assert written == expected
        (src / ".complete").touch()
    return src, expected


# ---------------------------------------------------------------------------------------------
# Processes: only our own descendants are ever looked at


def _parents() -> dict[int, int]:
    out = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            out[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def descendants(root: int) -> set[int]:
    """PIDs below ``root`` in the process tree (Linux)."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def codec_actor_pids(root: int | None = None) -> set[int]:
    """This process's (or ``root``'s) ``CompressWorker`` actors: never another user's Ray."""
    return {p for p in descendants(root or os.getpid()) if ACTOR_MARK in _cmdline(p)}


def _open_temp_files(pid: int, shards_dir: Path) -> list[str]:
    out = []
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(shards_dir)) and ".tmp-" in target:
            out.append(target)
    return out


def _temp_files(shards_dir: Path) -> list[Path]:
    return list(shards_dir.glob(".*.tmp-*")) if shards_dir.exists() else []


def _shard_of_temp(path: str) -> str:
    return Path(path).name.split(".tmp-")[0].lstrip(".").removesuffix(".parquet")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _pgrp(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[2])
    except (OSError, ValueError, IndexError):
        return None


def _name(pid: int) -> str:
    return (_cmdline(pid).split() or ["?"])[0].rsplit("/", 1)[-1]


def _kill_tree(pids: set[int]) -> list[str]:
    """SIGKILL ``pids`` still alive and their descendants; returns their process names."""
    killed: dict[int, str] = {}
    todo = {p for p in pids if _alive(p)}
    for _ in range(50):  # a process stuck in the kernel may take a moment to go
        if not todo:
            break
        for pid in list(todo):
            todo |= descendants(pid)
        for pid in sorted(todo):
            name = _name(pid)
            try:
                os.kill(pid, signal.SIGKILL)
                killed.setdefault(pid, name)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
        todo = {p for p in todo if _alive(p)}
    return sorted(killed.values())


# ---------------------------------------------------------------------------------------------
# Checks


@dataclass
class TrialResult:
    """One trial: what was done to which process when, and what the archive held afterwards."""

    kind: str  # "kill" or "stop"
    index: int
    seed: int
    delay_s: float  # drawn: seconds after the anchor (a temp file / a finished shard file)
    signal: str
    fault: bool = False  # a process was killed while the run was going on
    killed: list[int] = field(default_factory=list)
    moment_s: float | None = None  # measured: seconds after the anchor when the signal went
    mid_write: list[str] = field(default_factory=list)  # shards whose temp file the kill cut off
    note: str = ""
    actors_started_after_kill: int = 0
    finished_before_rerun: list[str] = field(default_factory=list)
    # stop: processes of the stopped run outside its process group (names), SIGKILLed by PID
    leftover_processes: list[str] = field(default_factory=list)
    samples_expected: int = 0
    samples_found: int = 0
    lost: int = 0
    duplicated: int = 0
    rows_verified: int = 0
    interrupted_attempts: list[str] = field(default_factory=list)
    actor_restarts_seen: int = 0  # compress's own count (_stats.json), a lower bound
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems and not self.lost and not self.duplicated

    def line(self) -> str:
        what = (f"SIGKILL pid {','.join(map(str, self.killed))} at {self.moment_s:.2f} s"
                if self.fault else f"no fault ({self.note})")
        where = f" mid-write {','.join(self.mid_write)}" if self.mid_write else ""
        extra = (f", {self.actors_started_after_kill} actor(s) started after the kill "
                 f"({self.actor_restarts_seen} seen by compress)"
                 if self.kind == "kill" else
                 f", {len(self.finished_before_rerun)} shard(s) finished before the stop, "
                 f"{len(self.leftover_processes)} process(es) outside the group killed by PID")
        outcome = "OK" if self.ok else "FAIL: " + "; ".join(self.problems[:3])
        return (f"{self.kind} #{self.index} seed {self.seed} delay {self.delay_s:.2f} s: {what}{where}; "
                f"{self.samples_found}/{self.samples_expected} samples, lost {self.lost}, "
                f"duplicated {self.duplicated}, {self.rows_verified} rows verified, "
                f"interrupted_attempts {self.interrupted_attempts}{extra} [{self.seconds:.1f} s] {outcome}")


def check_archive(archive: Path, expected: dict[str, list[str]], result: TrialResult) -> None:
    """Exactly once, decodes to its content hash, no temp file left, interruptions counted."""
    from pipeline.archive_format import read_manifest
    from pipeline.rows import RowDecoder
    from pipeline.storage import StorageOptions
    from pipeline.verify import verify_shard

    want = Counter((shard, key) for shard, keys in expected.items() for key in keys)
    result.samples_expected = sum(want.values())
    found: Counter = Counter()
    shards_dir = archive / "shards"
    if shards_dir.exists() and any(shards_dir.glob("*.parquet")):
        rows = pq.read_table(shards_dir, columns=["shard", "key"]).to_pylist()
        found = Counter((r["shard"], r["key"]) for r in rows)
    result.samples_found = sum(found.values())
    result.lost = sum((want - found).values())
    result.duplicated = sum(n - 1 for n in found.values() if n > 1)
    extra = sum((found - want).values()) - result.duplicated
    if extra > 0:
        result.problems.append(f"{extra} row(s) that are in no input shard")
    if result.lost:
        result.problems.append(f"{result.lost} sample(s) lost, e.g. {sorted(want - found)[:3]}")
    if result.duplicated:
        result.problems.append(f"{result.duplicated} duplicated row(s)")
    if leftovers := _temp_files(shards_dir):
        result.problems.append(f"temp files left: {[p.name for p in leftovers]}")
    try:
        manifest = read_manifest(str(archive))
    except Exception as exc:  # a missing manifest is a finding, not a crash of the runner
        result.problems.append(f"no readable _archive.json: {exc}")
        return
    decoder, storage = RowDecoder(), StorageOptions()
    for entry in manifest["shards"]:
        checked = verify_shard(str(archive), entry["shard"], entry["samples"], storage, decoder)
        result.rows_verified += checked["rows"]
        result.problems.extend(checked["problems"])
    stats = json.loads((archive / "_stats.json").read_text())
    result.interrupted_attempts = stats["run"]["interrupted_attempts"]
    result.actor_restarts_seen = stats["run"].get("actor_restarts_seen", 0)
    # compress names an interrupted attempt by its file ("shard-000003.parquet"), not its shard.
    counted = {name.removesuffix(".parquet") for name in result.interrupted_attempts}
    missing = sorted(set(result.mid_write) - counted)
    if missing:
        result.problems.append(f"attempts cut off mid-write not in _stats.json: {missing}")


# ---------------------------------------------------------------------------------------------
# Trials


def start_ray(num_cpus: int = 2) -> str | None:
    """An in-process Ray for the kill trials; returns its temp dir (None if one was running).

    In-process, so every actor is a descendant of this process and can be told apart from
    anyone else's Ray on the same machine.
    """
    if os.environ.get("RAY_ADDRESS"):
        raise SystemExit("fault trials start their own Ray; unset RAY_ADDRESS (they kill actors by PID)")
    from pipeline.runner import prefer_loopback

    prefer_loopback()
    import ray

    if ray.is_initialized():
        return None
    temp_dir = tempfile.mkdtemp(prefix="lar-")  # short: Ray's socket paths have a length limit
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _temp_dir=temp_dir,
             _node_ip_address="127.0.0.1", log_to_driver=False)
    return temp_dir


def _compress(src: Path, archive: Path, codec: str):
    from pipeline.compress import compress
    from pipeline.shard_encode import Guard

    # No size guard: every image is coded, so every row has a bitstream to decode and hash.
    return compress([str(src)], str(archive), codec, progress=False, guard=Guard(size=False))


def kill_trial(workdir: Path, index: int, seed: int, codec: str = DEFAULT_CODEC, shards: int = KILL_SHARDS,
               samples: int = 160, window: float = 1.0) -> TrialResult:
    """SIGKILL one of this run's codec actors ``uniform(0, window)`` s after the first temp file.

    The actor is drawn (seeded) among those writing a shard file at that moment, or among all
    of this run's actors when none is.

    Needs Ray running in this process (``start_ray``, or the tests' ``ray_local`` fixture).
    """
    rng = random.Random(seed)
    result = TrialResult("kill", index, seed, round(rng.uniform(0.0, window), 3), "SIGKILL")
    started = time.monotonic()
    trial_dir = workdir / f"kill-{index:03d}"
    src, expected = trial_input(workdir, shards, samples)
    archive = trial_dir / "arc"
    shards_dir = archive / "shards"
    before = codec_actor_pids()  # a previous run's actors still shutting down: never targets
    done = threading.Event()

    def killer() -> None:
        while not _temp_files(shards_dir):
            if done.wait(0.02):
                result.note = "the run ended before any shard was written"
                return
        anchor = time.monotonic()
        if done.wait(result.delay_s):
            result.note = "the run ended before the drawn moment"
            return
        pids = sorted(codec_actor_pids() - before)
        if not pids:
            result.note = "no codec actor of this run alive at the drawn moment"
            return
        # An actor in the middle of a shard if there is one: killing an idle actor tests less.
        writing = [p for p in pids if _open_temp_files(p, shards_dir)]
        pid = rng.choice(writing or pids)
        open_temp = _open_temp_files(pid, shards_dir)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            result.note = f"actor {pid} exited before the signal"
            return
        result.moment_s = round(time.monotonic() - anchor, 3)
        result.fault, result.killed = True, [pid]
        # A file the actor had open that still exists was cut off; one already renamed into
        # place (the write finished in between) was not.
        result.mid_write = sorted(_shard_of_temp(p) for p in open_temp if os.path.exists(p))
        seen = set(pids)
        while not done.wait(0.05):
            new = codec_actor_pids() - before - seen
            result.actors_started_after_kill += len(new)
            seen |= new

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        report = _compress(src, archive, codec)
    finally:
        done.set()
        thread.join()
    if not report.ok:
        result.problems.append(f"compress failed: {report.failed}")
    check_archive(archive, expected, result)
    result.seconds = round(time.monotonic() - started, 2)
    return result


def stop_trial(workdir: Path, index: int, seed: int, codec: str = DEFAULT_CODEC, shards: int = STOP_SHARDS,
               samples: int = 160, window: float = 1.5, timeout: float = 300) -> TrialResult:
    """``python -m jobs.compress`` in its own process group, SIGKILLed ``uniform(0, window)`` s
    after its first shard file is finished; then the same compress run again (in this process).

    12 shards: with 6, a webp run could finish all of them inside the window (session 10, once
    PSNR stopped waking OpenBLAS) and the kill fell into Ray's shutdown after ``_archive.json``.
    A kill after the run completed is recorded as such (``note``), not as a stop.

    The rerun uses Ray in this process (``start_ray`` or ``ray_local``); the stopped run starts
    its own, in a temp dir of its own, removed afterwards.
    """
    rng = random.Random(seed)
    result = TrialResult("stop", index, seed, round(rng.uniform(0.0, window), 3), "SIGKILL (group)")
    started = time.monotonic()
    trial_dir = workdir / f"stop-{index:03d}"
    src, expected = trial_input(workdir, shards, samples)
    trial_dir.mkdir(parents=True, exist_ok=True)
    archive = trial_dir / "arc"
    shards_dir = archive / "shards"
    ray_tmp = tempfile.mkdtemp(prefix="lar-s")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=ray_tmp, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    log_path = trial_dir / "stopped-run.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobs.compress", str(src), str(archive),
             "--codec", codec, "--actors", "1", "--no-size-guard", "-q"],
            cwd=REPO, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if shards_dir.exists() and any(shards_dir.glob("*.parquet")):
                break
            time.sleep(0.05)
        anchor = time.monotonic()
        try:
            proc.wait(timeout=result.delay_s)
        except subprocess.TimeoutExpired:
            pass
        if proc.poll() is None:
            tree = descendants(proc.pid)  # taken before the kill: orphans are reparented
            outside = sorted(_name(p) for p in tree if _pgrp(p) not in (proc.pid, None))
            os.killpg(proc.pid, signal.SIGKILL)  # the group we created, and nothing else
            result.moment_s = round(time.monotonic() - anchor, 3)
            result.fault, result.killed = True, [proc.pid]
            # Ray's worker processes (the actors among them) run in process groups of their
            # own: SIGKILLed by PID at once, as a machine dying would take them. All were
            # started by our child, so they are ours to stop.
            _kill_tree(tree)
            result.leftover_processes = outside
            proc.wait()
        else:
            result.note = f"the run exited (code {proc.returncode}) before the drawn moment"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    result.mid_write = sorted(_shard_of_temp(str(p)) for p in _temp_files(shards_dir))
    result.finished_before_rerun = sorted(p.stem for p in shards_dir.glob("*.parquet")) \
        if shards_dir.exists() else []
    if result.fault and (archive / "_archive.json").exists():
        # written only once every shard is done: then the kill fell into the shutdown
        if result.finished_before_rerun != sorted(expected):
            result.problems.append("_archive.json exists after a stopped run with unfinished shards")
        else:
            result.fault = False
            result.note = "the kill fell after the run had finished (in Ray's shutdown)"
    report = _compress(src, archive, codec)
    if not report.ok:
        result.problems.append(f"rerun failed: {report.failed}")
    if sorted(report.skipped) != result.finished_before_rerun:
        result.problems.append(
            f"rerun skipped {report.skipped}, finished were {result.finished_before_rerun}")
    if sorted(report.done) != sorted(set(expected) - set(result.finished_before_rerun)):
        result.problems.append(f"rerun did {report.done}, not exactly the unfinished shards")
    check_archive(archive, expected, result)
    result.seconds = round(time.monotonic() - started, 2)
    return result


# ---------------------------------------------------------------------------------------------
# The command


def summarize(results: list[TrialResult]) -> dict[str, Any]:
    """Figures over all trials (what RELIABILITY.md quotes)."""
    out: dict[str, Any] = {}
    for kind in ("kill", "stop"):
        rs = [r for r in results if r.kind == kind]
        out[kind] = {
            "trials": len(rs),
            "faults_injected": sum(r.fault for r in rs),
            "cut_off_mid_write": sum(bool(r.mid_write) for r in rs),
            "samples_checked": sum(r.samples_expected for r in rs),
            "rows_verified": sum(r.rows_verified for r in rs),
            "rows_lost": sum(r.lost for r in rs),
            "rows_duplicated": sum(r.duplicated for r in rs),
            "failed_trials": sum(not r.ok for r in rs),
        }
    out["all_ok"] = all(r.ok for r in results)
    return out


def _markdown(summary: dict[str, Any], results: list[TrialResult], meta: dict[str, Any]) -> str:
    lines = [
        "# Fault trials (`jobs/fault_trials.py`)", "",
        f"Rerun: `{meta['command']}`", "",
        f"Finished {meta['finished']}, {meta['seconds']:.0f} s; codec {meta['codec']}, "
        f"{meta['shards']['kill']} (kill) / {meta['shards']['stop']} (stop) shards x "
        f"{meta['samples']} samples per trial; kill window "
        f"{meta['kill_window']} s, stop window {meta['stop_window']} s. Timing depends on the machine: "
        "the seed fixes each drawn delay and actor choice, not where in the work the signal lands.", "",
        "| kind | trials | faults injected | cut off mid-write | samples checked | rows verified "
        "| rows lost | rows duplicated | failed trials |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in ("kill", "stop"):
        s = summary[kind]
        lines.append(f"| {kind} | {s['trials']} | {s['faults_injected']} | {s['cut_off_mid_write']} | "
                     f"{s['samples_checked']} | {s['rows_verified']} | {s['rows_lost']} | "
                     f"{s['rows_duplicated']} | {s['failed_trials']} |")
    outside = sorted({n for r in results for n in r.leftover_processes})
    if outside:
        lines += ["", "Processes of a stopped run outside its process group (SIGKILLed by PID right "
                  f"after the group): {', '.join(f'`{n}`' for n in outside)}."]
    lines += ["", "| trial | seed | drawn delay s | signal at s | killed | cut off mid-write "
              "| interrupted_attempts | actors started after kill / shards finished before stop "
              "| samples | lost | dup | outcome |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        after = r.actors_started_after_kill if r.kind == "kill" else len(r.finished_before_rerun)
        moment = f"{r.moment_s:.2f}" if r.moment_s is not None else f"- ({r.note})"
        lines.append(
            f"| {r.kind} #{r.index} | {r.seed} | {r.delay_s:.2f} | {moment} | "
            f"{','.join(map(str, r.killed)) or '-'} | {','.join(r.mid_write) or '-'} | "
            f"{','.join(r.interrupted_attempts) or '-'} | {after} | {r.samples_found}/{r.samples_expected} | "
            f"{r.lost} | {r.duplicated} | {'OK' if r.ok else 'FAIL: ' + '; '.join(r.problems[:2])} |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.fault_trials",
        description=__doc__.split("\n\n", 1)[1].split("\n\nOnly processes")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Prints one line per trial and a summary; exit 0 when every trial kept every sample "
        "exactly once and verified, 1 otherwise. Linux only (/proc). Never run it against a "
        "shared cluster: it starts and signals its own processes only.",
    )
    parser.add_argument("--kills", type=int, default=5, help="kill-a-codec-actor trials (default 5)")
    parser.add_argument("--stops", type=int, default=2, help="stop-and-resume trials (default 2)")
    parser.add_argument("--seed", type=int, default=0,
                        help="base seed: kill trial i uses SEED+i, stop trial j SEED+1000+j (default 0)")
    parser.add_argument("--out", type=Path,
                        help="write summary.json and summary.md here (default: print only)")
    parser.add_argument("--codec", default=DEFAULT_CODEC, help=f"codec (default {DEFAULT_CODEC}: cheap)")
    parser.add_argument("--shards", type=int, default=None,
                        help=f"input shards per trial (default {KILL_SHARDS} for kill trials, "
                             f"{STOP_SHARDS} for stop trials: with fewer, a stop often lands after "
                             "the run has finished)")
    parser.add_argument("--samples", type=int, default=160,
                        help="samples per shard, 64x96 PNG + json + txt (default 160)")
    parser.add_argument("--kill-window", type=float, default=1.0,
                        help="kill delay ~ uniform(0, W) s after the first temp file (default 1.0)")
    parser.add_argument("--stop-window", type=float, default=1.5,
                        help="stop delay ~ uniform(0, W) s after the first shard file (default 1.5)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the trials' Ray instance (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep the trials' inputs and archives")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = "python -m jobs.fault_trials " + " ".join(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    ray_tmp = start_ray(args.cpus)
    workdir = Path(tempfile.mkdtemp(prefix="latentarc-trials-"))
    print(f"fault trials: seed {args.seed}, {args.kills} kill + {args.stops} stop, codec {args.codec}, "
          f"work in {workdir}", flush=True)
    results: list[TrialResult] = []
    common = dict(codec=args.codec, samples=args.samples)
    kill_shards, stop_shards = args.shards or KILL_SHARDS, args.shards or STOP_SHARDS
    try:
        for i in range(args.kills):
            results.append(kill_trial(workdir, i, args.seed + i, window=args.kill_window,
                                      shards=kill_shards, **common))
            print(results[-1].line(), flush=True)
        for j in range(args.stops):
            results.append(stop_trial(workdir, j, args.seed + STOP_SEED_OFFSET + j,
                                      window=args.stop_window, shards=stop_shards, **common))
            print(results[-1].line(), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        if ray_tmp:
            import ray

            ray.shutdown()
            shutil.rmtree(ray_tmp, ignore_errors=True)
    summary = summarize(results)
    for kind in ("kill", "stop"):
        s = summary[kind]
        print(f"{kind}: {s['trials']} trials, {s['faults_injected']} faults injected "
              f"({s['cut_off_mid_write']} mid-write), {s['samples_checked']} samples checked, "
              f"{s['rows_verified']} rows verified, lost {s['rows_lost']}, duplicated "
              f"{s['rows_duplicated']}, failed trials {s['failed_trials']}")
    if args.out:
        import datetime as dt

        meta = {"command": command, "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "seconds": round(time.monotonic() - started, 1), "seed": args.seed, "codec": args.codec,
                "shards": {"kill": kill_shards, "stop": stop_shards}, "samples": args.samples,
                "kill_window": args.kill_window, "stop_window": args.stop_window, "cpus": args.cpus}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.json").write_text(json.dumps(
            {"meta": meta, "summary": summary, "trials": [asdict(r) for r in results]}, indent=2) + "\n")
        (args.out / "summary.md").write_text(_markdown(summary, results, meta))
        print(f"wrote {args.out / 'summary.json'} and {args.out / 'summary.md'}")
    return 0 if summary["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
