"""Time one command in-process, next to the CPU's name and its fp32 matmul peak measured in the
same process.

    python benchmarks/timed.py module forwardforward train mnist-quick --out /tmp/run
    python benchmarks/timed.py path examples/custom_network.py

``module NAME ARGS...`` runs ``python -m NAME ARGS...``; ``path FILE ARGS...`` runs a script. To
time another checkout of the library, put its ``src`` first on ``PYTHONPATH``. Nothing else
should run on the machine meanwhile.
"""

from __future__ import annotations

import runpy
import sys
import time

import torch


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """fp32 GFLOP/s of an ``n x n`` product, after a warm-up."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    tic = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - tic) / 1e9


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        import platform

        return platform.processor() or "unknown CPU"


def main() -> int:
    if len(sys.argv) < 3 or sys.argv[1] not in ("module", "path"):
        print(__doc__, file=sys.stderr)
        return 2
    mode, target, *rest = sys.argv[1:]
    peak = matmul_peak()
    threads = torch.get_num_threads()
    print(
        f"CPU: {cpu_name()}; {threads} threads; fp32 matmul peak {peak:.0f} GFLOP/s",
        file=sys.stderr,
    )
    sys.argv = [target, *rest]
    tic = time.perf_counter()
    code = 0
    try:
        if mode == "module":
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(target, run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    print(f"wall time {time.perf_counter() - tic:.1f} s (exit {code})", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
