"""One restore of a 176-row msh-n96-v2 archive through Ray (1 actor, 1.5 CPUs); prints seconds.

    # in each checkout to compare, alternated; WORK holds that checkout's archive (built once)
    (cd CHECKOUT && python /path/to/restore_once.py WORK 176)

Session 19 used it to ask whether restore had become slower in code since run 15 (commit
edaa155): run 16's restore was 25 % slower than run 15's, and restore does not use the check
thread that run 16 introduced. Run in a worktree of edaa155 and one of 0c7ff33, alternated
twice: 64.06 and 67.88 s against 64.65 and 65.33 s, so no. Run it from the checkout under
test (``cd``): it and Ray's workers import the pipeline from the current directory.
"""

import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.path.join(os.getcwd(), "benchmarks/pipeline/batch-memory"))

from pipeline.runner import RayOptions, prefer_loopback  # noqa: E402

prefer_loopback()
import ray  # noqa: E402

from pipeline.compress import compress  # noqa: E402
from pipeline.restore import restore  # noqa: E402
from pipeline.shard_encode import Guard  # noqa: E402

KODAK = Path(__file__).resolve().parents[4] / "shared" / "datasets" / "kodak"


def main() -> None:
    work, rows = Path(sys.argv[1]), int(sys.argv[2])
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(work / "ray"))
    options = RayOptions(actors=1, num_cpus=1.5)
    if not (work / "arc").exists():
        from measure import make_tars

        (work / "src").mkdir(parents=True, exist_ok=True)
        make_tars(KODAK, work / "src", 1, rows)
        started = time.time()
        compress([str(work / "src")], str(work / "arc"), "msh-n96-v2", ray_options=options,
                 progress=False, guard=Guard(size=False))
        print("compress", round(time.time() - started, 1))
    shutil.rmtree(work / "out", ignore_errors=True)
    started = time.time()
    report = restore(str(work / "arc"), str(work / "out"), ray_options=options, progress=False)
    print(os.getcwd(), "restore", round(time.time() - started, 2), report.ok, flush=True)


if __name__ == "__main__":
    main()
