"""keep_freed_memory: large tensors stop being page-faulted afresh on every allocation."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forwardforward.perf import cpu_flags, fast_bf16, resolve_precision

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


CPUINFO = "processor\t: 0\nvendor_id\t: {vendor}\nflags\t\t: {flags}\nbugs\t\t: none\n\n"


@given(
    flags=st.lists(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=12),
        max_size=30,
    )
)
def test_cpu_flags_reads_the_flags_line(flags: list[str]) -> None:
    text = CPUINFO.format(vendor="AuthenticAMD", flags=" ".join(flags))
    assert cpu_flags(text) == frozenset(flags)


def test_cpu_flags_without_a_flags_line_is_empty() -> None:
    assert cpu_flags("processor\t: 0\nmodel name\t: something\n") == frozenset()
    assert cpu_flags("") == frozenset()


@pytest.mark.parametrize(
    ("flags", "fast"),
    [
        ("fpu sse2 avx avx2 fma", False),  # AMD EPYC (AVX2): bf16 is emulated, slow
        ("avx2 avx512f avx512bw", False),  # AVX-512 without its bf16 instructions
        ("avx2 avx512f avx512_bf16", True),
        ("avx2 avx512f amx_tile amx_bf16", True),  # Sapphire Rapids Xeon
    ],
)
def test_auto_precision_follows_the_cpu_units(flags: str, fast: bool) -> None:
    have = cpu_flags(CPUINFO.format(vendor="x", flags=flags))
    assert fast_bf16("cpu", have) is fast
    assert resolve_precision("auto", "cpu", have) == ("bf16" if fast else "fp32")
    for fixed in ("fp32", "bf16"):  # a precision named outright is kept
        assert resolve_precision(fixed, "cpu", have) == fixed


def test_auto_precision_on_an_unknown_device_is_fp32() -> None:
    assert resolve_precision("auto", "mps", frozenset({"amx_bf16"})) == "fp32"
