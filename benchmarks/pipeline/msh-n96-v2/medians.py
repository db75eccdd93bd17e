"""The targets over repeated runs of the same pipeline benchmark command: one table, a column
per run and the median, from the runs' results.json files.

One run cannot settle a target that its noise spans (README: the efficiency at the default
actor count was 0.866-0.950 over runs 10-13 of unchanged code), so the README judges on medians;
this script makes that table from the files instead of by hand:

    python benchmarks/pipeline/msh-n96-v2/medians.py results-run10.json results-run11.json ...

(paths relative to this folder, or absolute). Run numbers come from the file names.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _pipeline(d: dict, op: str, layout: str, actors: int, key: str) -> float:
    return next(r[key] for r in d["pipeline"]
                if r["op"] == op and r["layout"] == layout and r["actors"] == actors)


# (label, how to read it from a results.json, whether the median means anything)
ROWS = [
    ("bare encode+decode+PSNR, img/s",
     lambda s: next(b["images_per_s"] for b in s["derived"]["bare"] if b["what"] == "encode+decode+PSNR"),
     False),
    ("compress, 8-row shards, default actor count: efficiency (target >= 0.9)",
     lambda s: s["derived"]["targets"]["efficiency_ge_0.9_default_actors"]["value"], True),
    ("compress, big shard, 1 actor: efficiency (target >= 0.9)",
     lambda s: s["derived"]["targets"]["efficiency_ge_0.9"]["value"], True),
    ("CPU efficiency, big shard, 1 actor",
     lambda s: _pipeline(s["derived"], "compress", "big", 1, "cpu_efficiency"), True),
    ("in-worker (encode_shard, no Ray), reader thread on",
     lambda s: s["derived"]["targets"]["in_worker_efficiency_ge_0.9"]["value"], True),
    ("largest big/small RSS ratio, single run (target <= 1.10)",
     lambda s: s["derived"]["targets"]["big_shard_rss_within_10pct"]["value"], False),
    # Not a median: runs before 15 subtracted the kept members' raw bytes (jobs/payload_bytes.py),
    # and run 15 also has the session-14 writer encodings; the figures measure different things.
    ("overhead B/row (target <= 128; before run 15: members counted raw)",
     lambda s: s["derived"]["targets"]["overhead_le_128_B_per_row"]["value"], False),
]


def table(paths: list[Path]) -> str:
    runs = [json.loads(p.read_text()) for p in paths]
    commands = {r["command"].split(" --out ")[0] for r in runs}
    names = [re.sub(r"^results-?", "", p.stem) or p.parent.name for p in paths]
    lines = [f"| figure | {' | '.join(names)} | median |", "|---|" + "---|" * (len(runs) + 1)]
    for label, read, median in ROWS:
        values = [read(r) for r in runs]
        mid = f"{statistics.median(values):.3f}" if median else ""
        lines.append(f"| {label} | {' | '.join(f'{v:.3f}' for v in values)} | {mid} |")
    if len(commands) > 1:
        lines += ["", "Warning: the runs' commands differ (apart from --out):",
                  *(f"- `{c}`" for c in sorted(commands))]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    paths = [p if p.is_absolute() or p.exists() else HERE / p for p in map(Path, argv)]
    print(table(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
