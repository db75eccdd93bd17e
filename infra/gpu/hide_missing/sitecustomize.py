"""For a CPU dry run of pipeline_bench.sh: hide the packages that this machine's .venv has and
the lent GPU image lacks, in every Python process that starts (PYTHONPATH=infra/gpu/hide_missing;
Ray's workers and agents inherit it). Every finder on sys.meta_path answers None for them, as
if they were not installed, so code that probes with importlib.util.find_spec sees them absent.

The list: `pip list` of .venv against the GPU image's package list in the device tool's
KINDS.md (2026-11-17), top-level modules of what a pipeline run could import. Session 13: with
them hidden, the dry run still ran to the end.
"""
import sys

BLOCKED = ("opencensus", "opentelemetry", "pydantic", "pydantic_core", "smart_open", "virtualenv",
           "aiohttp_cors", "colorful", "s3fs", "botocore", "aiobotocore", "imagecodecs",
           "webdataset", "google.api_core", "google.auth", "py_spy")


def _blocked(name):
    return any(name == b or name.startswith(b + ".") for b in BLOCKED)


class _Hide:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if _blocked(name):
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self.finder, attr)


sys.meta_path[:] = [_Hide(f) for f in sys.meta_path]
