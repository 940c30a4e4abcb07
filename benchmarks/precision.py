"""What ``train.precision = "auto"`` chooses on this machine, and what the choice is worth: one
training step of a preset's FF net (and of its backprop twin) in fp32 and under bf16 autocast.

    python benchmarks/precision.py [--presets conv-mnist] [--steps 5] [--device cpu]

The net is the preset's, freshly initialised, on a batch of the preset's size of random
images and labels (speed does not depend on them); the step is the trainer's own
``train_step``. The median of ``--steps`` steps (after one warm-up step) is kept, fp32 and
bf16 steps alternating so that both see the same machine load. Next to them: the dense
(2048 x 2000) @ (2000 x 2000) product's peak in both dtypes, measured in the same process, the
CPU's model and the precision ``auto`` resolves to. Writes ``results/precision.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from typing import Any

import torch
from _common import command, environment, matmul_peaks, sync, write_result

from forwardforward.config import load_preset
from forwardforward.data import CATALOG
from forwardforward.nets.base import FFModule
from forwardforward.perf import fast_bf16, keep_freed_memory, resolve_precision
from forwardforward.train import build_net, resolve_device

DTYPES = ("fp32", "bf16")


def _net(preset: str, precision: str, backprop: bool, device: torch.device) -> FFModule:
    config = load_preset(preset)
    config = replace(config, train=replace(config.train, precision=precision))
    info = CATALOG[config.data.dataset]
    net = build_net(config, info.image_shape, info.num_classes, backprop)
    net.to(device)
    net.configure(steps_per_epoch=1000, epochs=max(config.train.epochs, 1))
    return net


def step_seconds(preset: str, backprop: bool, steps: int, device: torch.device) -> dict[str, float]:
    """Median seconds of one training step in each dtype, the dtypes interleaved."""
    config = load_preset(preset)
    info = CATALOG[config.data.dataset]
    batch = config.train.batch_size
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randint(0, 256, (batch, *info.image_shape), dtype=torch.uint8, generator=gen,
                      device=device)  # fmt: skip
    y = torch.randint(0, info.num_classes, (batch,), generator=gen, device=device)
    index = torch.arange(batch, device=device)
    nets = {name: _net(preset, name, backprop, device) for name in DTYPES}
    times: dict[str, list[float]] = {name: [] for name in DTYPES}
    for k in range(steps + 1):
        for name, net in nets.items():
            net.train()
            sync(device)
            tic = time.perf_counter()
            net.train_step(x, y, index, gen)
            sync(device)
            if k:  # the first step of each is a warm-up
                times[name].append(time.perf_counter() - tic)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["conv-mnist"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    keep_freed_memory()
    device = resolve_device(args.device)
    peaks = matmul_peaks(device)
    rows: list[dict[str, Any]] = []
    for preset in args.presets:
        for backprop in (False, True):
            secs = step_seconds(preset, backprop, args.steps, device)
            row = {
                "preset": preset,
                "kind": "backprop" if backprop else "ff",
                "fp32_seconds": round(secs["fp32"], 4),
                "bf16_seconds": round(secs["bf16"], 4),
                "bf16_over_fp32": round(secs["bf16"] / secs["fp32"], 2),
            }
            rows.append(row)
            print(
                f"{preset} {row['kind']}: fp32 {secs['fp32']:.3f} s/step, bf16 "
                f"{secs['bf16']:.3f} s/step ({row['bf16_over_fp32']}x)",
                flush=True,
            )
    result = {
        "command": command("precision.py", argv),
        **environment(device),
        "matmul_peak_gflops": {k: round(v / 1e9, 1) for k, v in peaks.items()},
        "fast_bf16": fast_bf16(device.type),
        "auto_chooses": resolve_precision("auto", device.type),
        "rows": rows,
    }
    print(
        f"{result['device']}: matmul peak fp32 {result['matmul_peak_gflops']['fp32']} GFLOP/s, "
        f"bf16 {result['matmul_peak_gflops']['bf16']} GFLOP/s; auto -> {result['auto_chooses']}"
    )
    write_result("precision", result)


if __name__ == "__main__":
    main(sys.argv[1:])
