"""Evaluation speed of a trained-size FF net on the 10,000 MNIST test images: the batched
try-all-labels readout, the naive one-label-at-a-time loop it replaces, and the one-pass linear
probe.

    python benchmarks/eval_speed.py [--preset hinton-mnist] [--dtypes fp32 bf16] [--run RUN_DIR]
                                    [--repeats 3] [--batch 1000]

Every readout is timed in every dtype (bf16: the products under bf16 autocast, goodness summed
in fp32). Speed does not depend on the weights, so without ``--run`` the net is freshly
initialised; with ``--run`` (a trained run of the preset's architecture) the weights are the
run's, and each readout's test accuracy is reported next to its time, so that a faster dtype
shows what it costs. The images are the real MNIST test set when it is found, else random bytes
of the same shape. FLOPs are counted from the shapes; the peak is a dense (2048 x 2000) @
(2000 x 2000) product of the same dtype in the same process. Writes ``results/eval_speed.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import command, environment, matmul_peak, peak_memory_mb, sync, write_result
from speed import DTYPES
from torch import Tensor

from forwardforward.config import load_preset
from forwardforward.data import load_dataset
from forwardforward.errors import DataError
from forwardforward.nets.base import autocast_dtype
from forwardforward.nets.feedforward import FFNet
from forwardforward.perf import keep_freed_memory
from forwardforward.train import load_run, resolve_device


def test_set(data_dir: str | None, device: torch.device) -> tuple[Tensor, Tensor | None, str]:
    """The MNIST test images and labels, or random images (and no labels) without MNIST."""
    try:
        ds = load_dataset("mnist", data_dir=data_dir, device=device)
        return ds.test.images, ds.test.labels, "MNIST test set"
    except (DataError, FileNotFoundError, OSError) as exc:
        print(f"MNIST not found ({exc}); timing random images", file=sys.stderr)
        gen = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (10000, 1, 28, 28), generator=gen, dtype=torch.uint8)
        return images.to(device), None, "random images (MNIST not found)"


def timed(fn: Callable[[], Tensor], device: torch.device, repeats: int) -> tuple[float, Tensor]:
    """Median seconds of ``repeats`` calls, after one warm-up call, and the last call's result."""
    out = fn()
    times = []
    for _ in range(repeats):
        sync(device)
        tic = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - tic)
    return statistics.median(times), out


def nets(args: argparse.Namespace, device: torch.device) -> tuple[FFNet, FFNet, str]:
    """The try-all net and the probe net: a trained run's (one net with both readouts), or
    freshly initialised ones of the preset."""
    if args.run:
        config, kind, net, _ = load_run(Path(args.run), str(device))
        if kind != "ff" or not isinstance(net, FFNet) or net.probe is None:
            sys.exit(
                f"{args.run}: --run needs a feed-forward FF run with a probe, got a {kind} run"
            )
        t = config.train
        return net, net, f"the run `{args.run}` ({config.name}, {t.epochs} epochs, {t.precision})"
    config = load_preset(args.preset, ["readout.kind=goodness"])
    torch.manual_seed(0)
    net = FFNet(config, (1, 28, 28), 10).to(device).eval()
    probe_config = load_preset(args.preset, ["readout.kind=probe", "readout.probe_mode=joint"])
    probe_net = FFNet(probe_config, (1, 28, 28), 10).to(device).eval()
    return net, probe_net, f"freshly initialised `{args.preset}` nets"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="hinton-mnist")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
    parser.add_argument("--run", help="a trained run: its weights, and accuracy next to time")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1000, help="images per forward call")
    parser.add_argument("--naive", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--data-dir")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    keep_freed_memory()
    device = resolve_device(args.device)
    images, labels, source = test_set(args.data_dir, device)
    n = len(images)
    net, probe_net, weights = nets(args, device)
    layers = net.readout_layers
    widths = [net.encoder.out_features, *net.config.model.layers]
    classes = 10
    pick = torch.argmax if net.config.model.maximize else torch.argmin

    def probe_predict(xb: Tensor) -> Tensor:
        log_probs = probe_net.log_probs(xb)
        assert log_probs is not None
        return log_probs.argmax(1)

    def over_test_set(fn: Callable[[Tensor], Tensor]) -> Callable[[], Tensor]:
        def run() -> Tensor:
            with torch.no_grad():
                return torch.cat([fn(xb) for xb in images.split(args.batch)])

        return run

    # FLOPs: the first layer once per image (its label part is a rank-one update), deeper
    # layers once per image and label, up to the last read-out layer
    deepest = max(layers)
    first = 2 * n * widths[0] * widths[1]
    deeper = sum(2 * n * classes * widths[k] * widths[k + 1] for k in range(1, deepest + 1))
    one_pass = sum(2 * n * widths[k] * widths[k + 1] for k in range(len(widths) - 1))
    readouts: list[tuple[str, Callable[[Tensor], Tensor], float, int]] = [
        (
            "try-all labels, batched",
            lambda xb: pick(net.label_scores(xb), 1),
            first + deeper,
            args.repeats,
        ),
        ("linear probe, one pass", probe_predict, one_pass, args.repeats),
    ]
    if args.naive:
        readouts.insert(
            1,
            (
                "try-all labels, one label at a time",
                lambda xb: pick(net.label_scores_naive(xb), 1),
                classes * first + deeper,
                max(1, args.repeats // 2),
            ),
        )
    peaks: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    for dtype in args.dtypes:
        peaks[dtype] = peak = matmul_peak(DTYPES[dtype], device)
        for model in (net, probe_net):
            model.autocast_dtype = autocast_dtype(dtype)
        for name, fn, flops, repeats in readouts:
            with net._autocast(images):  # the naive loop has no autocast of its own
                seconds, predicted = timed(over_test_set(fn), device, repeats)
            row = {
                "readout": name,
                "dtype": dtype,
                "seconds": seconds,
                "images_per_s": n / seconds,
                "flops_per_s": flops / seconds,
                "fraction_of_peak": flops / seconds / peak,
            }
            if args.run and labels is not None:
                row["test_acc"] = (predicted == labels).float().mean().item()
            rows.append(row)
            acc = f", test accuracy {100 * row['test_acc']:.2f}%" if "test_acc" in row else ""
            print(
                f"{name}, {dtype}: {seconds:.2f} s for {n} images ({n / seconds:.0f} images/s, "
                f"{flops / seconds / 1e9:.0f} GFLOP/s = {100 * flops / seconds / peak:.0f}% of "
                f"the {dtype} peak){acc}",
                flush=True,
            )
    write_result(
        "eval_speed",
        {
            "command": command("eval_speed.py", sys.argv[1:]),
            "preset": net.config.name,
            "weights": weights,
            "layers": net.config.model.layers,
            "readout_layers": layers,
            "images": source,
            "n_images": n,
            "batch": args.batch,
            "matmul_peak_flops_per_s": peaks,
            "rows": rows,
            "peak_memory_mb": peak_memory_mb(device),
            **environment(device),
        },
    )


if __name__ == "__main__":
    main()
