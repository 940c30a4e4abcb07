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


BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
"""CPU flags (Linux ``/proc/cpuinfo``) of a unit that multiplies bf16 faster than fp32. Without
one (AVX2 or AVX-512F alone) oneDNN converts bf16 to fp32 and back: a conv net's step under bf16
autocast was 15 times slower than in fp32 on a 2-core AMD EPYC (0.35 s against 5.3 s)."""


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (or the text given); empty where that
    file is missing (macOS, Windows)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def fast_bf16(device_type: str, flags: frozenset[str] | None = None) -> bool:
    """Whether bf16 products are faster than fp32 ones on this kind of device: a CUDA GPU
    that supports bf16, or a CPU with AMX-BF16 or AVX512-BF16 (``flags``: the CPU's, read from
    ``/proc/cpuinfo`` when not given)."""
    import torch

    if device_type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device_type == "cpu":
        return any(f in (cpu_flags() if flags is None else flags) for f in BF16_CPU_FLAGS)
    return False


def resolve_precision(precision: str, device_type: str, flags: frozenset[str] | None = None) -> str:
    """``train.precision`` made concrete: ``auto`` is ``bf16`` where :func:`fast_bf16` holds
    and ``fp32`` elsewhere; ``fp32`` and ``bf16`` stay as they are."""
    if precision != "auto":
        return precision
    return "bf16" if fast_bf16(device_type, flags) else "fp32"
