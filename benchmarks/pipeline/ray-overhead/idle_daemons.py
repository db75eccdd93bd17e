"""CPU that in-process Ray's own processes use while its one actor waits.

    python benchmarks/pipeline/ray-overhead/idle_daemons.py [--seconds 60] [VAR=VALUE ...]

A fresh child process starts Ray as ``pipeline.runner.ensure_ray`` does (127.0.0.1, no
dashboard, its own temp dir) with the given settings in its environment, starts one idle actor
(0.5 CPU), waits 15 s, then counts the CPU time (user + system, from /proc) of the child and of
every process under it over ``--seconds``. On 2 cores every tick these take is a tick a codec
actor does not get; the pipeline benchmark's CPU efficiency counts them too.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
from pipeline.runner import RayOptions, ensure_ray
import ray
ensure_ray(RayOptions())

@ray.remote(num_cpus=0.5)
class Idle:
    def ping(self):
        return 1

actor = Idle.remote()
ray.get(actor.ping.remote())
print("ready", flush=True)
sys.stdin.readline()  # until the parent has measured
ray.shutdown()
"""


def _ticks(root: int) -> dict[int, tuple[int, str]]:
    """CPU ticks and name of ``root`` and every process under it."""
    parent: dict[int, int] = {}
    info: dict[int, tuple[int, str]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
            # a Python script by its file name, a binary by its own, a worker by its title
            args = [Path(a).name for a in argv if a and not a.startswith("-")]
            name = " ".join(args[:2] if args[:1] == ["python"] else args[:1])[:50]
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        parent[int(pid)] = int(fields[1])
        info[int(pid)] = (int(fields[11]) + int(fields[12]), name or stat.split("(")[1].split(")")[0])

    def under(pid: int) -> bool:
        while pid > 1:
            if pid == root:
                return True
            pid = parent.get(pid, 1)
        return False

    return {p: v for p, v in info.items() if under(p)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("settings", nargs="*", metavar="VAR=VALUE")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    env = dict(os.environ, **dict(s.split("=", 1) for s in args.settings))
    with tempfile.TemporaryDirectory(prefix="ray-idle-") as tmp:
        env["RAY_TMPDIR"] = tmp
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(ROOT)], env=env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            assert child.stdout.readline().strip() == "ready"
            time.sleep(15)
            before = _ticks(child.pid)
            time.sleep(args.seconds)
            after = _ticks(child.pid)
        finally:
            child.stdin.close()  # the child shuts its Ray down and exits
            try:
                child.wait(timeout=120)
            except subprocess.TimeoutExpired:
                child.kill()
    tick = os.sysconf("SC_CLK_TCK")
    rows = sorted(((after[p][0] - before[p][0]) / tick / args.seconds, p)
                  for p in after if p in before)[::-1]
    print(f"settings: {' '.join(args.settings) or '(none)'}; {args.seconds:.0f} s window")
    for share, pid in rows:
        if share > 0:
            print(f"{share * 100:6.2f}% of a core  {after[pid][1]}")
    print(f"total {sum(r[0] for r in rows) * 100:.2f}% of one core")


if __name__ == "__main__":
    main()
