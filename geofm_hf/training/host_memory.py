"""Host memory of CPU ranks: make freed tensors go back to the operating system.

glibc serves large allocations with ``mmap`` and returns them on ``free``, but its threshold for
"large" is dynamic: each time a mapped chunk is freed, the threshold rises to that chunk's size
(up to 32 MiB). After the first few freed tensors, every allocation below 32 MiB (block weights
gathered by FSDP2, their gradients, per-block activations) comes from the heap instead, and a
freed heap chunk that is not at the top of the heap stays in the process. A sharded rank then
keeps the full size of every block it ever gathered: measured on 2 FSDP2 CPU ranks, vit-huge
from scratch peaked at 7.0 GiB per rank (71 % of one full training state) with glibc's default
and 5.7 GiB (57 %) with the threshold pinned (``python benchmarks/bench_memory.py``).

Pinning the threshold (``mallopt(M_MMAP_THRESHOLD, ...)``, which also turns the dynamic
adjustment off) keeps what is freed from being retained. It costs a page fault per page of each
new large tensor; on the runs above the step time did not change (the gathers dominate).

GPU ranks are untouched: their tensors live in the device's caching allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt's parameter number for M_MMAP_THRESHOLD in glibc's <malloc.h>.
_M_MMAP_THRESHOLD = -3
DEFAULT_THRESHOLD_BYTES = 1 << 20


def _glibc():
    if os.name != "posix":
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    # musl and macOS have no mallopt, or one that ignores M_MMAP_THRESHOLD.
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    return libc


def pin_mmap_threshold(threshold_bytes: int = DEFAULT_THRESHOLD_BYTES) -> str:
    """Pin glibc's mmap threshold for this process; returns a line saying what was done.

    An explicit ``MALLOC_MMAP_THRESHOLD_`` in the environment (glibc's own tuning variable) wins:
    the user chose, so nothing is changed."""
    if threshold_bytes <= 0:
        raise ValueError(f"threshold_bytes must be > 0: found {threshold_bytes}.")
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return (
            "host allocator: MALLOC_MMAP_THRESHOLD_="
            f"{os.environ['MALLOC_MMAP_THRESHOLD_']} from the environment, left as set"
        )
    libc = _glibc()
    if libc is None:
        return "host allocator: not glibc, left as is"
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    if libc.mallopt(_M_MMAP_THRESHOLD, int(threshold_bytes)) != 1:
        return "host allocator: glibc refused the mmap threshold, left as is"
    return (
        f"host allocator: glibc mmap threshold pinned at {threshold_bytes / 2**20:g} MiB "
        "(freed tensors return to the OS; --cpu_release_freed_memory false to keep glibc's)"
    )
