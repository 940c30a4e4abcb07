"""Downloads against a real local HTTP server, verification, the catalog and the data dir."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path

import pytest
from conftest import Route, Server

from forwardforward.data import (
    CATALOG,
    FileSpec,
    dataset_spec,
    fetch_dataset,
    fetch_file,
    resolve_data_dir,
    verify_dataset,
    verify_file,
)
from forwardforward.errors import ConfigError, DataError, FetchError

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB, so the download takes several reads


def _spec(data: bytes = PAYLOAD, *, name: str = "blob.bin", md5_only: bool = False) -> FileSpec:
    return FileSpec(
        name=name,
        size=len(data),
        sha256=None if md5_only else hashlib.sha256(data).hexdigest(),
        mirrors=(),
        md5=hashlib.md5(data).hexdigest(),
    )


def _assert_clean(folder: Path, spec: FileSpec, *, verified: bool) -> None:
    """No temporary files; the final file exists exactly when it is verified."""
    names = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    leftovers = [n for n in names if n.startswith(".") or n.endswith(".part")]
    assert leftovers == [], leftovers
    final = folder / spec.name
    if verified:
        assert verify_file(final, spec).status == "verified"
    else:
        assert not final.exists()


# ------------------------------------------------------------------------------------------
# fetch_file against the local server


def test_good_file(server: Server, tmp_path: Path) -> None:
    spec = _spec()
    server.routes["/a/blob.bin"] = Route("ok", PAYLOAD)
    path = fetch_file(spec, tmp_path, mirrors=[server.url("a")], timeout=5, progress=False)
    assert path == tmp_path / "blob.bin"
    assert path.read_bytes() == PAYLOAD
    _assert_clean(tmp_path, spec, verified=True)
    # Already verified: no second download.
    fetch_file(spec, tmp_path, mirrors=[server.url("a")], timeout=5, progress=False)
    assert server.hits == ["/a/blob.bin"]


def test_first_mirror_404_then_good(server: Server, tmp_path: Path) -> None:
    spec = _spec()
    server.routes["/gone/blob.bin"] = Route("404")
    server.routes["/good/blob.bin"] = Route("ok", PAYLOAD)
    mirrors = [server.url("gone"), server.url("good")]
    fetch_file(spec, tmp_path, mirrors=mirrors, timeout=5, progress=False)
    assert server.hits == ["/gone/blob.bin", "/good/blob.bin"]
    _assert_clean(tmp_path, spec, verified=True)


def test_404_everywhere(server: Server, tmp_path: Path) -> None:
    spec = _spec()
    with pytest.raises(FetchError) as info:
        fetch_file(spec, tmp_path, mirrors=[server.url("x"), server.url("y")], progress=False)
    assert str(info.value).count("HTTP 404 Not Found") == 2
    _assert_clean(tmp_path, spec, verified=False)


def test_md5_only_spec(server: Server, tmp_path: Path) -> None:
    spec = _spec(md5_only=True)
    assert spec.algorithm == "md5"
    server.routes["/a/blob.bin"] = Route("ok", PAYLOAD)
    fetch_file(spec, tmp_path, mirrors=[server.url("a")], timeout=5, progress=False)
    report = verify_file(tmp_path / "blob.bin", spec)
    assert report.status == "verified" and "md5" in report.detail
    _assert_clean(tmp_path, spec, verified=True)


def test_wrong_bytes_on_every_mirror(server: Server, tmp_path: Path) -> None:
    spec = _spec()
    bad = bytearray(PAYLOAD)
    bad[1234] ^= 1  # same size, different content
    server.routes["/a/blob.bin"] = Route("ok", bytes(bad))
    server.routes["/b/blob.bin"] = Route("ok", bytes(bad))
    dest = tmp_path / "data"
    with pytest.raises(FetchError) as info:
        fetch_file(
            spec, dest, mirrors=[server.url("a"), server.url("b")], timeout=5, progress=False
        )
    msg = str(info.value)
    assert "blob.bin" in msg and str(dest) in msg
    assert msg.count("sha256 mismatch") == 2, msg
    assert server.url("a") + "blob.bin" in msg and server.url("b") + "blob.bin" in msg
    _assert_clean(dest, spec, verified=False)


def test_wrong_size(server: Server, tmp_path: Path) -> None:
    spec = _spec()
    server.routes["/a/blob.bin"] = Route("ok", PAYLOAD + b"x")
    with pytest.raises(FetchError, match=f"announces {len(PAYLOAD) + 1} bytes"):
        fetch_file(spec, tmp_path, mirrors=[server.url("a")], timeout=5, progress=False)
    _assert_clean(tmp_path, spec, verified=False)


def test_transfer_cut_short(server: Server, tmp_path: Path) -> None:
    spec = _spec()
    server.routes["/cut/blob.bin"] = Route("short", PAYLOAD)
    with pytest.raises(
        FetchError, match=r"short transfer: connection closed after \d+ of 1048580 bytes"
    ):
        fetch_file(spec, tmp_path, mirrors=[server.url("cut")], timeout=5, progress=False)
    _assert_clean(tmp_path, spec, verified=False)


def test_transfer_cut_short_then_next_mirror(server: Server, tmp_path: Path) -> None:
    spec = _spec()
    server.routes["/cut/blob.bin"] = Route("short", PAYLOAD)
    server.routes["/good/blob.bin"] = Route("ok", PAYLOAD)
    mirrors = [server.url("cut"), server.url("good")]
    fetch_file(spec, tmp_path, mirrors=mirrors, timeout=5, progress=False)
    _assert_clean(tmp_path, spec, verified=True)


def test_timeout(server: Server, tmp_path: Path) -> None:
    spec = _spec()
    server.routes["/slow/blob.bin"] = Route("slow")
    start = time.monotonic()
    with pytest.raises(FetchError, match=r"timed out after 0\.3 s"):
        fetch_file(spec, tmp_path, mirrors=[server.url("slow")], timeout=0.3, progress=False)
    assert time.monotonic() - start < 1.9
    _assert_clean(tmp_path, spec, verified=False)


def test_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as sock:  # find a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spec = _spec()
    with pytest.raises(FetchError, match="refused"):
        fetch_file(spec, tmp_path, mirrors=[f"http://127.0.0.1:{port}/"], timeout=2, progress=False)
    _assert_clean(tmp_path, spec, verified=False)


def test_corrupt_file_is_kept_until_a_verified_replacement_exists(
    server: Server, tmp_path: Path
) -> None:
    spec = _spec()
    corrupt = b"x" * len(PAYLOAD)
    (tmp_path / "blob.bin").write_bytes(corrupt)
    server.routes["/a/blob.bin"] = Route("short", PAYLOAD)
    with pytest.raises(FetchError, match="existing file is corrupt"):
        fetch_file(spec, tmp_path, mirrors=[server.url("a")], timeout=5, progress=False)
    assert (tmp_path / "blob.bin").read_bytes() == corrupt  # untouched
    server.routes["/a/blob.bin"] = Route("ok", PAYLOAD)
    fetch_file(spec, tmp_path, mirrors=[server.url("a")], timeout=5, progress=False)
    _assert_clean(tmp_path, spec, verified=True)


# ------------------------------------------------------------------------------------------
# verify_file


def test_verify_file_statuses(tmp_path: Path) -> None:
    spec = _spec(b"hello")
    path = tmp_path / "blob.bin"
    assert verify_file(path, spec).status == "missing"
    path.write_bytes(b"hell")
    report = verify_file(path, spec, dataset="demo")
    assert (report.status, report.detail, report.dataset) == ("corrupt", "size 4 != 5", "demo")
    path.write_bytes(b"hallo")
    report = verify_file(path, spec)
    assert report.status == "corrupt" and report.detail.startswith("sha256 mismatch")
    path.write_bytes(b"hello")
    assert verify_file(path, spec).ok


# ------------------------------------------------------------------------------------------
# The real catalog, offline


def _network_reachable(host: str) -> bool:
    try:
        socket.create_connection((host, 443), timeout=1).close()
    except OSError:
        return False
    return True


def test_fetch_real_dataset_offline_fails_fast_and_clean(tmp_path: Path) -> None:
    if _network_reachable("ossci-datasets.s3.amazonaws.com"):
        pytest.skip("the network is reachable: this test checks the offline failure")
    start = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetch_dataset("mnist", tmp_path, timeout=2, progress=False)
    assert time.monotonic() - start < 30
    msg = str(info.value)
    for file_spec in CATALOG["mnist"].files.values():
        assert file_spec.name in msg
    folder = tmp_path / "mnist"
    assert str(folder) in msg
    assert list(folder.iterdir()) == []


# ------------------------------------------------------------------------------------------
# Catalog and data directory


def test_catalog_contents() -> None:
    assert set(CATALOG) == {"mnist", "fashion_mnist", "kmnist", "cifar10"}
    for name, spec in CATALOG.items():
        assert spec.name == name and spec.folder == name
        assert len(spec.classes) == spec.num_classes == 10
        for file_spec in spec.files.values():
            assert file_spec.sha256 is not None and len(file_spec.sha256) == 64
            assert file_spec.mirrors and all(m.startswith("http") for m in file_spec.mirrors)
    assert set(CATALOG["mnist"].files) == {
        "train_images",
        "train_labels",
        "test_images",
        "test_labels",
    }
    archive = CATALOG["cifar10"].files["archive"]
    assert (archive.name, archive.size) == ("cifar-10-python.tar.gz", 170498071)
    assert archive.md5 == "c58f30108f718f92721af3b95e74349a"


def test_dataset_spec_names() -> None:
    assert dataset_spec("fashion-mnist") is CATALOG["fashion_mnist"]
    assert dataset_spec("CIFAR-10") is CATALOG["cifar10"]
    with pytest.raises(ConfigError) as info:
        dataset_spec("imagenet")
    assert str(info.value) == (
        "unknown dataset 'imagenet'; choose one of: cifar10, fashion_mnist, kmnist, mnist"
    )
    with pytest.raises(ConfigError):
        verify_dataset("imagenet", "/nonexistent")
    assert issubclass(FetchError, DataError)


def test_file_spec_validation() -> None:
    with pytest.raises(ValueError, match="sha256 or an md5"):
        FileSpec(name="x", size=1, sha256=None, mirrors=())
    with pytest.raises(ValueError, match="64 lowercase hex"):
        FileSpec(name="x", size=1, sha256="ABC", mirrors=())
    spec = FileSpec(name="f.gz", size=1, sha256="0" * 64, mirrors=("http://a/b/", "http://c"))
    assert spec.urls() == ["http://a/b/f.gz", "http://c/f.gz"]


def test_resolve_data_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FORWARDFORWARD_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_data_dir(str(tmp_path / "explicit")) == tmp_path / "explicit"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.setenv("FORWARDFORWARD_DATA", "")
    assert resolve_data_dir() == tmp_path / "xdg" / "forwardforward"
    monkeypatch.delenv("FORWARDFORWARD_DATA")
    assert resolve_data_dir() == tmp_path / "xdg" / "forwardforward"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "forwardforward"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # ignored: not absolute
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "forwardforward"


# ------------------------------------------------------------------------------------------
# Integration: the real files


def _real_dir(name: str) -> Path:
    root = resolve_data_dir()
    folder = root / CATALOG[name].folder
    if not all((folder / f.name).is_file() for f in CATALOG[name].files.values()):
        pytest.skip(
            f"{name} not found in {folder}: set FORWARDFORWARD_DATA to a folder holding "
            f"{CATALOG[name].folder}/ (or run `ff data fetch {name}`)"
        )
    return root


@pytest.mark.integration
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_real_files_verify(name: str) -> None:
    root = _real_dir(name)
    reports = verify_dataset(name, root)
    assert [r.status for r in reports] == ["verified"] * 4, reports
    assert {r.file for r in reports} == {f.name for f in CATALOG[name].files.values()}


@pytest.mark.integration
def test_catalog_matches_sha256sums() -> None:
    root = _real_dir("mnist")
    sums_file = root / "SHA256SUMS"
    if not sums_file.is_file():
        pytest.skip(f"no SHA256SUMS in {root}")
    sums = {}
    for line in sums_file.read_text().splitlines():
        digest, rel = line.split(maxsplit=1)
        sums[rel.lstrip("*")] = digest
    for name in ("mnist", "fashion_mnist"):
        spec = CATALOG[name]
        for f in spec.files.values():
            assert sums[f"{spec.folder}/{f.name}"] == f.sha256
            assert os.path.getsize(root / spec.folder / f.name) == f.size


@pytest.mark.integration
def test_real_file_with_one_byte_changed_is_corrupt(tmp_path: Path) -> None:
    root = _real_dir("mnist")
    spec = CATALOG["mnist"].files["test_labels"]
    data = bytearray((root / "mnist" / spec.name).read_bytes())
    data[100] ^= 0x01
    copy = tmp_path / "mnist" / spec.name
    copy.parent.mkdir()
    copy.write_bytes(bytes(data))
    report = verify_file(copy, spec, dataset="mnist")
    assert report.status == "corrupt" and "sha256 mismatch" in report.detail
    reports = {r.file: r.status for r in verify_dataset("mnist", tmp_path)}
    assert reports[spec.name] == "corrupt"
    assert reports["train-images-idx3-ubyte.gz"] == "missing"
