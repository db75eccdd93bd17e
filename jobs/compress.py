"""`python -m jobs.compress ...`: the entry point for `ray job submit`; same flags as `latentarc compress`."""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["compress", *sys.argv[1:]]))
