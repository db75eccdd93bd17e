"""`python -m jobs.verify ...`: the entry point for `ray job submit`; same flags as `latentarc verify`."""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["verify", *sys.argv[1:]]))
