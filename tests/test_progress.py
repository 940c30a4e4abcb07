"""Progress output: a bar on a terminal, a few plain lines in a log, nothing when silenced."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from forwardforward import progress as progress_module
from forwardforward.errors import ConfigError
from forwardforward.progress import LineProgress, progress, progress_style


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_style_follows_the_stream_unless_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORWARDFORWARD_PROGRESS", raising=False)
    assert progress_style(True, _Terminal()) == "bar"
    assert progress_style(True, io.StringIO()) == "lines"
    assert progress_style(False, _Terminal()) == "off"
    monkeypatch.setenv("FORWARDFORWARD_PROGRESS", "bar")
    assert progress_style(True, io.StringIO()) == "bar"
    monkeypatch.setenv("FORWARDFORWARD_PROGRESS", "off")
    assert progress_style(True, _Terminal()) == "off"
    monkeypatch.setenv("FORWARDFORWARD_PROGRESS", "lines")
    assert progress_style(True, _Terminal()) == "lines"
    assert progress_style(False, _Terminal()) == "off"  # --no-progress wins
    monkeypatch.setenv("FORWARDFORWARD_PROGRESS", "fancy")
    with pytest.raises(ConfigError, match="FORWARDFORWARD_PROGRESS='fancy': choose one of"):
        progress_style(True, io.StringIO())


def test_a_log_gets_one_line_per_interval_at_most(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(progress_module, "clock", lambda: clock[0])
    monkeypatch.delenv("FORWARDFORWARD_PROGRESS", raising=False)
    out = io.StringIO()
    bar = progress(range(100), desc="ff epoch 1/1", unit="batch", stream=out)
    assert isinstance(bar, LineProgress)
    for i in bar:
        clock[0] = i * 0.5  # 100 steps over 50 s: a line every 10 s at most
        if i == 30:
            bar.set_postfix({"loss0": "0.6931"})
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert 4 <= len(lines) <= 5, lines
    assert lines[0].startswith("ff epoch 1/1: ") and "of 100 batch" in lines[0]
    assert "loss0 0.6931" in lines[-1]


def test_byte_counts_read_as_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(progress_module, "clock", lambda: clock[0])
    monkeypatch.setenv("FORWARDFORWARD_PROGRESS", "lines")
    out = io.StringIO()
    with progress(
        total=10 * 2**20, desc="downloading x", unit="B", unit_scale=True, stream=out
    ) as b:
        clock[0] = 11.0
        b.update(3 * 2**20)
    assert out.getvalue() == "downloading x: 3.0 MiB of 10.0 MiB (30%), 11 s\n"


def test_ff_train_into_a_log_writes_one_line_per_epoch(tiny_toml: Path, tmp_path: Path) -> None:
    """`ff train PRESET > log 2>&1`: no carriage-return refreshes, one line per epoch, a log of
    about a kilobyte; `--no-progress` leaves only the results."""
    env = {k: v for k, v in os.environ.items() if k != "FORWARDFORWARD_PROGRESS"}
    cmd = [sys.executable, "-m", "forwardforward.cli", "train", str(tiny_toml)]
    log = tmp_path / "train.log"
    with open(log, "wb") as f:
        done = subprocess.run(
            [*cmd, "--out", str(tmp_path / "run")], stdout=f, stderr=f, env=env, timeout=120
        )
    text = log.read_text()
    assert done.returncode == 0, text
    assert "\r" not in text
    epoch_lines = [line for line in text.splitlines() if line.startswith("ff epoch ")]
    assert [line.split(":")[0] for line in epoch_lines] == [f"ff epoch {e}/3" for e in (1, 2, 3)]
    assert len(text.encode()) < 2000, text
    quiet = subprocess.run(
        [*cmd, "--out", str(tmp_path / "quiet"), "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert quiet.returncode == 0, quiet.stderr
    assert "ff epoch" not in quiet.stderr and '"test_acc"' in quiet.stdout
