"""Process-wide memory tuning for the daemon's threads.

glibc's malloc gives each thread that allocates an arena of its own (up to eight per core),
and memory freed in one arena is not reused by another. syncd runs dozens of short-lived
allocating threads at once (detail fetches, batches in flight, targets), so its heap grew
about 25 MB more than it uses: 153 MB peak against 129 MB with two arenas in the 10,000-message
benchmark at 32 details in flight, at the same speed (tests/perf/README.md).
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["ARENAS", "cap_malloc_arenas"]

ARENAS = 2
_M_ARENA_MAX = -8  # mallopt's parameter number in glibc's <malloc.h>


def cap_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Limit glibc's malloc to ``arenas`` arenas; True when it was done. An operator's
    ``MALLOC_ARENA_MAX`` or ``glibc.malloc.arena_max`` tunable wins (glibc reads them itself);
    another C library is left alone."""
    if "MALLOC_ARENA_MAX" in os.environ or "arena_max" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        # The symbols this process already has (libc among them): no ldconfig needed.
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas))
