"""CPU share per process over a window, from /proc: ``python proc_share.py DELAY SECONDS``.

Start it beside a run (session 8: beside `latentarc compress` of one 48- or 96-image Kodak
shard, msh-n96-v2, one actor of 1.5 CPUs). It waits DELAY s, then prints each process's share of
one core over the next SECONDS s (user + system), with its nice value, and the total.
"""

from __future__ import annotations

import os
import sys
import time


def snapshot() -> dict[int, tuple[int, str, int]]:
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read()
            name = open(f"/proc/{pid}/cmdline").read().replace("\0", " ")[:60]
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        name = name or stat.split("(")[1].split(")")[0]
        out[int(pid)] = (int(fields[11]) + int(fields[12]), name, int(fields[16]))
    return out


def main() -> None:
    time.sleep(float(sys.argv[1]))
    window = float(sys.argv[2])
    a = snapshot()
    time.sleep(window)
    b = snapshot()
    tick = os.sysconf("SC_CLK_TCK")
    rows = sorted(((b[p][0] - a[p][0]) / tick / window, p) for p in b if p in a)[::-1]
    for share, pid in rows[:14]:
        print(f"{share * 100:6.1f}% pid {pid} ni {b[pid][2]} {b[pid][1]}")
    print("total", round(sum(r[0] for r in rows) * 100, 1), "% of one core")


if __name__ == "__main__":
    main()
