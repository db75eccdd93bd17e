"""Where a compress call's CPU seconds go, process by process, against the same shard coded
in the driver.

    python benchmarks/pipeline/actor-cpu/actor_cpu.py [--rows 48] [--reps 2]
        [--env NAME=VALUE ...] [--json OUT]

One tar of ``--rows`` Kodak images, msh-n96-v2 at its default quality, alternated ``--reps``
times:
- **driver**: ``encode_shard`` in this process (2 torch threads, the actors' allocator
  setting), with no Ray running. It reports this process's CPU seconds.
- **actor**: the real ``compress`` on a fresh in-process Ray (2 CPUs, 127.0.0.1), one actor of
  1.5 CPUs. A thread samples every process under this one every 0.5 s and keeps each one's
  last CPU seconds, so the actor's are known up to its last half second. It reports the
  actor's CPU seconds, split at the first sample inside ``__call__`` (start-up before,
  the shard after), and each other process's.
- **actor+env**, when ``--env`` is given: the same, with those variables in the environment
  that Ray's processes inherit.

Why: through Ray, compress of a 176-image shard used 17-22 CPU seconds more than
``encode_shard`` in the driver (``../msh-n96-v2/README.md``, runs 19-20). About 10 of those were
accounted for, by the actor's start and Ray's processes.
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


def descendants(root: int) -> dict[int, tuple[str, float]]:
    """pid -> (title, CPU seconds) of every process under ``root`` (not ``root`` itself)."""
    parent, info = {}, {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read()
            title = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()[:70]
        except OSError:
            continue
        rest = stat.rsplit(")", 1)[1].split()
        parent[int(pid)] = int(rest[1])
        info[int(pid)] = (title.strip() or stat.split("(")[1].split(")")[0],
                          (int(rest[11]) + int(rest[12])) / TICK)
    out, todo = {}, [root]
    while todo:
        p = todo.pop()
        for child, par in parent.items():
            if par == p:
                out[child] = info[child]
                todo.append(child)
    return out


def in_driver(tar: str) -> dict:
    from models.registry import get_codec
    from pipeline.shard_encode import Batching, Guard, encode_shard
    from pipeline.sources import Shard

    codec = get_codec("msh-n96-v2", None)
    out = tempfile.mkdtemp(prefix="lar-ac-")
    try:
        c0, t0 = time.process_time(), time.perf_counter()
        encode_shard(Shard(tar, "s", "s.tar"), out, codec, guard=Guard(size=False), batching=Batching())
        return {"cpu_s": round(time.process_time() - c0, 2), "wall_s": round(time.perf_counter() - t0, 2)}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def in_actor(tar: str, work: Path) -> dict:
    import ray

    from pipeline.compress import compress
    from pipeline.runner import RayOptions, prefer_loopback
    from pipeline.shard_encode import Batching, Guard

    prefer_loopback()
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(work / "ray"),
             _node_ip_address="127.0.0.1", log_to_driver=False)
    first: dict[int, tuple[str, float]] = {}
    last: dict[int, tuple[str, float]] = {}
    at_call: dict[int, float] = {}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for pid, (title, cpu) in descendants(os.getpid()).items():
                first.setdefault(pid, (title, cpu))
                last[pid] = (title if "CompressWorker" not in last.get(pid, ("",))[0] else last[pid][0], cpu)
                if "CompressWorker.__call__" in title:
                    at_call.setdefault(pid, cpu)
            stop.wait(0.5)

    try:
        time.sleep(3)  # Ray's start-up out of the window
        base = descendants(os.getpid())
        me0, t0 = time.process_time(), time.perf_counter()
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        report = compress([tar], str(work / f"arc-{time.monotonic_ns()}"), "msh-n96-v2",
                          ray_options=RayOptions(actors=1, num_cpus=1.5, num_gpus=0),
                          progress=False, guard=Guard(size=False), batching=Batching())
        wall = time.perf_counter() - t0
        stop.set()
        watcher.join()
        driver_cpu = time.process_time() - me0
        if not report.ok:
            raise SystemExit(f"compress failed: {report.failed}")
    finally:
        ray.shutdown()
    procs = {}
    for pid, (title, cpu) in last.items():
        used = cpu - base.get(pid, (title, 0.0))[1]
        if used >= 0.05:
            procs[f"{pid} {title}"] = round(used, 2)
    actor = [pid for pid, (title, _) in last.items() if "CompressWorker" in title]
    out = {"wall_s": round(wall, 2), "driver_process_cpu_s": round(driver_cpu, 2),
           "descendants_cpu_s": round(sum(procs.values()), 2), "processes": procs}
    if actor and actor[0] in at_call:
        pid = actor[0]
        out["actor_start_cpu_s"] = round(at_call[pid] - base.get(pid, ("", 0.0))[1], 2)
        out["actor_shard_cpu_s"] = round(last[pid][1] - at_call[pid], 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=48)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--env", nargs="*", default=[])
    p.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "datasets" / "kodak")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    import torch

    from models.allocator import keep_freed_memory

    torch.set_num_threads(2)
    keep_freed_memory()
    ways = ["driver", "actor"] + (["actor+env"] if args.env else [])
    work = Path(tempfile.mkdtemp(prefix="lar-ac-"))
    results = []
    try:
        (tar,) = make_tars(args.images, work, 1, args.rows)
        for rep in range(args.reps):
            for way in ways if rep % 2 == 0 else ways[::-1]:
                saved = dict(os.environ)
                if way == "actor+env":
                    os.environ.update(kv.split("=", 1) for kv in args.env)
                try:
                    r = in_driver(tar) if way == "driver" else in_actor(tar, work)
                finally:
                    os.environ.clear()
                    os.environ.update(saved)
                if way != "driver":
                    time.sleep(3)  # Ray's processes exit
                results.append({"rep": rep, "way": way, **r})
                print(json.dumps(results[-1]), flush=True)
        if args.json:
            args.json.write_text(json.dumps({"args": {**vars(args), "images": str(args.images),
                                                      "json": str(args.json)},
                                             "results": results}, indent=1) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
