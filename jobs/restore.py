"""`python -m jobs.restore ...`: the entry point for `ray job submit`; same flags as `latentarc restore`."""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["restore", *sys.argv[1:]]))
