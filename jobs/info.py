"""`python -m jobs.info ...`: the entry point for `ray job submit`; same flags as `latentarc info`."""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["info", *sys.argv[1:]]))
