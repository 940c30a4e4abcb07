"""Process-wide performance settings for training on the CPU.

PyTorch allocates CPU tensors with the C library's ``malloc``. glibc serves every block above
32 MiB (often less) with a fresh ``mmap`` and unmaps it on free, so each large activation or
gradient is page-faulted and zeroed by the kernel again on every step: at batch 5000 on a 4x2000
net that is millions of page faults a step and about 15% of the step time. :func:`keep_freed_memory`
makes glibc serve large blocks from the heap and keep freed memory for reuse.

The ``ff`` command and the benchmarks call it; a Python program can call it once at start. The
cost: the process's resident memory stays at its peak instead of shrinking after it. Set
``FORWARDFORWARD_MALLOC=system`` to leave the allocator as it is.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
from collections.abc import Iterator

MALLOC_ENV_VAR = "FORWARDFORWARD_MALLOC"

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Serve large allocations from the heap and never return freed heap memory to the system.

    Returns whether the setting took effect: True on Linux with glibc, False elsewhere (other C
    libraries, macOS, Windows) and when ``$FORWARDFORWARD_MALLOC`` is ``system``.
    """
    if os.environ.get(MALLOC_ENV_VAR, "") == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)  # glibc has it; musl does not
    if mallopt is None:
        return False
    # no mmap for large blocks (glibc still falls back to mmap if the heap cannot grow), and no
    # trimming of the heap's free top
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def flushes_denormals() -> bool:
    """Whether the CPU now flushes subnormal float32 results to zero."""
    import torch

    return bool((torch.tensor(1e-37) / torch.tensor(1e6)).item() == 0.0)


@contextlib.contextmanager
def flush_denormal(enabled: bool) -> Iterator[None]:
    """Flush subnormal floats to zero (or not) inside the block, then restore the earlier mode.

    Subnormal values (below about 1e-38 in float32) take a slow path on the CPU: the tiny
    activities of a net trained under the inverted objective made rff-mnist's step several
    times slower after one epoch.
    """
    import torch

    before = flushes_denormals()
    torch.set_flush_denormal(enabled)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)
