"""Optionally keep freed memory in the process instead of handing it back to the kernel (glibc).

A learned codec allocates and frees the same large tensors for every image (one Kodak image's
first analysis layer alone is 38 MB). glibc serves blocks that large with a fresh ``mmap`` and
unmaps them on free, and trims its heap when the top is free, so every image faults its working
set in again, zero-filled: about 190,000 page faults a second and 0.45 of a core in the kernel
on 2 cores. With mmap off and trimming raised to 1 GiB, the same 48 images coded 1.17-1.52x
faster (kernel time 0.45 -> 0.04 cores), and the pipeline benchmark's compress ran 1.3-1.5x
faster (benchmarks/pipeline/allocator/, msh-n96-v2/results-run6.md).

It is opt-in (``LATENTARC_MALLOC=keep`` in the workers' environment) because it costs the
bounded memory the pipeline promises: freed blocks stay resident and fragment, and in that
benchmark one compress worker peaked at 1,717 MiB on a 176-row shard against 1,219 MiB on 8-row
shards (873 and 866 MiB with glibc's defaults, run 5).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

ENV = "LATENTARC_MALLOC"
TRIM_ENV = "LATENTARC_MALLOC_TRIM"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # <malloc.h>
TRIM_THRESHOLD = 1 << 30

_done: bool | None = None
_libc: ctypes.CDLL | None | bool = None  # False: looked, not glibc


def _glibc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux"):
            try:
                lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                lib.mallopt.argtypes, lib.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
                lib.malloc_trim.argtypes, lib.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
                _libc = lib
            except (OSError, AttributeError):  # not glibc (musl has no mallopt)
                pass
    return _libc or None


def keep_freed_memory() -> bool:
    """With ``LATENTARC_MALLOC=keep``, tune glibc's malloc for this process, once; returns
    whether it is tuned.

    Process-wide and lasting: call it where a process is about to run a learned codec (loading
    its weights does), not in library code that shares a process it does not own."""
    global _done
    if _done is not None:
        return _done
    _done = False
    libc = _glibc()
    if os.environ.get(ENV, "").lower() != "keep" or libc is None:
        return False
    _done = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done


def release_freed_memory() -> bool:
    """Hand the free pages of every malloc arena back to the kernel (glibc ``malloc_trim(0)``);
    returns whether any were released. Call it between units of work whose memory is freed,
    e.g. after each codec batch.

    Why: glibc returns freed memory only from the top of a heap, so blocks freed in the middle
    stay resident; over a long shard they fragment, and a worker's peak grows with the number
    of images it has coded rather than with the batch it holds (benchmarks/pipeline/batch-memory).
    ``LATENTARC_MALLOC_TRIM=off`` turns it off (for measuring)."""
    if os.environ.get(TRIM_ENV, "").lower() == "off":
        return False
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
