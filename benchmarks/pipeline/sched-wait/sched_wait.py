"""Where the codec's threads spend a compress: on a CPU, waiting for one, or asleep.

    python benchmarks/pipeline/sched-wait/sched_wait.py [--codec msh-n96-v2] [--rows 48]
        [--cpus 1.5] [--reps 2] [--json OUT]

The same ``encode_shard`` of one tar of ``--rows`` Kodak images, alternated ``--reps`` times:
1. **driver**: called in this process (torch on 2 threads, the actors' allocator setting),
   with no Ray running;
2. **actor**: inside the real ``compress`` on in-process Ray (2 CPUs, 127.0.0.1), one actor
   reserving ``--cpus`` (2 torch threads by ``use_reserved_cpus``).

For the process doing the work, each thread's ``/proc/PID/task/TID/schedstat`` is read at the
start and the end of a window: nanoseconds on a CPU, and nanoseconds runnable but waiting for a
CPU (the scheduler's run-queue delay). The rest of the window the thread was asleep or blocked.
For the actor, the window runs from the first sample whose title shows ``__call__``
(the shard has started) to the last such sample, 0.5 s apart. Over the same window: the
machine's idle and steal time (``/proc/stat``) and the CPU of every other process, by name.

Why: ``encode_shard`` runs at 0.96-0.99 of the bare loop in the driver and 0.87 inside the
actor (``../msh-n96-v2/README.md``, runs 17-18). Threads that wait for a CPU would point at
contention with Ray's processes (the actor runs at nice 15). Threads that sleep more would point
at blocking (OpenMP barriers, locks, I/O).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks" / "pipeline" / "batch-memory"))

from measure import make_tars  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def threads(pid: int) -> dict[int, tuple[str, int, int]]:
    """tid -> (name, ns on a CPU, ns waiting for one)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            run, wait, _ = open(f"/proc/{pid}/task/{tid}/schedstat").read().split()
            name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
        except (OSError, ValueError):
            continue
        out[int(tid)] = (name, int(run), int(wait))
    return out


def machine() -> dict[str, int]:
    """/proc/stat's first line in ticks, and every process's CPU ticks (pid -> (name, ticks))."""
    fields = open("/proc/stat").readline().split()[1:]
    names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
    cpu = dict(zip(names, map(int, fields), strict=False))
    procs = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read()
            title = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()[:60]
        except OSError:
            continue
        rest = stat.rsplit(")", 1)[1].split()
        procs[int(pid)] = (title or stat.split("(")[1].split(")")[0], int(rest[11]) + int(rest[12]))
    return {"cpu": cpu, "procs": procs}


def report(pid: int, a: dict, b: dict, ma: dict, mb: dict, wall: float) -> dict:
    rows = []
    for tid, (name, run, wait) in b.items():  # a thread started within the window: from zero
        run0, wait0 = a[tid][1:] if tid in a else (0, 0)
        rows.append({"tid": tid, "name": name, "run_pct": round(100 * (run - run0) / 1e9 / wall, 1),
                     "wait_pct": round(100 * (wait - wait0) / 1e9 / wall, 1)})
    rows.sort(key=lambda r: -r["run_pct"])
    cpu = {k: mb["cpu"][k] - ma["cpu"][k] for k in mb["cpu"]}
    total = sum(cpu.values()) or 1
    others = []
    for p, (title, ticks) in mb["procs"].items():
        if p == pid or p not in ma["procs"]:
            continue
        used = (ticks - ma["procs"][p][1]) / TICK / wall * 100
        if used >= 0.5:
            others.append((round(used, 1), title))
    others.sort(reverse=True)
    busy = [r for r in rows if r["run_pct"] >= 5]
    return {"wall_s": round(wall, 2), "threads": rows[:8], "threads_seen": len(rows),
            "threads_run_pct": round(sum(r["run_pct"] for r in rows), 1),
            # from /proc/PID/stat: counts threads that ended within the window too
            "process_cpu_pct": round((mb["procs"][pid][1] - ma["procs"][pid][1]) / TICK / wall * 100, 1)
            if pid in ma["procs"] and pid in mb["procs"] else None,
            "busy_threads_run_pct": round(sum(r["run_pct"] for r in busy), 1),
            "busy_threads_wait_pct": round(sum(r["wait_pct"] for r in busy), 1),
            "machine_idle_pct": round(100 * cpu["idle"] / total, 1),
            "machine_steal_pct": round(100 * cpu.get("steal", 0) / total, 1),
            "others_pct_of_a_core": others[:10]}


def in_driver(tar: str, codec_id: str) -> dict:
    from models.registry import get_codec
    from pipeline.shard_encode import Batching, Guard, encode_shard
    from pipeline.sources import Shard

    codec = get_codec(codec_id, None)
    out = tempfile.mkdtemp(prefix="lar-sw-")
    stop = threading.Event()

    def look() -> None:  # what the actor run's watcher does every 0.5 s, so both pay for it
        while not stop.is_set():
            find_actor("ray::CompressWorker.__call__")
            machine()
            stop.wait(0.5)

    watcher = threading.Thread(target=look, daemon=True)
    watcher.start()
    try:
        a, ma, t0 = threads(os.getpid()), machine(), time.perf_counter()
        encode_shard(Shard(tar, "s", "s.tar"), out, codec, guard=Guard(size=False), batching=Batching())
        b, mb, wall = threads(os.getpid()), machine(), time.perf_counter() - t0
    finally:
        stop.set()
        watcher.join()
        shutil.rmtree(out, ignore_errors=True)
    return report(os.getpid(), a, b, ma, mb, wall)


def find_actor(marker: str) -> int | None:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker in open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace"):
                return int(pid)
        except OSError:
            continue
    return None


def in_actor(tar: str, codec_id: str, cpus: float, work: Path) -> dict:
    from pipeline.compress import compress
    from pipeline.runner import RayOptions
    from pipeline.shard_encode import Batching, Guard

    seen: dict = {}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            pid = find_actor("ray::CompressWorker.__call__")
            if pid:
                try:
                    snap = (threads(pid), machine(), time.perf_counter())
                except OSError:
                    snap = None
                if snap:
                    seen.setdefault("first", (pid, *snap))
                    seen["last"] = (pid, *snap)
            stop.wait(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    archive = work / f"arc-{time.monotonic_ns()}"
    options = RayOptions(actors=1, num_cpus=cpus, num_gpus=0)
    report_ = compress([tar], str(archive), codec_id, ray_options=options, progress=False,
                       guard=Guard(size=False), batching=Batching())
    stop.set()
    watcher.join()
    shutil.rmtree(archive, ignore_errors=True)
    if not report_.ok or "first" not in seen:
        raise SystemExit(f"compress failed or the actor was not seen: {report_.failed}")
    pid, a, ma, t0 = seen["first"]
    _, b, mb, t1 = seen["last"]
    return report(pid, a, b, ma, mb, t1 - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codec", default="msh-n96-v2")
    p.add_argument("--rows", type=int, default=48)
    p.add_argument("--cpus", type=float, default=1.5)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "datasets" / "kodak")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    import torch

    from models.allocator import keep_freed_memory
    from pipeline.runner import prefer_loopback

    torch.set_num_threads(2)
    keep_freed_memory()  # the allocator setting the actors run with (models/allocator.py)

    work = Path(tempfile.mkdtemp(prefix="lar-sw-"))
    results = []
    try:
        (tar,) = make_tars(args.images, work, 1, args.rows)
        for rep in range(args.reps):
            for way in ("driver", "actor") if rep % 2 == 0 else ("actor", "driver"):
                if way == "driver":
                    r = in_driver(tar, args.codec)
                else:
                    prefer_loopback()
                    import ray

                    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(work / "ray"),
                             _node_ip_address="127.0.0.1", log_to_driver=False)
                    try:
                        r = in_actor(tar, args.codec, args.cpus, work)
                    finally:
                        ray.shutdown()
                        time.sleep(3)  # Ray's processes exit before the next driver run
                r = {"rep": rep, "way": way, **r}
                results.append(r)
                print(json.dumps(r), flush=True)
        if args.json:
            args.json.write_text(json.dumps({"args": {**vars(args), "images": str(args.images),
                                                      "json": str(args.json)},
                                             "results": results}, indent=1) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
