"""How a learned-codec worker uses glibc's malloc: keep freed blocks through a batch, hand
them back after it.

A learned codec allocates and frees the same large tensors for every image (one Kodak image's
first analysis layer alone is 38 MB). glibc serves blocks that large with a fresh ``mmap`` and
unmaps them on free, and trims its heap when the top is free, so every image faults its working
set in again, zero-filled: about 190,000 page faults a second and 0.45 of a core in the kernel
on 2 cores.

``keep_freed_memory`` (called by the compress and restore workers, whose processes the pipeline
owns; ``LATENTARC_MALLOC=glibc`` leaves glibc's defaults) turns mmap off and raises the trim
threshold, so freed blocks stay for the next image. Alone, that made workers 1.2-1.5x faster
but let memory grow with the shard: freed blocks fragment, and one compress worker peaked at
1,717 MiB on a 176-row shard (benchmarks/pipeline/msh-n96-v2/results-run6.md).
``release_freed_memory`` (``malloc_trim``) after each codec batch bounds that again. Together,
48 Kodak rows code 1.28-1.42x faster than with glibc's defaults (benchmarks/pipeline/allocator/),
and in the pipeline benchmark a 176-row shard peaks within 8 % of 8-row shards (results-run7.md).
"""

from __future__ import annotations

import ctypes
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
                # glibc's soname, not ctypes.util.find_library: that runs `ldconfig -p` in a
                # forked child, from every worker as it starts (for a moment a second
                # "ray::CompressWorker" process), and musl's libc has another name anyway.
                lib = ctypes.CDLL("libc.so.6")
                lib.mallopt.argtypes, lib.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
                lib.malloc_trim.argtypes, lib.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
                _libc = lib
            except (OSError, AttributeError):  # not glibc (musl has no mallopt)
                pass
    return _libc or None


def keep_freed_memory() -> bool:
    """Tune glibc's malloc for this process, once, unless ``LATENTARC_MALLOC=glibc``; returns
    whether it is tuned.

    Process-wide and lasting: call it in a process the pipeline owns (a compress or restore
    actor), not in library code that shares a user's process (``Archive.get``, the
    ``ArchiveDataset``), where nothing trims after each batch. Pair it with
    ``release_freed_memory`` between units of work, or freed memory is never returned."""
    global _done
    if _done is not None:
        return _done
    setting = os.environ.get(ENV, "keep").lower()
    if setting not in ("keep", "glibc"):
        raise ValueError(f"{ENV}={setting!r}: use keep (the default) or glibc")
    _done = False
    libc = _glibc()
    if setting == "glibc" or libc is None:
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
