"""load_dataset on synthetic MNIST-format and CIFAR-10-format files, and on the real MNIST."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from forwardforward.data import (
    CATALOG,
    Split,
    load_dataset,
    read_idx,
    resolve_data_dir,
    write_idx,
)
from forwardforward.errors import ConfigError, DataError

N_TRAIN, N_TEST = 50, 20


def _ids(n: int, offset: int = 0) -> np.ndarray:
    """(n, 28, 28) uint8 images whose first two pixels encode the example's index."""
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    idx = np.arange(n) + offset
    images[:, 0, 0] = idx % 256
    images[:, 0, 1] = idx // 256
    images[:, 27, 27] = 255
    return images


def _image_ids(split: Split) -> list[int]:
    px = split.images[:, 0, 0, :2].to(torch.int64)
    return (px[:, 0] + 256 * px[:, 1]).tolist()


def _write_mnist(root: Path, *, n_train: int = N_TRAIN, n_test: int = N_TEST) -> Path:
    folder = root / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    files = CATALOG["mnist"].files
    write_idx(folder / files["train_images"].name, _ids(n_train), compress=True)
    write_idx(
        folder / files["train_labels"].name,
        (np.arange(n_train) % 10).astype(np.uint8),
        compress=True,
    )
    write_idx(folder / files["test_images"].name, _ids(n_test, 1000), compress=True)
    write_idx(
        folder / files["test_labels"].name, (np.arange(n_test) % 10).astype(np.uint8), compress=True
    )
    return folder


# ------------------------------------------------------------------------------------------
# Synthetic MNIST


def test_synthetic_mnist_shapes(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    ds = load_dataset("mnist", data_dir=tmp_path, check_sizes=False)
    assert ds.name == "mnist" and ds.num_classes == 10 and ds.val is None
    assert ds.train.images.shape == (N_TRAIN, 1, 28, 28)
    assert ds.train.images.dtype == torch.uint8
    assert ds.train.labels.shape == (N_TRAIN,) and ds.train.labels.dtype == torch.int64
    assert ds.test.images.shape == (N_TEST, 1, 28, 28)
    assert _image_ids(ds.train) == list(range(N_TRAIN))
    assert _image_ids(ds.test) == [1000 + i for i in range(N_TEST)]
    assert ds.train.labels.tolist() == [i % 10 for i in range(N_TRAIN)]
    assert ds.image_shape == (1, 28, 28) and len(ds.train) == N_TRAIN

    x = ds.train.float()
    assert x.dtype == torch.float32 and x.shape == (N_TRAIN, 1, 28, 28)
    assert x[0, 0, 27, 27].item() == 1.0 and x[3, 0, 0, 0].item() == pytest.approx(3 / 255)
    assert ds.train.images.dtype == torch.uint8  # float() left the uint8 alone
    assert ds.train.float(torch.float64).dtype == torch.float64
    assert ds.to("cpu").train.device == torch.device("cpu")


def test_val_split_disjoint_and_seeded(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    a = load_dataset("mnist", data_dir=tmp_path, check_sizes=False, val_fraction=0.2, seed=1)
    assert a.val is not None
    assert (len(a.train), len(a.val)) == (40, 10)
    train_ids, val_ids = set(_image_ids(a.train)), set(_image_ids(a.val))
    assert not train_ids & val_ids
    assert train_ids | val_ids == set(range(N_TRAIN))
    # labels travel with their images
    for split in (a.train, a.val):
        assert [i % 10 for i in _image_ids(split)] == split.labels.tolist()
    assert len(a.test) == N_TEST  # the test set is never split

    b = load_dataset("mnist", data_dir=tmp_path, check_sizes=False, val_fraction=0.2, seed=1)
    assert b.val is not None and _image_ids(b.val) == _image_ids(a.val)
    c = load_dataset("mnist", data_dir=tmp_path, check_sizes=False, val_fraction=0.2, seed=2)
    assert c.val is not None and set(_image_ids(c.val)) != val_ids


def test_fraction(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    ds = load_dataset("mnist", data_dir=tmp_path, check_sizes=False, fraction=0.5, seed=3)
    ids = _image_ids(ds.train)
    assert len(ids) == 25 and len(set(ids)) == 25 and set(ids) <= set(range(N_TRAIN))
    assert ids != list(range(25))  # random, not the first half
    again = load_dataset("mnist", data_dir=tmp_path, check_sizes=False, fraction=0.5, seed=3)
    assert _image_ids(again.train) == ids
    both = load_dataset(
        "mnist", data_dir=tmp_path, check_sizes=False, fraction=0.4, val_fraction=0.25
    )
    assert both.val is not None and (len(both.train), len(both.val)) == (15, 5)
    assert not set(_image_ids(both.train)) & set(_image_ids(both.val))
    assert len(both.test) == N_TEST


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"fraction": 0.0}, r"fraction must be in \(0, 1\], got 0.0"),
        ({"fraction": 1.5}, r"fraction must be in \(0, 1\]"),
        ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\), got 1.0"),
        ({"val_fraction": -0.1}, r"val_fraction must be in \[0, 1\)"),
        ({"fraction": 0.02, "val_fraction": 0.5}, "leaves none for training"),
        ({"device": "gpu:what"}, "bad device 'gpu:what'"),
        ({"seed": 1.5}, "seed must be an int, got 1.5"),
    ],
)
def test_bad_options(tmp_path: Path, kwargs: dict[str, Any], pattern: str) -> None:
    _write_mnist(tmp_path)
    with pytest.raises(ConfigError, match=pattern):
        load_dataset("mnist", data_dir=tmp_path, check_sizes=False, **kwargs)


def test_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="choose one of: cifar10, fashion_mnist, kmnist, mnist"):
        load_dataset("svhn", data_dir=tmp_path)


def test_missing_files_message(tmp_path: Path) -> None:
    folder = _write_mnist(tmp_path)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    (folder / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError) as info:
        load_dataset("mnist", data_dir=tmp_path, check_sizes=False)
    msg = str(info.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg and "train-images-idx3-ubyte.gz" in msg
    assert "train-labels-idx1-ubyte.gz" not in msg
    assert str(folder) in msg
    assert f"ff data fetch mnist --data-dir {tmp_path}" in msg


def test_size_check(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz has size \d+ != 9912422"):
        load_dataset("mnist", data_dir=tmp_path)


def test_inconsistent_files(tmp_path: Path) -> None:
    folder = _write_mnist(tmp_path)
    labels = folder / "train-labels-idx1-ubyte.gz"
    write_idx(labels, np.zeros(N_TRAIN - 1, dtype=np.uint8), compress=True)
    with pytest.raises(DataError, match=f"{N_TRAIN} images but {N_TRAIN - 1} labels"):
        load_dataset("mnist", data_dir=tmp_path, check_sizes=False)
    bad = np.zeros(N_TRAIN, dtype=np.uint8)
    bad[7] = 10
    write_idx(labels, bad, compress=True)
    with pytest.raises(DataError, match="label 10 out of range; expected 0 to 9"):
        load_dataset("mnist", data_dir=tmp_path, check_sizes=False)
    write_idx(labels, np.zeros(N_TRAIN, dtype=np.uint8), compress=True)
    write_idx(
        folder / "train-images-idx3-ubyte.gz", np.zeros((N_TRAIN, 28, 27), np.uint8), compress=True
    )
    with pytest.raises(
        DataError, match=r"mnist/train-images-idx3-ubyte\.gz: expected uint8 images"
    ):
        load_dataset("mnist", data_dir=tmp_path, check_sizes=False)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03junk"))
    with pytest.raises(DataError, match=r"mnist/train-images-idx3-ubyte\.gz: truncated header"):
        load_dataset("mnist", data_dir=tmp_path, check_sizes=False)


def test_split_helpers() -> None:
    split = Split(torch.arange(24, dtype=torch.uint8).reshape(6, 1, 2, 2), torch.arange(6))
    sub = split.subset(torch.tensor([4, 1]))
    assert sub.labels.tolist() == [4, 1] and sub.images[0, 0, 0, 0].item() == 16
    assert len(split.subset(split.labels % 2 == 0)) == 3
    with pytest.raises(DataError, match="uint8"):
        Split(torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(DataError, match="2 images but 3 labels"):
        Split(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))


# ------------------------------------------------------------------------------------------
# Synthetic CIFAR-10 archive in the real format

CIFAR_NAMES = [
    b"airplane",
    b"automobile",
    b"bird",
    b"cat",
    b"deer",
    b"dog",
    b"frog",
    b"horse",
    b"ship",
    b"truck",
]
PER_BATCH, N_CIFAR_TEST = 4, 6


def _cifar_batch(n: int, start: int) -> dict[bytes, Any]:
    rng = np.random.default_rng(start)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    data[:, 0] = np.arange(start, start + n)  # red pixel (0, 0) = global index
    return {
        b"batch_label": b"synthetic",
        b"labels": [int(v) for v in (np.arange(start, start + n) % 10)],
        b"data": data,
        b"filenames": [b"img%d.png" % i for i in range(n)],
    }


def _write_cifar(root: Path, replace: dict[str, bytes] | None = None) -> dict[str, Any]:
    folder = root / "cifar10"
    folder.mkdir(parents=True, exist_ok=True)
    members: dict[str, bytes] = {}
    batches: dict[str, Any] = {}
    for i in range(1, 6):
        batches[f"data_batch_{i}"] = _cifar_batch(PER_BATCH, (i - 1) * PER_BATCH)
    batches["test_batch"] = _cifar_batch(N_CIFAR_TEST, 100)
    for name, batch in batches.items():
        members[name] = pickle.dumps(batch, protocol=2)
    meta = {b"num_cases_per_batch": PER_BATCH, b"label_names": CIFAR_NAMES, b"num_vis": 3072}
    members["batches.meta"] = pickle.dumps(meta, protocol=2)
    members.update(replace or {})
    with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as tar:
        for name, payload in [("readme.html", b"<html/>"), *members.items()]:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return batches


def test_synthetic_cifar10(tmp_path: Path) -> None:
    batches = _write_cifar(tmp_path)
    ds = load_dataset("cifar10", data_dir=tmp_path, check_sizes=False)
    assert ds.classes == tuple(n.decode() for n in CIFAR_NAMES)
    assert ds.train.images.shape == (5 * PER_BATCH, 3, 32, 32)
    assert ds.train.images.dtype == torch.uint8 and ds.train.labels.dtype == torch.int64
    assert ds.test.images.shape == (N_CIFAR_TEST, 3, 32, 32)
    assert ds.train.labels.tolist() == [i % 10 for i in range(5 * PER_BATCH)]
    assert ds.train.images[:, 0, 0, 0].tolist() == list(range(5 * PER_BATCH))

    # Layout: row = 1024 red values, then 1024 green, then 1024 blue, each plane row-major.
    row = batches["data_batch_2"][b"data"][1]  # global training index PER_BATCH + 1
    img = ds.train.images[PER_BATCH + 1]
    for c, y, x in [(0, 0, 1), (1, 5, 7), (2, 31, 0), (2, 31, 31), (1, 0, 31)]:
        assert img[c, y, x].item() == row[c * 1024 + y * 32 + x]
    test_row = batches["test_batch"][b"data"][5]
    assert torch.equal(ds.test.images[5].flatten(), torch.from_numpy(test_row))


def test_cifar10_val_split(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    ds = load_dataset("cifar-10", data_dir=tmp_path, check_sizes=False, val_fraction=0.25)
    assert ds.val is not None and (len(ds.train), len(ds.val)) == (15, 5)
    ids = ds.train.images[:, 0, 0, 0].tolist() + ds.val.images[:, 0, 0, 0].tolist()
    assert sorted(ids) == list(range(20))


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_cifar10_malicious_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = pickle.dumps({b"data": _Evil(marker), b"labels": []}, protocol=2)
    _write_cifar(tmp_path, {"data_batch_3": evil})
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", data_dir=tmp_path, check_sizes=False)
    msg = str(info.value)
    assert "cifar10/cifar-10-python.tar.gz:cifar-10-batches-py/data_batch_3" in msg
    assert "forbidden global" in msg and "system" in msg
    assert not marker.exists()


def test_cifar10_other_forbidden_globals(tmp_path: Path) -> None:
    # GLOBAL builtins.eval, then call it: refused before anything is called.
    payload = b"cbuiltins\neval\n(V1+1\ntR."
    _write_cifar(tmp_path, {"batches.meta": payload})
    with pytest.raises(DataError, match=r"forbidden global builtins\.eval"):
        load_dataset("cifar10", data_dir=tmp_path, check_sizes=False)


@pytest.mark.parametrize(
    ("replace", "pattern"),
    [
        ({"test_batch": pickle.dumps([1, 2, 3], protocol=2)}, "expected a pickled dict"),
        ({"test_batch": pickle.dumps({b"labels": []}, protocol=2)}, "no 'data' entry"),
        (
            {
                "test_batch": pickle.dumps(
                    {b"data": np.zeros((2, 3072)), b"labels": [0, 1]}, protocol=2
                )
            },
            "must be a uint8",
        ),
        (
            {
                "test_batch": pickle.dumps(
                    {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, protocol=2
                )
            },
            "2 images but 1 labels",
        ),
        ({"test_batch": b"\x80\x02garbage"}, "not a valid pickled batch"),
    ],
)
def test_cifar10_bad_batches(tmp_path: Path, replace: dict[str, bytes], pattern: str) -> None:
    _write_cifar(tmp_path, replace)
    with pytest.raises(DataError, match=pattern):
        load_dataset("cifar10", data_dir=tmp_path, check_sizes=False)


def test_cifar10_bad_archive(tmp_path: Path) -> None:
    folder = tmp_path / "cifar10"
    folder.mkdir()
    path = folder / "cifar-10-python.tar.gz"
    path.write_bytes(b"not a tar file at all")
    with pytest.raises(DataError, match=r"not a readable tar\.gz archive"):
        load_dataset("cifar10", data_dir=tmp_path, check_sizes=False)
    _write_cifar(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz"):
        load_dataset("cifar10", data_dir=tmp_path, check_sizes=False)
    with tarfile.open(path, "w:gz") as tar:  # a valid archive without the batches
        info = tarfile.TarInfo("cifar-10-batches-py/readme.html")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(DataError, match=r"the archive lacks .*data_batch_1"):
        load_dataset("cifar10", data_dir=tmp_path, check_sizes=False)


# ------------------------------------------------------------------------------------------
# Integration: the real MNIST and Fashion-MNIST

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _real_root(name: str) -> Path:
    root = resolve_data_dir()
    spec = CATALOG[name]
    folder = root / spec.folder
    if not all((folder / f.name).is_file() for f in spec.files.values()):
        pytest.skip(
            f"{spec.title} not found in {folder}: set FORWARDFORWARD_DATA to the folder holding "
            f"{spec.folder}/ (or run `ff data fetch {name}`)"
        )
    return root


@pytest.mark.integration
def test_real_mnist() -> None:
    root = _real_root("mnist")
    ds = load_dataset("mnist", data_dir=root)
    assert ds.train.images.shape == (60000, 1, 28, 28)
    assert ds.test.images.shape == (10000, 1, 28, 28)
    assert ds.train.labels.bincount(minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert ds.test.labels.bincount(minlength=10).tolist() == MNIST_TEST_COUNTS
    assert ds.train.images.max().item() == 255 and ds.train.images.min().item() == 0


@pytest.mark.integration
def test_real_mnist_read_speed() -> None:
    root = _real_root("mnist")
    path = root / "mnist" / "train-images-idx3-ubyte.gz"
    start = time.perf_counter()
    images = read_idx(path)
    elapsed = time.perf_counter() - start
    assert images.shape == (60000, 28, 28)
    # Typically ~0.25 s; the bound is loose to survive a busy machine but catches Python loops.
    assert elapsed < 5.0


@pytest.mark.integration
def test_real_fashion_mnist_with_verify() -> None:
    root = _real_root("fashion_mnist")
    ds = load_dataset("fashion_mnist", data_dir=root, verify=True, val_fraction=0.1)
    assert ds.val is not None and (len(ds.train), len(ds.val)) == (54000, 6000)
    counts = torch.cat([ds.train.labels, ds.val.labels]).bincount(minlength=10).tolist()
    assert counts == [6000] * 10
    assert ds.classes[9] == "Ankle boot"


# ------------------------------------------------------------------------------------------
# Uncompressed IDX files (torchvision's raw/ layout)


def _decompress_all(folder: Path, keep: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """Replace each ``.gz`` in ``folder`` by its uncompressed form, except those in ``keep``."""
    for gz in folder.glob("*.gz"):
        if gz.name not in keep:
            gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
            gz.unlink()


def test_uncompressed_idx_files_load_and_say_so(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    packed = load_dataset("mnist", data_dir=tmp_path, check_sizes=False, download=False)
    # the same data once the four files are uncompressed
    folder = tmp_path / "mnist"
    _decompress_all(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f.name.removesuffix(".gz") for f in CATALOG["mnist"].files.values()
    )
    raw = load_dataset("mnist", data_dir=tmp_path, check_sizes=False, download=False)
    assert torch.equal(raw.train.images, packed.train.images)
    assert torch.equal(raw.test.labels, packed.test.labels)
    assert {p.name for p in raw.files} == {p.name for p in folder.iterdir()}
    assert "4 uncompressed file(s)" in raw.describe_files()
    assert "4 compressed file(s)" in packed.describe_files()


def test_a_mix_of_compressed_and_uncompressed_files_loads(tmp_path: Path) -> None:
    folder = _write_mnist(tmp_path)
    _decompress_all(folder, keep={"train-labels-idx1-ubyte.gz"})
    ds = load_dataset("mnist", data_dir=tmp_path, check_sizes=False, download=False)
    assert _image_ids(ds.train) == list(range(N_TRAIN))
    assert "3 uncompressed" in ds.describe_files()


def test_uncompressed_files_are_size_checked_against_their_own_size(tmp_path: Path) -> None:
    _decompress_all(_write_mnist(tmp_path))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte has size \d+ != 47040016"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_a_missing_file_names_both_forms(tmp_path: Path) -> None:
    folder = _write_mnist(tmp_path)
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(
        DataError, match=r"t10k-images-idx3-ubyte\.gz \(or t10k-images-idx3-ubyte\)"
    ):
        load_dataset("mnist", data_dir=tmp_path, check_sizes=False, download=False)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_the_catalog_knows_the_real_uncompressed_files(name: str) -> None:
    for spec in CATALOG[name].files.values():
        raw = spec.unpacked
        assert raw is not None and raw.name == spec.name.removesuffix(".gz") and raw.mirrors == ()
        n = 60000 if "train" in spec.name else 10000
        assert raw.size == (16 + n * 28 * 28 if "images" in spec.name else 8 + n)
        assert raw.sha256 is not None and len(raw.sha256) == 64


@pytest.mark.integration
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_real_uncompressed_files_verify_and_load(tmp_path: Path, name: str) -> None:
    """The catalog's sizes and sha256 of the uncompressed files are those of the real data."""
    from forwardforward.data import verify_dataset

    real = _real_root(name) / CATALOG[name].folder
    folder = tmp_path / CATALOG[name].folder
    folder.mkdir()
    for spec in CATALOG[name].files.values():
        assert spec.unpacked is not None
        (folder / spec.unpacked.name).write_bytes(gzip.decompress((real / spec.name).read_bytes()))
    reports = verify_dataset(name, tmp_path)
    assert [r.status for r in reports] == ["verified"] * 4, reports
    assert all(not r.file.endswith(".gz") for r in reports)
    ds = load_dataset(name, data_dir=tmp_path, download=False)
    assert ds.train.images.shape == (60000, 1, 28, 28) and len(ds.test) == 10000
