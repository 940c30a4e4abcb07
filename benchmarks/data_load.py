"""Time loading MNIST from its .gz files.

Usage::

    python benchmarks/data_load.py [--data-dir DIR] [--repeat 5] [--dataset mnist]

The data directory defaults to $FORWARDFORWARD_DATA, then the user cache. Prints one JSON object:
the median and all timings of ``load_dataset(NAME)`` (train and test splits, decompression,
parsing and tensor conversion) and of ``read_idx`` on the training images alone.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="data directory (default: see above)")
    parser.add_argument("--dataset", default="mnist", help="an IDX dataset (default: mnist)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs (default: 5)")
    args = parser.parse_args(argv)

    try:
        import forwardforward.data as ffd
    except ImportError:  # running from a checkout without installing
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        import forwardforward.data as ffd

    import torch

    root = ffd.resolve_data_dir(args.data_dir)
    spec = ffd.dataset_spec(args.dataset)
    images_path = root / spec.folder / spec.files["train_images"].name

    ffd.load_dataset(spec.name, data_dir=root)  # warm-up: imports, page cache

    load_times: list[float] = []
    train_shape: list[int] = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        ds = ffd.load_dataset(spec.name, data_dir=root)
        load_times.append(time.perf_counter() - start)
        train_shape = list(ds.train.images.shape)

    read_times: list[float] = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        ffd.read_idx(images_path)
        read_times.append(time.perf_counter() - start)

    result = {
        "benchmark": "data_load",
        "dataset": spec.name,
        "data_dir": str(root),
        "repeat": args.repeat,
        "train_shape": train_shape,
        "load_dataset_median_s": round(statistics.median(load_times), 4),
        "load_dataset_s": [round(t, 4) for t in load_times],
        "read_idx_train_images_median_s": round(statistics.median(read_times), 4),
        "read_idx_train_images_s": [round(t, 4) for t in read_times],
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
