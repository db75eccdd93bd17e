"""Peak memory and time of ``write_index`` (the driver's last step) as an archive grows in rows.

    python benchmarks/pipeline/index-sort/measure.py --out /tmp/is [--code DIR] \
        [--rows 1280000 5120000] [--sort-rows N ...]

Writes, for each size, a local archive directory whose ``shards/`` hold Parquet files of
1,000 rows each with the one column ``write_index`` reads (``key``: 24 characters, in a
random order across the archive, the worst case for the sort), then runs ``write_index`` in a
fresh interpreter (so its peak RSS, VmHWM, is its own) with the code of ``--code`` (default:
this checkout; another commit's worktree to compare), once per ``--sort-rows`` value (0: the
code's default; a value the code does not take is an error there). Prints a table and writes
``results.json``; every run's index is checked against the first run's, byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
PER_FILE = 1000


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def step(archive: str, sort_rows: int) -> dict:
    """One write_index, in this (fresh) interpreter."""
    from pipeline.archive import write_index

    shards = sorted(p.stem for p in (Path(archive) / "shards").iterdir())
    started = time.monotonic()
    if sort_rows:
        if "sort_rows" not in inspect.signature(write_index).parameters:
            raise SystemExit("this code's write_index has no sort_rows")
        rows = write_index(archive, shards, sort_rows=sort_rows)
    else:
        rows = write_index(archive, shards)
    seconds = time.monotonic() - started
    digest = hashlib.sha256((Path(archive) / "_index.parquet").read_bytes()).hexdigest()
    return {"rows": rows, "seconds": seconds, "peak_rss_mb": _peak_rss_mb(), "sha256": digest}


def build(directory: Path, rows: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    (directory / "shards").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(rows // PER_FILE):
        keys = [f"img-{v:020x}" for v in rng.integers(0, 1 << 63, PER_FILE)]
        pq.write_table(pa.table({"key": keys}), directory / "shards" / f"part-{i:06d}.parquet",
                       row_group_size=250)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="work directory (made anew)")
    parser.add_argument("--code", type=Path, default=REPO,
                        help="the checkout whose code runs write_index (default: this one)")
    parser.add_argument("--rows", type=int, nargs="+", default=[1_280_000, 5_120_000])
    parser.add_argument("--sort-rows", type=int, nargs="+", default=[0],
                        help="write_index's sort_rows for each run (0: the code's default)")
    parser.add_argument("--step", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        print(json.dumps(step(args.step[0], int(args.step[1]))))
        return 0
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    commit = subprocess.run(["git", "-C", str(args.code), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    results: dict = {"code": str(args.code), "commit": commit, "per_file": PER_FILE, "runs": []}
    for rows in args.rows:
        archive = args.out / f"rows{rows}"
        build(archive, rows)
        first = None
        for sort_rows in args.sort_rows:
            done = subprocess.run([sys.executable, __file__, "--out", str(args.out), "--step",
                                   str(archive), str(sort_rows)], cwd=args.code,
                                  env={"PYTHONPATH": str(args.code), "PATH": "/usr/bin:/bin"},
                                  capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"write_index failed:\n{done.stderr[-3000:]}")
            run = {"archive_rows": rows, "sort_rows": sort_rows,
                   **json.loads(done.stdout.strip().splitlines()[-1])}
            first = first or run["sha256"]
            run["same_as_first"] = run["sha256"] == first
            results["runs"].append(run)
            print(json.dumps(run), flush=True)
        shutil.rmtree(archive)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\ncode {results['code']} ({commit})")
    print("| index rows | sort_rows | s | peak RSS MB | same index as the first run |")
    print("|---|---|---|---|---|")
    for r in results["runs"]:
        print(f"| {r['archive_rows']:,} | {r['sort_rows'] or 'default'} | {r['seconds']:.1f} | "
              f"{r['peak_rss_mb']:.0f} | {'yes' if r['same_as_first'] else 'NO'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
