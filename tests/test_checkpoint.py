"""Checkpoints: atomic writes, model fingerprints, clear errors for foreign or corrupt files, and
loading never executes code from the file."""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from forwardforward.checkpoint import (
    FORMAT,
    atomic_write_bytes,
    atomic_write_text,
    fingerprint,
    load_into,
    read_checkpoint,
    save_checkpoint,
)
from forwardforward.config import RunConfig
from forwardforward.errors import CheckpointError
from forwardforward.layers import FFLinear
from forwardforward.nets.feedforward import FFNet


def _net(tiny_config: Callable[..., RunConfig], layers: str = "[32, 16]", seed: int = 0) -> FFNet:
    torch.manual_seed(seed)
    return FFNet(tiny_config(f"model.layers={layers}"), (1, 8, 8), 10)


def _save(path: Path, net: torch.nn.Module) -> None:
    save_checkpoint(
        path,
        net,
        config={"kind": "ff", "config": {"name": "x"}},
        optim={"lr": torch.tensor([0.5])},
        trainer={"epoch": 2, "generator": torch.Generator().manual_seed(1).get_state()},
    )


# ---------------------------------------------------------------------------------------------
# Round trip and atomic writes


def test_round_trip(tmp_path: Path, tiny_config: Callable[..., RunConfig]) -> None:
    net = _net(tiny_config)
    path = tmp_path / "run" / "checkpoint.pt"  # the folder is created
    _save(path, net)
    payload = read_checkpoint(path)
    assert payload["format"] == FORMAT
    assert payload["config"] == {"kind": "ff", "config": {"name": "x"}}
    assert payload["fingerprint"] == fingerprint(net)
    assert payload["trainer"]["epoch"] == 2
    other = _net(tiny_config, seed=1)
    theirs, mine = other.layers[0], net.layers[0]
    assert isinstance(theirs, FFLinear) and isinstance(mine, FFLinear)
    assert not torch.equal(theirs.weight, mine.weight)
    load_into(other, payload, path)
    for k, v in net.state_dict().items():
        assert torch.equal(other.state_dict()[k], v), k


def test_atomic_write_leaves_no_temp_file(
    tmp_path: Path, tiny_config: Callable[..., RunConfig]
) -> None:
    path = tmp_path / "checkpoint.pt"
    _save(path, _net(tiny_config))
    _save(path, _net(tiny_config, seed=2))  # overwriting, too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    atomic_write_text(tmp_path / "a.json", "{}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "checkpoint.pt"]
    assert (tmp_path / "a.json").read_text() == "{}\n"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"old contents")

    def crash(f: io.BufferedWriter) -> None:
        f.write(b"half a new chec")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, crash)
    assert path.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_a_failed_save_checkpoint_keeps_the_old_checkpoint(
    tmp_path: Path, tiny_config: Callable[..., RunConfig]
) -> None:
    path = tmp_path / "checkpoint.pt"
    net = _net(tiny_config)
    _save(path, net)
    good = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - whatever torch.save raises for a lambda
        save_checkpoint(path, net, config={}, trainer={"bad": lambda: None})
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    read_checkpoint(path)


# ---------------------------------------------------------------------------------------------
# Foreign and corrupt files


def test_checkpoint_of_another_model(tmp_path: Path, tiny_config: Callable[..., RunConfig]) -> None:
    path = tmp_path / "checkpoint.pt"
    _save(path, _net(tiny_config, "[32, 16]"))
    other = _net(tiny_config, "[32, 8]")
    before = {k: v.clone() for k, v in other.state_dict().items()}
    payload = read_checkpoint(path)
    with pytest.raises(CheckpointError, match="another model") as info:
        load_into(other, payload, path)
    msg = str(info.value)
    assert "layers.1.weight" in msg and "[16, 32]" in msg and "[8, 32]" in msg
    for k, v in other.state_dict().items():  # nothing was loaded
        assert torch.equal(before[k], v), k


def test_checkpoint_with_missing_layers(
    tmp_path: Path, tiny_config: Callable[..., RunConfig]
) -> None:
    path = tmp_path / "checkpoint.pt"
    _save(path, _net(tiny_config, "[32]"))
    with pytest.raises(CheckpointError, match=r"another model.*missing layers\.1"):
        load_into(_net(tiny_config, "[32, 16]"), read_checkpoint(path), path)


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        read_checkpoint(tmp_path / "checkpoint.pt")
    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(CheckpointError):
        read_checkpoint(tmp_path / "dir.pt")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage, not a checkpoint at all",
        bytes(range(256)) * 4,
        b"PK\x03\x04truncated zip",
        b"\x80\x02]q\x00.",  # a pickled empty list
        b".",  # a pickle STOP with nothing on the stack
        b"\x80\x02.",
        b"h\x01.",  # a pickle memo lookup of a missing entry
    ],
    ids=["empty", "text", "bytes", "zip-head", "list", "stop", "proto-stop", "memo"],
)
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_files_that_are_not_checkpoints(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="checkpoint"):
        read_checkpoint(path)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_random_bytes_are_refused_cleanly(tmp_path: Path) -> None:
    """Whatever the bytes, reading them gives a CheckpointError, never another exception."""
    gen = torch.Generator().manual_seed(0)
    path = tmp_path / "checkpoint.pt"
    for n in range(40):
        size = int(torch.randint(1, 300, (1,), generator=gen))
        path.write_bytes(bytes(torch.randint(0, 256, (size,), generator=gen).tolist()))
        if n % 2:
            path.write_bytes(b"\x80\x02" + path.read_bytes())  # looks like a pickle
        with pytest.raises(CheckpointError):
            read_checkpoint(path)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_checkpoint(
    tmp_path: Path, tiny_config: Callable[..., RunConfig], fraction: float
) -> None:
    path = tmp_path / "checkpoint.pt"
    _save(path, _net(tiny_config))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        read_checkpoint(path)
    assert "miniz" not in str(info.value) and "PytorchStreamReader" not in str(info.value)


@pytest.mark.parametrize(
    "obj",
    [
        torch.zeros(3),
        [1, 2, 3],
        {"format": "something-else"},
        {"model": {}},
        {"format": FORMAT},  # the format tag and nothing else
        {"format": FORMAT, "config": "{not json", "fingerprint": "{}", "model": {}},
        {"format": FORMAT, "config": 3, "fingerprint": "{}", "model": {}},
    ],
    ids=["tensor", "list", "other-format", "no-format", "format-only", "bad-json", "bad-type"],
)
def test_torch_files_that_are_not_our_checkpoints(tmp_path: Path, obj: object) -> None:
    path = tmp_path / "checkpoint.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError):
        read_checkpoint(path)


# ---------------------------------------------------------------------------------------------
# Loading never executes code


class Evil:
    """Unpickling this calls ``os.mkdir(marker)``: code execution a loader must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.marker),)


def test_the_exploit_works_when_loading_unsafely(tmp_path: Path) -> None:
    """The crafted file really runs code when loaded without weights_only, so the tests below
    can fail."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "model": Evil(marker)}, path)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_malicious_torch_checkpoint_is_refused_without_running_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": FORMAT, "config": "{}", "fingerprint": "{}", "model": Evil(marker)}, path)
    with pytest.raises(CheckpointError, match="something other than tensors") as info:
        read_checkpoint(path)
    assert not marker.exists()
    _assert_no_unsafe_advice(str(info.value))
    assert "posix.mkdir" in str(info.value)  # names what the file tried to build


def _assert_no_unsafe_advice(message: str) -> None:
    """Our refusal is in our words and never suggests loading the file unsafely."""
    assert "no code from this file was run" in message
    for phrase in ("weights_only", "weights only", "trusted source", "pickle_module"):
        assert phrase not in message.lower(), message


def test_ff_eval_refuses_a_malicious_checkpoint_without_running_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ff eval RUN` on a run folder whose checkpoint holds a pickled object that would run
    ``os.system`` when unpickled: non-zero exit, nothing run, no advice to load it unsafely."""
    from forwardforward.cli import main
    from forwardforward.train import CHECKPOINT

    marker = tmp_path / "pwned"

    class System:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return os.system, (f"touch {marker}",)

    run = tmp_path / "run"
    run.mkdir()
    torch.save({"format": FORMAT, "config": "{}", "model": System()}, run / CHECKPOINT)
    assert main(["eval", str(run)]) != 0
    assert not marker.exists()
    err = capsys.readouterr().err
    assert "refused" in err and "system" in err
    _assert_no_unsafe_advice(err)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_malicious_raw_pickle_is_refused_without_running_code(
    tmp_path: Path, protocol: int
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(pickle.dumps({"format": FORMAT, "x": Evil(marker)}, protocol=protocol))
    with pytest.raises(CheckpointError, match="refused") as info:
        read_checkpoint(path)
    assert not marker.exists()
    _assert_no_unsafe_advice(str(info.value))


def test_malicious_payload_in_a_run_folder_is_refused_by_load_run(tmp_path: Path) -> None:
    from forwardforward.train import CHECKPOINT, load_run

    marker = tmp_path / "pwned"
    torch.save({"format": FORMAT, "model": Evil(marker)}, tmp_path / CHECKPOINT)
    with pytest.raises(CheckpointError):
        load_run(tmp_path)
    assert not marker.exists()
