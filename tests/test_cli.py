"""The ``ff`` command, called in-process: presets, show, help, train, eval and data."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

import pytest

from forwardforward.cli import main
from forwardforward.config import preset_names
from forwardforward.data import CATALOG, resolve_data_dir

Capsys = pytest.CaptureFixture[str]


def test_presets_lists_every_preset_with_its_description(capsys: Capsys) -> None:
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == len(preset_names())
    assert any(line.startswith("mnist-quick ") and "98%" in line for line in lines), out
    for name in preset_names():
        assert any(line.split()[0] == name for line in lines), name


def test_show_with_overrides(capsys: Capsys) -> None:
    assert main(["show", "mnist-quick", "--set", "train.epochs=2", "--set", "model.norm=l2"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["name"] == "mnist-quick"
    assert shown["train"]["epochs"] == 2
    assert shown["model"]["norm"] == "l2"
    assert shown["model"]["layers"] == [1000, 1000]


def test_show_with_a_bad_override_is_an_error(capsys: Capsys) -> None:
    assert main(["show", "mnist-quick", "--set", "train.epoch=2"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("ff: error:")
    assert "train.epoch" in captured.err and "train.epochs" in captured.err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["data"],
        ["data", "list"],
        ["data", "verify"],
        ["data", "fetch"],
        ["presets"],
        ["show"],
        ["train"],
        ["eval"],
    ],
    ids=lambda a: " ".join(a) or "ff",
)
def test_help_of_every_command(argv: list[str], capsys: Capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ff")
    assert " ".join(["ff", *argv]) in out.splitlines()[0]


def test_no_command_is_a_usage_error(capsys: Capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "usage: ff" in capsys.readouterr().err


def test_train_an_unknown_preset(tmp_path: Path, capsys: Capsys) -> None:
    assert main(["train", "no-such-preset", "--out", str(tmp_path / "run"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ff: error:")
    assert "no-such-preset" in err and "mnist-quick" in err
    assert not (tmp_path / "run").exists()


def test_train_needs_a_preset_or_resume(capsys: Capsys) -> None:
    assert main(["train", "--quiet"]) == 1
    assert "--resume" in capsys.readouterr().err


def test_train_then_eval(tiny_toml: Path, tmp_path: Path, capsys: Capsys) -> None:
    run = tmp_path / "run"
    code = main(["train", str(tiny_toml), "--set", "train.epochs=1", "--out", str(run), "--quiet"])
    assert code == 0
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert results["kind"] == "ff" and results["epochs"] == 1
    assert f"run folder: {run}" in captured.err
    assert "epoch" not in captured.err.replace("run folder", "")  # --quiet: no progress

    assert main(["eval", str(run)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["accuracy"] == results["test_acc"]
    assert shown["split"] == "test" and shown["examples"] == 500 and shown["kind"] == "ff"
    assert shown["error_pct"] == pytest.approx(100 * (1 - shown["accuracy"]), abs=1e-3)

    assert main(["eval", str(run), "--split", "train"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["examples"] == 2000
    assert shown["accuracy"] == pytest.approx(results["train_acc"], abs=1e-9)

    assert main(["eval", str(run), "--split", "val"]) == 1
    assert "val" in capsys.readouterr().err


def test_train_backprop_then_eval(tiny_toml: Path, tmp_path: Path, capsys: Capsys) -> None:
    run = tmp_path / "bp"
    args = ["train", str(tiny_toml), "--set", "train.epochs=1", "--out", str(run), "--quiet"]
    assert main([*args, "--backprop"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["kind"] == "backprop"
    assert main(["eval", str(run)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["kind"] == "backprop" and shown["accuracy"] == results["test_acc"]


def test_eval_of_a_folder_without_a_checkpoint(tmp_path: Path, capsys: Capsys) -> None:
    assert main(["eval", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ff: error:") and "checkpoint" in err


def test_eval_of_a_corrupt_checkpoint(tmp_path: Path, capsys: Capsys) -> None:
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert main(["eval", str(tmp_path)]) == 1
    assert "checkpoint" in capsys.readouterr().err


def test_data_list(tmp_path: Path, capsys: Capsys) -> None:
    assert main(["data", "list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"data directory: {tmp_path}" in out
    for name in CATALOG:
        assert name in out
    assert "0/4 files present" in out


# ---------------------------------------------------------------------------------------------
# data verify / fetch


def _data_root(*names: str) -> Path:
    root = resolve_data_dir()
    for name in names:
        folder = root / CATALOG[name].folder
        if not all((folder / f.name).is_file() for f in CATALOG[name].files.values()):
            pytest.skip(f"{name} not found in {folder} (set FORWARDFORWARD_DATA)")
    return root


@pytest.mark.integration
def test_data_verify_real_files(capsys: Capsys) -> None:
    root = _data_root("mnist", "fashion_mnist")
    assert main(["data", "verify", "--data-dir", str(root)]) == 0
    out = capsys.readouterr().out
    verified = [line.split()[1] for line in out.splitlines() if line.split()[:1] == ["verified"]]
    expected = [
        f"{name}/{f.name}"
        for name in ("mnist", "fashion_mnist")
        for f in CATALOG[name].files.values()
    ]
    assert sorted(verified) == sorted(expected)
    assert len(verified) == 8
    assert "corrupt" not in out


@pytest.mark.integration
def test_data_verify_reports_a_changed_byte(tmp_path: Path, capsys: Capsys) -> None:
    root = _data_root("mnist")
    copy = tmp_path / "mnist"
    shutil.copytree(root / "mnist", copy)
    victim = copy / CATALOG["mnist"].files["test_labels"].name
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))

    assert main(["data", "verify", "--data-dir", str(tmp_path)]) != 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    corrupt = [line for line in lines if line.split()[:1] == ["corrupt"]]
    assert len(corrupt) == 1 and victim.name in corrupt[0] and "sha256" in corrupt[0]
    assert sum(line.split()[:1] == ["verified"] for line in lines) == 3
    assert "1 file(s) failed" in captured.err

    assert main(["data", "verify", "mnist", "--data-dir", str(tmp_path)]) != 0


def test_data_verify_a_named_missing_dataset_fails(tmp_path: Path, capsys: Capsys) -> None:
    assert main(["data", "verify", "mnist", "--data-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert out.count("missing") == 4


def _reachable(host: str) -> bool:
    try:
        socket.create_connection((host, 443), timeout=1).close()
    except OSError:
        return False
    return True


def test_data_fetch_offline_fails_fast_and_clean(tmp_path: Path, capsys: Capsys) -> None:
    if _reachable("ossci-datasets.s3.amazonaws.com"):
        pytest.skip("the network is reachable: this test checks the offline failure")
    empty = tmp_path / "empty"
    start = time.monotonic()
    code = main(["data", "fetch", "mnist", "--data-dir", str(empty), "--timeout", "2", "--quiet"])
    assert time.monotonic() - start < 30
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("ff: error:")
    folder = empty / "mnist"
    assert str(folder) in err
    for f in CATALOG["mnist"].files.values():
        assert f.name in err
    assert list(folder.iterdir()) == []  # no partial or temporary file left behind
