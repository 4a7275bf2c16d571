"""Keep freed memory in the process, so a training step does not page-fault its big buffers in anew.

glibc's malloc serves an allocation above its mmap threshold (at most 32 MiB with the dynamic
default) with a fresh `mmap` and returns it to the kernel on `free`. A training step allocates
and frees tensors that large every step: the dense gradient of `minilm-l6`'s word embeddings is
30,522 x 384 fp32 = 45 MiB (`mpnet-base`'s 90 MiB), and the kernel zero-fills every one of
its pages again on first touch. Measured on the 2-core AMD EPYC VM (`minilm-l6`, bf16): about
12,300 minor page faults per step, 38 with the thresholds below; on a quiet machine that made a
step about 2 % faster at one thread and nothing measurable at two. See docs/results.md (issue 20).
`fit` calls it for single-process runs only.

`retain_freed_memory()` raises the mmap threshold and the trim threshold, so such buffers come
from the heap and are reused. The price is a resident size that stays at its peak (what
training reaches anyway), plus a warm-up: in the first steps a small allocation can split a
freed big chunk, so the next step takes fresh pages again until the heap holds enough pieces
(up to ~8 extra copies of a 45 MiB buffer in tests/test_malloc.py, then none). Linux with
glibc only; elsewhere, or with `SLIMTEXT_KEEP_FREED_MEMORY=0`, it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30  # allocations below 1 GiB come from the heap
TRIM_THRESHOLD = (1 << 31) - 1  # keep up to 2 GiB of freed heap instead of returning it

_done: bool | None = None


def retain_freed_memory() -> bool:
    """Set glibc's thresholds once per process; True when they are in effect."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if sys.platform != "linux" or os.environ.get("SLIMTEXT_KEEP_FREED_MEMORY", "1") == "0":
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt  # absent from musl
    except (OSError, AttributeError):
        return _done
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
