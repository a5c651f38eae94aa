"""duplex: a full-duplex speech dialogue runtime.

The core (this package) is sans-I/O: it consumes 20 ms audio frames and time
and returns events. Models, the server, the local client and the benchmark
are drivers around it.
"""

import ctypes
import ctypes.util
import os
import sys

__version__ = "0.1.0"

# numpy's OpenBLAS keeps one worker per core spinning for a while after every product.
# Ours are small (state heads, mel filters), so the workers only spin: a sixth of both
# cores under four server sessions (perf). Set before any module imports numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _steady_malloc(arenas: int = 2, mmap_threshold: int = 512 * 1024) -> None:
    """Keep the process's memory where warm-up leaves it (glibc's malloc, Linux).

    glibc gives each new thread its own arena, up to 8 a core, and the server
    starts and ends threads with every session: capped at two, the recognizer's
    buffers stop adding up across arenas (+20 MB over 40 mixed decodes in two
    threads, against +140 MB). And glibc raises its mmap threshold to the size
    of every large block freed, so later blocks that size come from the heap,
    which it seldom gives back: fixed at 512 KiB, a 20-minute soak stayed flat
    where it had stepped up 87 MB (docs/decisions.md, "Memory that stays flat").
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
        libc.mallopt(-3, mmap_threshold)  # M_MMAP_THRESHOLD (and no dynamic raising)
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        pass


_steady_malloc()
