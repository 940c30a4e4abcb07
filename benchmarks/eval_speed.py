"""Evaluation speed of a trained-size FF net on the 10,000 MNIST test images: the batched
try-all-labels readout, the naive one-label-at-a-time loop it replaces, and the one-pass linear
probe.

    python benchmarks/eval_speed.py [--preset hinton-mnist] [--repeats 3] [--batch 1000]

Speed does not depend on the weights, so the net is freshly initialised; the images are the real
MNIST test set when it is found, else random bytes of the same shape. FLOPs are counted from the
shapes; the peak is a dense fp32 (2048 x 2000) @ (2000 x 2000) product in the same process.
Writes ``results/eval_speed.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from _common import command, environment, peak_memory_mb, sync, write_result
from speed import matmul_peak

from forwardforward.config import load_preset
from forwardforward.data import load_dataset
from forwardforward.errors import DataError
from forwardforward.nets.feedforward import FFNet
from forwardforward.perf import keep_freed_memory
from forwardforward.train import resolve_device


def test_images(data_dir: str | None, device: torch.device) -> tuple[torch.Tensor, str]:
    try:
        ds = load_dataset("mnist", data_dir=data_dir, device=device)
        return ds.test.images, "MNIST test set"
    except (DataError, FileNotFoundError, OSError) as exc:
        print(f"MNIST not found ({exc}); timing random images", file=sys.stderr)
        gen = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (10000, 1, 28, 28), generator=gen, dtype=torch.uint8)
        return images.to(device), "random images (MNIST not found)"


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Median seconds of ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        tic = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="hinton-mnist")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1000, help="images per forward call")
    parser.add_argument("--naive", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--data-dir")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    keep_freed_memory()
    device = resolve_device(args.device)
    images, source = test_images(args.data_dir, device)
    n = len(images)
    config = load_preset(args.preset, ["readout.kind=goodness"])
    torch.manual_seed(0)
    net = FFNet(config, (1, 28, 28), 10).to(device).eval()
    probe_config = load_preset(args.preset, ["readout.kind=probe", "readout.probe_mode=joint"])
    probe_net = FFNet(probe_config, (1, 28, 28), 10).to(device).eval()
    layers = net.readout_layers
    widths = [net.encoder.out_features, *config.model.layers]
    classes = 10

    def over_test_set(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                for xb in images.split(args.batch):
                    fn(xb)

        return run

    # FLOPs: the first layer once per image (its label part is a rank-one update), deeper
    # layers once per image and label, up to the last read-out layer
    deepest = max(layers)
    first = 2 * n * widths[0] * widths[1]
    deeper = sum(2 * n * classes * widths[k] * widths[k + 1] for k in range(1, deepest + 1))
    one_pass = sum(2 * n * widths[k] * widths[k + 1] for k in range(len(widths) - 1))
    peak = matmul_peak(torch.float32, device)
    rows: list[dict[str, Any]] = []

    def record(name: str, seconds: float, flops: float) -> None:
        rows.append(
            {
                "readout": name,
                "seconds": seconds,
                "images_per_s": n / seconds,
                "flops_per_s": flops / seconds,
                "fraction_of_peak": flops / seconds / peak,
            }
        )
        print(
            f"{name}: {seconds:.2f} s for {n} images ({n / seconds:.0f} images/s, "
            f"{flops / seconds / 1e9:.0f} GFLOP/s = {100 * flops / seconds / peak:.0f}% of peak)",
            flush=True,
        )

    record(
        "try-all labels, batched",
        timed(over_test_set(net.label_scores), device, args.repeats),
        first + deeper,
    )
    if args.naive:
        record(
            "try-all labels, one label at a time",
            timed(over_test_set(net.label_scores_naive), device, max(1, args.repeats // 2)),
            classes * first + deeper,
        )
    record(
        "linear probe, one pass",
        timed(over_test_set(probe_net.predict), device, args.repeats),
        one_pass,
    )
    write_result(
        "eval_speed",
        {
            "command": command("eval_speed.py", sys.argv[1:]),
            "preset": args.preset,
            "layers": config.model.layers,
            "readout_layers": layers,
            "images": source,
            "n_images": n,
            "batch": args.batch,
            "matmul_peak_flops_per_s": peak,
            "rows": rows,
            "peak_memory_mb": peak_memory_mb(device),
            **environment(device),
        },
    )


if __name__ == "__main__":
    main()
