"""CPU share per thread of the Ray Data compress actor over a window, from /proc:
``python thread_share.py DELAY SECONDS``. Start it beside `latentarc compress`, as
proc_share.py; it finds the process whose command line names ``MapWorker``.
"""

from __future__ import annotations

import os
import sys
import time


def find() -> int:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if "MapWorker" in open(f"/proc/{pid}/cmdline").read():
                return int(pid)
        except OSError:
            continue
    raise SystemExit("no MapWorker process")


def snapshot(pid: int) -> dict[int, tuple[int, str]]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = open(f"/proc/{pid}/task/{tid}/stat").read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(tid)] = (int(fields[11]) + int(fields[12]), stat.split("(")[1].split(")")[0])
    return out


def main() -> None:
    time.sleep(float(sys.argv[1]))
    pid, window = find(), float(sys.argv[2])
    a = snapshot(pid)
    time.sleep(window)
    b = snapshot(pid)
    tick = os.sysconf("SC_CLK_TCK")
    print("pid", pid)
    rows = sorted(((b[t][0] - a[t][0]) / tick / window, t) for t in b if t in a)[::-1]
    for share, tid in rows[:10]:
        print(f"{share * 100:6.1f}% tid {tid} {b[tid][1]}")


if __name__ == "__main__":
    main()
