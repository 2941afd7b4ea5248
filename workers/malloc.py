"""Fixed glibc malloc thresholds for a worker, so a TLS read never costs two page faults.

uvloop's TLS layer reads decrypted data with `SSLObject.read(256 KiB)`: CPython allocates the whole
256 KiB, OpenSSL fills ~100 bytes, and the object is shrunk in place. glibc serves an allocation
above its mmap threshold (128 KiB at start) with a fresh `mmap`: two page faults, then `mremap` and
`munmap` when it shrinks and dies. glibc raises that threshold by itself only when it frees a large
mapped chunk, and a shrunk chunk is never large, so whether a worker pays this on every HTTPS read
depended on what the process had allocated and freed before. Measured on the benchmark VM: one such
read costs 18.8 us with 2 faults in a fresh interpreter, 2.6 us with the thresholds below (no faults);
a minimal uvloop TLS proxy ran at 55 us per request in the bad state and 27 us in the good one
(docs/performance.md, "TLS").

The thresholds fixed here are what glibc's own adjustment reaches after its first large free
(allocations up to 1 MiB from the heap; the heap top trimmed above 8 MiB free), made deterministic.
Must not: change anything on a C library without `mallopt` (musl): the worker then runs as before.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1  # glibc malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 20  # above uvloop's 256 KiB TLS read and its 256 KiB socket reads
TRIM_THRESHOLD_BYTES = 8 << 20  # free heap kept before giving it back: no brk churn between requests


def tune_malloc() -> bool:
    """Fix the mmap and trim thresholds of this process's glibc malloc; False where there is no `mallopt`."""
    try:  # the process's own symbols include its C library's: no library search (find_library runs ldconfig)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
