"""keep_freed_memory: large tensors stop being page-faulted afresh on every allocation."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent(
    """
    import resource, sys, torch
    from forwardforward.perf import keep_freed_memory
    print(keep_freed_memory() if sys.argv[1] == "keep" else "skipped")
    torch.empty(4000, 4000).fill_(1.0)  # 64 MiB: above glibc's largest mmap threshold
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.empty(4000, 4000).fill_(1.0)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _faults(mode: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_large_tensors_reuse_heap_memory() -> None:
    status, kept = _faults("keep")
    if status != "True":
        pytest.skip("the C library has no mallopt (not glibc)")
    _, default = _faults("default")
    tensor = 4000 * 4000 * 4 // 4096  # pages of one 64 MiB tensor
    assert default > 4 * tensor  # glibc maps and faults each of the five blocks afresh
    assert kept <= 2 * tensor  # kept: the heap's pages are reused


def test_the_environment_variable_turns_it_off() -> None:
    import os

    env = {**os.environ, "FORWARDFORWARD_MALLOC": "system"}
    assert _faults("keep", env)[0] == "False"
