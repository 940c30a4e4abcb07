"""`ff train` fetches missing catalog files itself: verified, atomically, from a mirror that is a
local HTTP server serving synthetic MNIST files; with every mirror failing it stops at once with
the files, the folder and how to place them by hand, and leaves nothing half-written."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import Route, Server

from forwardforward.cli import main
from forwardforward.data import CATALOG, FileSpec, encode_idx, load_dataset
from forwardforward.errors import DataError

Capsys = pytest.CaptureFixture[str]


def _synthetic_mnist(n_train: int = 300, n_test: int = 60) -> dict[str, bytes]:
    """role -> gzip-compressed IDX bytes of a learnable toy MNIST (the label is a bright row)."""
    rng = np.random.default_rng(0)

    def images(labels: np.ndarray) -> np.ndarray:
        x = rng.integers(0, 60, (len(labels), 28, 28), dtype=np.uint8)
        x[np.arange(len(labels)), 2 + 2 * labels, :] = 255
        return x

    y_train = (np.arange(n_train) % 10).astype(np.uint8)
    y_test = (np.arange(n_test) % 10).astype(np.uint8)
    arrays = {
        "train_images": images(y_train),
        "train_labels": y_train,
        "test_images": images(y_test),
        "test_labels": y_test,
    }
    return {role: gzip.compress(encode_idx(a), mtime=0) for role, a in arrays.items()}


def _catalog_on(
    monkeypatch: pytest.MonkeyPatch, mirrors: tuple[str, ...], blobs: dict[str, bytes]
) -> None:
    """Make the catalog's MNIST the synthetic files, downloadable from ``mirrors`` only."""
    real = CATALOG["mnist"]
    files = {
        role: FileSpec(
            name=spec.name,
            size=len(blobs[role]),
            sha256=hashlib.sha256(blobs[role]).hexdigest(),
            mirrors=mirrors,
        )
        for role, spec in real.files.items()
    }
    monkeypatch.setitem(CATALOG, "mnist", dataclasses.replace(real, files=files))
    monkeypatch.delenv("FORWARDFORWARD_OFFLINE")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens there once the socket is closed


def test_ff_train_fetches_verifies_and_trains(
    server: Server, tmp_path: Path, tiny_toml: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capsys
) -> None:
    blobs = _synthetic_mnist()
    for role, spec in CATALOG["mnist"].files.items():
        server.routes[f"/mnist/{spec.name}"] = Route("ok", blobs[role])
    # the first mirror is down: the second one serves the files
    _catalog_on(monkeypatch, (f"http://127.0.0.1:{_closed_port()}/", server.url("mnist")), blobs)
    data, run = tmp_path / "data", tmp_path / "run"
    args = ["train", str(tiny_toml), "--set", "data.dataset=mnist", "--set", "train.epochs=1"]
    assert main([*args, "--data-dir", str(data), "--out", str(run)]) == 0
    folder = data / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        s.name for s in CATALOG["mnist"].files.values()
    )
    for role, spec in CATALOG["mnist"].files.items():
        assert (folder / spec.name).read_bytes() == blobs[role]
    assert sorted(server.hits) == sorted(
        f"/mnist/{s.name}" for s in CATALOG["mnist"].files.values()
    )
    results = json.loads((run / "results.json").read_text())
    assert results["dataset"] == "mnist" and results["test_acc"] > 0.2  # it learned: chance is 0.1
    err = capsys.readouterr().err
    assert "mnist: read 4 compressed file(s)" in err


def test_ff_train_with_every_mirror_failing_stops_fast_and_clean(
    server: Server, tmp_path: Path, tiny_toml: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capsys
) -> None:
    blobs = _synthetic_mnist()
    # one mirror refuses connections, one answers 404, one cuts every transfer short
    for spec in CATALOG["mnist"].files.values():
        server.routes[f"/short/{spec.name}"] = Route("short", b"x" * 5000)
    mirrors = (f"http://127.0.0.1:{_closed_port()}/", server.url("gone"), server.url("short"))
    _catalog_on(monkeypatch, mirrors, blobs)
    data = tmp_path / "data"
    start = time.monotonic()
    code = main(["train", str(tiny_toml), "--set", "data.dataset=mnist", "--data-dir", str(data)])
    assert code != 0
    assert time.monotonic() - start < 30
    err = capsys.readouterr().err
    folder = data / "mnist"
    assert "MNIST: 4 of 4 files missing" in err and str(folder) in err
    assert "Downloading them failed" in err and "by hand" in err
    for spec in CATALOG["mnist"].files.values():
        assert spec.name in err
    assert list(folder.iterdir()) == []  # no partial file, no temporary
    # the refusing host was tried once, then skipped for the other three files
    assert err.count("could not be reached for an earlier file") == 3


def test_no_download_keeps_the_offline_message(
    server: Server, tmp_path: Path, tiny_toml: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capsys
) -> None:
    blobs = _synthetic_mnist()
    for role, spec in CATALOG["mnist"].files.items():
        server.routes[f"/mnist/{spec.name}"] = Route("ok", blobs[role])
    _catalog_on(monkeypatch, (server.url("mnist"),), blobs)
    args = ["train", str(tiny_toml), "--set", "data.dataset=mnist", "--no-download"]
    assert main([*args, "--data-dir", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "4 of 4 files missing" in err and "ff data fetch mnist" in err
    assert server.hits == []
    monkeypatch.setenv("FORWARDFORWARD_OFFLINE", "1")
    with pytest.raises(DataError, match="automatic downloads were off"):
        load_dataset("mnist", data_dir=tmp_path)
    assert server.hits == []


def test_load_dataset_downloads_by_default(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = _synthetic_mnist()
    for role, spec in CATALOG["mnist"].files.items():
        server.routes[f"/mnist/{spec.name}"] = Route("ok", blobs[role])
    _catalog_on(monkeypatch, (server.url("mnist"),), blobs)
    ds = load_dataset("mnist", data_dir=tmp_path, progress=False)
    assert len(ds.train) == 300 and len(ds.test) == 60
    assert len(server.hits) == 4
    load_dataset("mnist", data_dir=tmp_path, progress=False)  # present now: nothing fetched
    assert len(server.hits) == 4
