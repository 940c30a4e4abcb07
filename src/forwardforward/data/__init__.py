"""Datasets for forwardforward: a catalog, verified downloads and in-memory loading.

Typical use::

    from forwardforward.data import load_dataset

    ds = load_dataset("mnist", val_fraction=0.1, seed=0)
    x = ds.train.float()   # (N, 1, 28, 28) float32 in [0, 1]
    y = ds.train.labels    # (N,) int64

Files live in ``<data dir>/<dataset folder>/``; the data directory is the ``data_dir``
argument, else ``$FORWARDFORWARD_DATA``, else ``~/.cache/forwardforward``.
"""

from forwardforward.data.catalog import (
    CATALOG,
    DatasetSpec,
    FileSpec,
    dataset_names,
    dataset_spec,
)
from forwardforward.data.fetch import (
    DATA_ENV_VAR,
    FileReport,
    fetch_dataset,
    fetch_file,
    hash_file,
    resolve_data_dir,
    verify_dataset,
    verify_file,
)
from forwardforward.data.idx import encode_idx, read_idx, write_idx
from forwardforward.data.vision import Split, VisionDataset, load_dataset

__all__ = [
    "CATALOG",
    "DATA_ENV_VAR",
    "DatasetSpec",
    "FileReport",
    "FileSpec",
    "Split",
    "VisionDataset",
    "dataset_names",
    "dataset_spec",
    "encode_idx",
    "fetch_dataset",
    "fetch_file",
    "hash_file",
    "load_dataset",
    "read_idx",
    "resolve_data_dir",
    "verify_dataset",
    "verify_file",
    "write_idx",
]
