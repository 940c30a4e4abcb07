"""Image classification datasets as in-memory tensors: MNIST, Fashion-MNIST, KMNIST, CIFAR-10.

Everything is loaded at once (MNIST is 47 MB of uint8 pixels, CIFAR-10 184 MB) and kept as
uint8; :meth:`Split.float` makes a float copy scaled to ``[0, 1]`` on demand.
"""

from __future__ import annotations

import importlib
import io
import math
import operator
import os
import pickle
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from forwardforward.data.catalog import DatasetSpec, FileSpec, dataset_spec
from forwardforward.data.fetch import fetch_dataset, present_form, resolve_data_dir, verify_file
from forwardforward.data.idx import read_idx
from forwardforward.errors import ConfigError, DataError, FetchError

__all__ = ["OFFLINE_ENV", "Split", "VisionDataset", "load_dataset", "offline"]

#: Set to ``1`` to turn automatic downloads off (``load_dataset`` and ``ff train``).
OFFLINE_ENV = "FORWARDFORWARD_OFFLINE"


@dataclass
class Split:
    """One split of a dataset.

    Attributes:
        images: ``(N, C, H, W)`` uint8 pixels, 0-255.
        labels: ``(N,)`` int64 class indices.
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DataError(
                f"Split.images must be a uint8 (N, C, H, W) tensor, got {self.images.dtype} "
                f"of shape {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.ndim != 1:
            raise DataError(
                f"Split.labels must be an int64 (N,) tensor, got {self.labels.dtype} "
                f"of shape {tuple(self.labels.shape)}"
            )
        if self.images.shape[0] != self.labels.shape[0]:
            raise DataError(
                f"Split has {self.images.shape[0]} images but {self.labels.shape[0]} labels"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def device(self) -> torch.device:
        """The device holding the tensors."""
        return self.images.device

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def to(self, device: str | torch.device) -> Split:
        """A copy of this split on ``device`` (no copy when it is already there)."""
        return Split(self.images.to(device), self.labels.to(device))

    def float(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The images as ``(N, C, H, W)`` floats in ``[0, 1]`` (a new tensor, same device)."""
        return self.images.to(dtype).div_(255)

    def subset(self, index: torch.Tensor) -> Split:
        """The examples selected by ``index`` (int64 indices or an ``(N,)`` bool mask)."""
        index = index.to(self.images.device)
        return Split(self.images[index], self.labels[index])


@dataclass
class VisionDataset:
    """A loaded dataset.

    Attributes:
        name: catalog name, e.g. ``"mnist"``.
        num_classes: labels are ``0 .. num_classes - 1``.
        classes: class names, indexed by label.
        train: the training split (after ``fraction`` and ``val_fraction`` were applied).
        val: the validation split carved out of the training set, or ``None``.
        test: the full test split.
        files: the files it was read from (empty for generated data), e.g. the uncompressed
            ``train-images-idx3-ubyte`` where that is what the folder held.
    """

    name: str
    num_classes: int
    classes: tuple[str, ...]
    train: Split
    val: Split | None
    test: Split
    files: tuple[Path, ...] = ()

    def describe_files(self) -> str:
        """Where the data came from, in one line (``""`` for generated data)."""
        if not self.files:
            return ""
        folders = sorted({str(p.parent) for p in self.files})
        raw = sum(1 for p in self.files if p.suffix not in (".gz", ".tgz"))
        form = (
            "compressed"
            if raw == 0
            else "uncompressed"
            if raw == len(self.files)
            else f"{raw} uncompressed"
        )
        return f"{self.name}: read {len(self.files)} {form} file(s) from {', '.join(folders)}"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return self.train.image_shape

    def to(self, device: str | torch.device) -> VisionDataset:
        """A copy of the dataset with every split on ``device``."""
        return VisionDataset(
            name=self.name,
            num_classes=self.num_classes,
            classes=self.classes,
            train=self.train.to(device),
            val=None if self.val is None else self.val.to(device),
            test=self.test.to(device),
            files=self.files,
        )


# --------------------------------------------------------------------------------------------
# Loading


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    val_fraction: float = 0.0,
    fraction: float = 1.0,
    seed: int = 0,
    download: bool | None = None,
    verify: bool = False,
    check_sizes: bool = True,
    progress: bool = True,
) -> VisionDataset:
    """Load a catalog dataset into memory as uint8 image and int64 label tensors.

    Args:
        name: ``"mnist"``, ``"fashion_mnist"``, ``"kmnist"`` or ``"cifar10"`` (``-`` works too).
        data_dir: the data directory; files are read from ``<data_dir>/<folder>/``
            (default: :func:`~forwardforward.data.fetch.resolve_data_dir`).
        device: where to put the tensors.
        val_fraction: fraction in ``[0, 1)`` of the (kept) training set split off as a
            validation set; ``0`` gives ``val=None``.
        fraction: fraction in ``(0, 1]`` of the training set to keep, chosen at random.
        seed: seeds the random choices; the same seed gives the same splits.
        download: fetch missing or wrong-sized files first, verified and atomically (see
            :func:`~forwardforward.data.fetch.fetch_dataset`). ``None`` (the default) means yes
            unless ``$FORWARDFORWARD_OFFLINE`` is set to ``1``; ``False`` never downloads.
            Either form of an IDX file counts as present: the ``.gz`` as distributed or the
            uncompressed file (without ``.gz``, as in torchvision's ``raw/`` folders).
        verify: check every file's sha256 before reading (slower; otherwise only sizes are
            checked).
        check_sizes: compare file sizes with the catalog before reading. Set it to ``False`` to
            read your own files in the same format (e.g. small synthetic ones in tests).
        progress: show progress bars when downloading.

    Returns:
        The dataset; ``train.images`` is ``(N, C, H, W)`` uint8 with ``(C, H, W)`` =
        ``(1, 28, 28)`` for the MNIST family and ``(3, 32, 32)`` for CIFAR-10.

    Raises:
        ConfigError: unknown dataset, bad fraction or bad device.
        DataError: files missing (the message says how to fetch them), corrupt or inconsistent.
        DataError: also when files are missing and downloading them failed; the message
            names the files, the folder to put them in by hand and each mirror's reason.
    """
    spec = dataset_spec(name)
    _check_fraction("fraction", fraction, low_open=True)
    _check_fraction("val_fraction", val_fraction, low_open=False)
    try:
        if isinstance(seed, bool):
            raise TypeError
        seed = operator.index(seed)
    except TypeError:
        raise ConfigError(f"seed must be an int, got {seed!r}") from None
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ConfigError(f"bad device {device!r}: {exc}") from exc

    # one pass: find the files, fetch what is missing, check them, read them
    root = resolve_data_dir(data_dir)
    folder = root / spec.folder
    found = _locate(spec, folder, check_sizes=check_sizes)
    failure = ""
    if (found.missing or found.damaged) and (not offline() if download is None else download):
        try:
            fetch_dataset(spec.name, root, progress=progress)
        except FetchError as exc:
            failure = str(exc)
        found = _locate(spec, folder, check_sizes=check_sizes)
    if found.missing or found.damaged:
        raise DataError(_problem_message(spec, root, folder, found, fetch_failure=failure))
    if verify:
        reports = [
            verify_file(found.paths[r], f, dataset=spec.name) for r, f in found.forms.items()
        ]
        bad = [r for r in reports if not r.ok]
        if bad:
            details = "; ".join(f"{r.file}: {r.status} ({r.detail})" for r in bad)
            raise DataError(
                f"{spec.title} in {folder} failed verification: {details}. Delete the bad "
                f"file(s) and run `ff data fetch {spec.name} --data-dir {root}`."
            )
    paths = found.paths

    if spec.format == "idx":
        train = _load_idx_split(spec, paths, "train")
        test = _load_idx_split(spec, paths, "test")
        classes = spec.classes
    else:
        train, test, classes = _load_cifar10(spec, paths["archive"])

    if len(train) == 0:
        raise DataError(f"{spec.title} in {folder}: the training set is empty")
    train_part, val_part = _split_train(train, fraction, val_fraction, seed)
    try:
        return VisionDataset(
            name=spec.name,
            num_classes=spec.num_classes,
            classes=classes,
            train=train_part.to(target),
            val=None if val_part is None else val_part.to(target),
            test=test.to(target),
            files=tuple(paths.values()),
        )
    except (RuntimeError, AssertionError) as exc:
        raise ConfigError(f"cannot move {spec.title} to device {str(target)!r}: {exc}") from exc


def _check_fraction(what: str, value: float, *, low_open: bool) -> None:
    interval = "(0, 1]" if low_open else "[0, 1)"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(f"{what} must be a number in {interval}, got {value!r}")
    ok = 0 < value <= 1 if low_open else 0 <= value < 1
    if not ok:
        raise ConfigError(f"{what} must be in {interval}, got {value!r}")


@dataclass
class _Found:
    """What :func:`_locate` found: each role's file (``paths``) in the form present (``forms``),
    the missing files' names and one line per damaged file."""

    paths: dict[str, Path] = field(default_factory=dict)
    forms: dict[str, FileSpec] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)


def _locate(spec: DatasetSpec, folder: Path, *, check_sizes: bool) -> _Found:
    """Each file of ``spec`` in ``folder``, in either of its forms (see
    :func:`~forwardforward.data.fetch.present_form`), size-checked unless ``check_sizes`` is
    False."""
    found = _Found()
    for role, distributed in spec.files.items():
        form = present_form(folder, distributed)
        path = folder / form.name
        try:
            size = path.stat().st_size
        except OSError:
            raw = distributed.unpacked
            found.missing.append(form.name + ("" if raw is None else f" (or {raw.name})"))
            continue
        if not path.is_file():
            found.damaged.append(f"{form.name} is not a regular file")
        elif check_sizes and size != form.size:
            found.damaged.append(
                f"{form.name} has size {size} != {form.size} (incomplete or not the original file)"
            )
        else:
            found.paths[role], found.forms[role] = path, form
    return found


def offline() -> bool:
    """Whether ``$FORWARDFORWARD_OFFLINE`` turns automatic downloads off (``1``, ``true``,
    ``yes``; ``0``, ``false``, ``no`` or unset leave them on)."""
    value = os.environ.get(OFFLINE_ENV, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ConfigError(f"{OFFLINE_ENV}={value!r}: expected 1/true/yes or 0/false/no")


def _problem_message(
    spec: DatasetSpec, root: Path, folder: Path, found: _Found, fetch_failure: str = ""
) -> str:
    missing, damaged = found.missing, found.damaged
    fetch = (
        f"`ff data fetch {spec.name} --data-dir {root}` (or call load_dataset(..., download=True))"
    )
    parts: list[str] = []
    if missing:
        parts.append(
            f"{spec.title}: {len(missing)} of {len(spec.files)} files missing in {folder}: "
            f"{', '.join(missing)}."
        )
        if fetch_failure:
            parts.append(f"Downloading them failed: {fetch_failure}")
        else:
            parts.append(
                f"Download them with {fetch}, or put them there by hand (automatic downloads "
                f"were off: download=False, --no-download or {OFFLINE_ENV}=1)."
            )
    if damaged:
        parts.append(
            f"{spec.title}: damaged files in {folder}: {'; '.join(damaged)}. Delete them and run "
            f"{fetch}; to read files that differ from the catalog on purpose, pass "
            "check_sizes=False."
        )
    return " ".join(parts)


def _load_idx_split(spec: DatasetSpec, paths: dict[str, Path], which: str) -> Split:
    img_path, lab_path = paths[f"{which}_images"], paths[f"{which}_labels"]
    img_name = f"{spec.folder}/{img_path.name}"
    lab_name = f"{spec.folder}/{lab_path.name}"
    images = read_idx(img_path, name=img_name)
    labels = read_idx(lab_path, name=lab_name)
    _, h, w = spec.image_shape
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (h, w):
        raise DataError(
            f"{img_name}: expected uint8 images of shape (N, {h}, {w}), got {images.dtype} data "
            f"of shape {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(
            f"{lab_name}: expected uint8 labels of shape (N,), got {labels.dtype} data of shape "
            f"{labels.shape}"
        )
    _check_labels(labels, len(images), spec.num_classes, f"{img_name} and {lab_name}")
    return Split(
        torch.from_numpy(images).unsqueeze(1),
        torch.from_numpy(labels.astype(np.int64)),
    )


def _check_labels(labels: npt.NDArray[Any], n_images: int, num_classes: int, where: str) -> None:
    if len(labels) != n_images:
        raise DataError(f"{where}: {n_images} images but {len(labels)} labels")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)]
        raise DataError(
            f"{where}: label {int(bad[0])} out of range; expected 0 to {num_classes - 1} "
            f"({len(bad)} bad labels)"
        )


def _split_train(
    train: Split, fraction: float, val_fraction: float, seed: int
) -> tuple[Split, Split | None]:
    """Keep a seeded random ``fraction`` of ``train``, then split off ``val_fraction`` of it."""
    n = len(train)
    generator = torch.Generator().manual_seed(seed)
    keep: torch.Tensor | None = None
    if fraction < 1:
        k = max(1, round(n * fraction))
        keep = torch.randperm(n, generator=generator)[:k].sort().values
    if val_fraction == 0:
        return (train if keep is None else train.subset(keep)), None
    pool = torch.arange(n) if keep is None else keep
    m = len(pool)
    n_val = max(1, round(m * val_fraction))
    if n_val >= m:
        raise ConfigError(
            f"val_fraction={val_fraction} of {m} training examples leaves none for training; "
            "use a smaller val_fraction or a larger fraction"
        )
    perm = torch.randperm(m, generator=generator)
    val_idx = pool[perm[:n_val]].sort().values
    train_idx = pool[perm[n_val:]].sort().values
    return train.subset(train_idx), train.subset(val_idx)


# --------------------------------------------------------------------------------------------
# CIFAR-10 (python version): a tar.gz of pickled dicts, read without executing pickled code.

_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_MEMBERS = (*_CIFAR_TRAIN, "test_batch", "batches.meta")
_MAX_MEMBER_BYTES = 256 << 20  # a real batch is about 31 MB


def _numpy_reconstruct() -> Callable[..., Any]:
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            func: Callable[..., Any] = importlib.import_module(module)._reconstruct
        except (ImportError, AttributeError):
            continue
        return func
    raise DataError("cannot find numpy's _reconstruct to read pickled arrays")  # pragma: no cover


class _Forbidden(pickle.UnpicklingError):
    """The pickle asked for a global or a call that is not on the allow-list."""


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """What protocol-2 pickles made by Python 3 use to store ``bytes``; latin-1 only."""
    if not isinstance(text, str) or encoding.lower().replace("-", "") != "latin1":
        raise _Forbidden(f"forbidden call _codecs.encode(..., {encoding!r})")
    return text.encode("latin1")


def _safe_bytes(*args: Any) -> bytes:
    if args and isinstance(args[0], int):
        raise _Forbidden("forbidden call bytes(<int>)")
    return bytes(*args)


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the few globals a CIFAR-10 batch needs; anything else is refused."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, encoding="bytes")
        reconstruct = _numpy_reconstruct()
        allowed: dict[tuple[str, str], Any] = {
            ("numpy.core.multiarray", "_reconstruct"): reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): reconstruct,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): _latin1_encode,
        }
        for module in ("builtins", "__builtin__"):
            allowed[(module, "dict")] = dict
            allowed[(module, "list")] = list
            allowed[(module, "str")] = str
            allowed[(module, "int")] = int
            allowed[(module, "bytes")] = _safe_bytes
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _Forbidden(f"forbidden global {module}.{name}") from None


def _safe_unpickle(data: bytes, label: str) -> Any:
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except _Forbidden as exc:
        raise DataError(f"{label}: refusing to load: {exc}") from None
    except Exception as exc:  # any failure while decoding untrusted bytes is a data problem
        raise DataError(f"{label}: not a valid pickled batch: {type(exc).__name__}: {exc}") from exc


def _get(obj: dict[Any, Any], key: str) -> Any:
    if key.encode() in obj:
        return obj[key.encode()]
    if key in obj:
        return obj[key]
    raise KeyError(key)


def _cifar_batch(obj: Any, label: str, num_classes: int) -> Split:
    if not isinstance(obj, dict):
        raise DataError(f"{label}: expected a pickled dict, got {type(obj).__name__}")
    try:
        data = _get(obj, "data")
        raw_labels = _get(obj, "labels")
    except KeyError as exc:
        raise DataError(f"{label}: no {exc.args[0]!r} entry in the batch dict") from None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        shape = getattr(data, "shape", None)
        raise DataError(
            f"{label}: 'data' must be a uint8 (N, 3072) array, got {type(data).__name__} "
            f"{getattr(data, 'dtype', '')} of shape {shape}"
        )
    if data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{label}: 'data' must have 3072 columns (3x32x32), got {data.shape[1]}")
    if not isinstance(raw_labels, (list, np.ndarray)):
        raise DataError(f"{label}: 'labels' must be a list, got {type(raw_labels).__name__}")
    try:
        labels = np.asarray(raw_labels)
    except Exception as exc:
        raise DataError(f"{label}: 'labels' is not a list of ints: {exc}") from exc
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise DataError(f"{label}: 'labels' must be a flat list of ints, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    _check_labels(labels, len(data), num_classes, label)
    # Each row is the red plane, then green, then blue, each 32x32 row-major: (N, 3, 32, 32).
    images = np.ascontiguousarray(data).reshape(len(data), 3, 32, 32)
    return Split(torch.from_numpy(images), torch.from_numpy(labels))


def _read_members(path: Path, label: str) -> dict[str, bytes]:
    wanted = {f"{_CIFAR_DIR}/{m}": m for m in _CIFAR_MEMBERS}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r|gz") as tar:
            for member in tar:
                key = wanted.get(member.name.removeprefix("./"))
                if key is None:
                    continue
                if not member.isfile():
                    raise DataError(f"{label}: {member.name} is not a regular file")
                if member.size > _MAX_MEMBER_BYTES:
                    raise DataError(f"{label}: {member.name} is too large ({member.size} bytes)")
                handle = tar.extractfile(member)
                if handle is None:  # pragma: no cover - isfile() was checked
                    raise DataError(f"{label}: cannot read {member.name}")
                found[key] = handle.read()
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{label}: file not found") from None
    except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError) as exc:
        raise DataError(f"{label}: not a readable tar.gz archive: {exc}") from exc
    missing = [f"{_CIFAR_DIR}/{m}" for m in _CIFAR_MEMBERS if m not in found]
    if missing:
        raise DataError(f"{label}: the archive lacks {', '.join(missing)}")
    return found


def _load_cifar10(spec: DatasetSpec, path: Path) -> tuple[Split, Split, tuple[str, ...]]:
    label = f"{spec.folder}/{path.name}"
    members = _read_members(path, label)

    meta = _safe_unpickle(members["batches.meta"], f"{label}:{_CIFAR_DIR}/batches.meta")
    try:
        names = _get(meta, "label_names") if isinstance(meta, dict) else None
    except KeyError:
        names = None
    if not isinstance(names, list) or len(names) != spec.num_classes:
        raise DataError(
            f"{label}: batches.meta must hold 'label_names', a list of {spec.num_classes} names"
        )
    classes = tuple(n.decode("ascii", "replace") if isinstance(n, bytes) else str(n) for n in names)

    batches = [
        _cifar_batch(
            _safe_unpickle(members[m], f"{label}:{_CIFAR_DIR}/{m}"),
            f"{label}:{_CIFAR_DIR}/{m}",
            spec.num_classes,
        )
        for m in (*_CIFAR_TRAIN, "test_batch")
    ]
    train = Split(
        torch.cat([b.images for b in batches[:-1]]), torch.cat([b.labels for b in batches[:-1]])
    )
    return train, batches[-1], classes
