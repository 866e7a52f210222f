"""Keep freed memory in the process for the next simulation instead of handing it back.

A fleet simulation allocates and frees gigabytes of arrays per call (100 site-years: about
2 GB of results). glibc returns every block above its mmap threshold to the kernel when it is
freed, so the next call, or the next chunk of a long run, pays for page faults and zeroing of
all of it again; on the 2-vCPU virtual machines we measure on that is 1.5-4 s of system time
per 100 site-years, as much as the physics. Raising the thresholds keeps those pages in the
process heap for reuse. The price is that a process's memory stays at its peak until it
exits, which suits the batch runs that call this (`--historical` and its benchmark).
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 30  # blocks up to 1 GiB come from the heap and are reused
TRIM_THRESHOLD_BYTES = (1 << 31) - 1  # free memory at the heap's top is kept up to 2 GiB


def retain_freed_memory() -> bool:
    """Tune glibc's allocator as described above; False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
