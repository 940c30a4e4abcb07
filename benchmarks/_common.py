"""What the benchmark scripts share: the machine's description, peak memory, result files."""

from __future__ import annotations

import json
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


MATRIX_UNITS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")
"""CPU flags that set the speed of a bf16 or fp32 product, fastest first."""


def cpu_model() -> str:
    """The CPU's model name and its fastest matrix instructions (Linux ``/proc/cpuinfo``: bf16
    is fast with AMX and slow on AVX2 alone), else the machine's architecture."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    fields = dict(line.partition(":")[::2] for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    name = fields.get("model name", platform.machine())
    flags = set(fields.get("flags", "").split())
    unit = next((f for f in MATRIX_UNITS if f in flags), None)
    return f"{name}, {unit}" if unit else name


def device_name(device: torch.device) -> str:
    """The CPU's or the GPU's name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({cpu_model()})"


def environment(device: torch.device) -> dict[str, Any]:
    """Device, threads, torch version and date, stored beside every result."""
    return {
        "device": device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, device: torch.device, reps: int = 20) -> float:
    """FLOP/s of a (2048 x 2000) @ (2000 x 2000) product into a preallocated output: the
    fastest of ``reps`` products (the peak, not a typical time)."""
    a = torch.randn(2048, 2000, device=device).to(dtype)
    b = torch.randn(2000, 2000, device=device).to(dtype)
    c = torch.empty(2048, 2000, device=device, dtype=dtype)
    sync(device)
    tic = time.perf_counter()
    torch.mm(a, b, out=c)  # warm-up; a dtype this slow (no bf16 units) is timed once more only
    sync(device)
    if time.perf_counter() - tic > 1.0:
        reps = 1
    times = []
    for _ in range(reps):
        sync(device)
        tic = time.perf_counter()
        torch.mm(a, b, out=c)
        sync(device)
        times.append(time.perf_counter() - tic)
    return 2 * 2048 * 2000 * 2000 / min(times)


def matmul_peaks(device: torch.device) -> dict[str, float]:
    """FLOP/s of the product of :func:`matmul_peak` in fp32 and bf16, measured now (a timing
    is reported next to the peak measured in the same process)."""
    return {name: matmul_peak(dtype, device) for name, dtype in
            (("fp32", torch.float32), ("bf16", torch.bfloat16))}  # fmt: skip


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: ``max_memory_allocated``. CPU: the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, else KiB


def command(script: str, argv: list[str]) -> str:
    """The command line that reproduces a result."""
    return " ".join(["python", f"benchmarks/{script}", *argv])


def write_result(name: str, result: dict[str, Any]) -> Path:
    """``results/<name>.json``."""
    path = RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}", flush=True)
    return path
