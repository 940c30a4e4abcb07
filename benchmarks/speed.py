"""Step time of FF against its backprop twin, and against the matmul peak, in one process.

    python benchmarks/speed.py [--presets loewe-mnist hinton-mnist] [--batches 100 1000 5000]
                               [--dtypes fp32 bf16] [--steps 10] [--device cpu]

For every preset x batch size x dtype, FF and backprop steps alternate (interleaved, so both
see the same machine load) and the median of ``--steps`` steps is kept. The FF step is the
preset's network with one-hot random wrong labels and no probe (the bare FF step: 2B rows
forward and weight gradients); the twin is the same widths trained with cross-entropy. FLOPs
are counted from the shapes (FF's first layer computes its product with an image once for the
image's positive and negative); the peak is a dense (2048 x 2000) @ (2000 x 2000) product of the
same dtype, measured in the same process. A dtype whose peak is under a tenth of fp32's (bf16
on CPUs without bf16 units) is reported and skipped. Writes ``results/speed.json`` and
BENCHMARKS.md (``--no-report``: only the JSON).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from typing import Any

import report
import torch
from _common import command, environment, matmul_peak, peak_memory_mb, sync, write_result

from forwardforward.config import load_preset
from forwardforward.nets.backprop import BackpropNet
from forwardforward.nets.feedforward import FFNet
from forwardforward.perf import keep_freed_memory

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def flops(widths: list[int], batch: int, kind: str, classes: int = 10) -> float:
    """Matmul FLOPs of one step. FF: 2B rows, forward + weight gradient, but for the first
    layer, whose product with each image is shared by the image's positive and negative (B
    rows, plus the labels' part: ``codes (2B, C) @ (W patterns^T) (C, H)`` and its gradient).
    Backprop: B rows, forward + weight gradient + input gradient (not for the first layer),
    plus the head."""
    pairs = list(itertools.pairwise(widths))
    if kind == "ff":
        (i0, o0), rest = pairs[0], pairs[1:]
        first = 2 * batch * i0 * o0 * 2 + 2 * (2 * batch) * classes * o0 * 2
        return first + sum(2 * (2 * batch) * i * o * 2 for i, o in rest)
    total = sum(2 * batch * i * o * (2 if k == 0 else 3) for k, (i, o) in enumerate(pairs))
    return total + 2 * batch * widths[-1] * classes * 3


def measure(
    preset: str, batch: int, dtype: str, steps: int, device: torch.device
) -> dict[str, Any]:
    config = load_preset(
        preset,
        [
            "negatives.kind=random_wrong",
            "readout.kind=goodness",
            "negatives.scores=goodness",
            f"train.precision={dtype}",
            f"train.batch_size={batch}",
            "model.peer_weight=0.0",
        ],
    )
    shape, classes = (1, 28, 28), 10
    ff, bp = (
        FFNet(config, shape, classes).to(device),
        BackpropNet(config, shape, classes).to(device),
    )
    ff.configure(10**6)
    bp.configure(10**6)
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randint(0, 256, (batch, *shape), dtype=torch.uint8, device=device)
    y = torch.randint(0, classes, (batch,), device=device)
    # the FLOP count below assumes the shared first-layer product
    assert ff.shared_inputs(ff.flat(x), y, torch.Generator(device=device), None) is not None
    idx = torch.arange(batch, device=device)
    times: dict[str, list[float]] = {"ff": [], "backprop": []}
    for step in range(steps + 2):
        for name, net in (("ff", ff), ("backprop", bp)):
            sync(device)
            tic = time.perf_counter()
            net.train_step(x, y, idx, gen)
            sync(device)
            if step >= 2:  # warm-up
                times[name].append(time.perf_counter() - tic)
    widths = [ff.encoder.out_features, *config.model.layers]
    bp_widths = [784, *config.model.layers]
    ff_t, bp_t = statistics.median(times["ff"]), statistics.median(times["backprop"])
    return {
        "preset": preset,
        "layers": config.model.layers,
        "batch": batch,
        "dtype": dtype,
        "ff_step_s": ff_t,
        "backprop_step_s": bp_t,
        "ratio": ff_t / bp_t,
        "ff_flops_per_s": flops(widths, batch, "ff") / ff_t,
        "backprop_flops_per_s": flops(bp_widths, batch, "backprop") / bp_t,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["loewe-mnist", "hinton-mnist"])
    parser.add_argument("--batches", nargs="+", type=int, default=[100, 1000, 5000])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--report", action=argparse.BooleanOptionalAction, default=True, help="BENCHMARKS.md"
    )
    args = parser.parse_args()
    keep_freed_memory()
    device = torch.device(args.device)
    peaks = {d: matmul_peak(DTYPES[d], device) for d in args.dtypes}
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for dtype in args.dtypes:
        if peaks[dtype] < 0.1 * peaks.get("fp32", peaks[dtype]):
            skipped[dtype] = (
                f"its matmul peak {peaks[dtype] / 1e9:.1f} GFLOP/s is under a tenth of fp32's "
                f"{peaks['fp32'] / 1e9:.1f} on this device"
            )
            print(f"skip {dtype}: {skipped[dtype]}", flush=True)
            continue
        for preset in args.presets:
            for batch in args.batches:
                row = measure(preset, batch, dtype, args.steps, device)
                row["ff_fraction_of_peak"] = row["ff_flops_per_s"] / peaks[dtype]
                rows.append(row)
                head = f"{preset} {row['layers']} batch {batch} {dtype}"
                print(
                    f"{head}: FF {row['ff_step_s'] * 1e3:.1f} ms, "
                    f"backprop {row['backprop_step_s'] * 1e3:.1f} ms, ratio {row['ratio']:.2f}, "
                    f"FF {row['ff_flops_per_s'] / 1e9:.0f} GFLOP/s = "
                    f"{100 * row['ff_fraction_of_peak']:.0f}% of peak",
                    flush=True,
                )
    result = {
        "command": command("speed.py", sys.argv[1:]),
        "steps": args.steps,
        "matmul_peak_flops_per_s": peaks,
        "skipped": skipped,
        "rows": rows,
        "peak_memory_mb": peak_memory_mb(device),
        **environment(device),
    }
    write_result("speed", result)
    if args.report:
        report.write()


if __name__ == "__main__":
    main()
