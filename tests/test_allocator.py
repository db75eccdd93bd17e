"""With LATENTARC_MALLOC=keep, models.allocator keeps a freed large block resident (no munmap,
no trim), so a learned codec does not fault its working set in again for every image. Without
it glibc's defaults stay (bounded worker memory). Loading learned weights asks for it."""

import os
import subprocess
import sys

import pytest
from conftest import REPO

SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from models.allocator import keep_freed_memory

def rss_mib():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) // 1024

tuned = keep_freed_memory()
block = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB, touched
before = rss_mib()
del block
print(tuned, before - rss_mib())
"""


def _freed_mib(env_extra: dict[str, str]) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "LATENTARC_MALLOC"} | env_extra
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(REPO)], capture_output=True, text=True,
                         env=env, timeout=120, check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_blocks_stay_resident_only_when_asked():
    tuned, returned = _freed_mib({"LATENTARC_MALLOC": "keep"})
    assert tuned == "True" and returned < 8  # the 64 MiB block stayed in the process
    tuned, returned = _freed_mib({})
    assert tuned == "False" and returned > 56  # glibc's default: unmapped at once


def test_loading_learned_weights_asks_for_the_allocator_setting():
    from models import allocator
    from models.registry import get_codec

    get_codec("msh-n96-v2", 4.0)
    assert allocator._done is not None  # asked, once per process
