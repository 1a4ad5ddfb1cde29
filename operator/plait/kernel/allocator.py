"""The C allocator's settings for a long-running process.

glibc's malloc gives a block of at least 128 KiB a mapping of its own, returned to the
kernel when it is freed. But the threshold moves: freeing such a block raises it to that
block's size (glibc's "dynamic mmap threshold"). The operator frees many blocks of 256 KiB
(asyncio's TLS layer reads 256 KiB at a time), so soon after start-up blocks of up to that
size are cut from the arenas instead, where they fragment memory that is rarely given
back. A 3,000-item fan-out peaked at 192.8 MiB with the moving threshold and 178.1 MiB
with it fixed (docs/benchmarks.md).

:func:`fix_mmap_threshold` sets the threshold once, as ``MALLOC_MMAP_THRESHOLD_`` would,
which also turns the moving off: every large block is its own mapping again. It is a
no-op where the C library is not glibc, and when the environment already sets the
threshold (the operator's owner chose).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

__all__ = ["MMAP_THRESHOLD_BYTES", "fix_mmap_threshold"]

logger = logging.getLogger(__name__)

#: glibc's own starting value: blocks from 128 KiB up get their own mapping.
MMAP_THRESHOLD_BYTES = 128 * 1024

_M_MMAP_THRESHOLD = -3  # from glibc's <malloc.h>


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes; True when it was set here."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # a C library without mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, threshold) != 1:  # musl's mallopt does nothing: 0
        logger.debug("the C library did not take an mmap threshold of %d bytes", threshold)
        return False
    return True
