"""Peak training memory against depth: a channel-wise FF conv net and its backprop twin at
several depths, same width, batch and input.

    python benchmarks/conv_memory.py [--depths 4 8 16] [--channels 40] [--batch 256]

Every (net, depth) is measured in a fresh process: the peak resident memory (CPU) or the peak
allocated memory (CUDA) during three training steps, less what the process held before the
first step (the library, the net, the data). On CPU the child runs with a fixed malloc mmap
threshold (``MALLOC_MMAP_THRESHOLD_``): every large tensor is then mapped on its own and handed
back when it is freed, so the resident size follows the live tensors (with glibc's sliding
threshold, freed blocks stay in the heap and the peak measures its fragmentation instead).
Each layer is a 3x3 convolution (padding 1, no pooling) followed by a batch norm, so every
layer's activations are the same size. Writes ``results/conv_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from typing import Any

import torch
from _common import command, environment, write_result

from forwardforward.config import RunConfig, from_dict, validate
from forwardforward.train import build_net, resolve_device


def config(depth: int, channels: int, precision: str) -> RunConfig:
    layer = {"kind": "conv", "channels": channels, "kernel": 3, "padding": 1, "out_norm": "batch"}
    c = from_dict(
        RunConfig,
        {
            "data": {"dataset": "synthetic"},
            "model": {"kind": "channelwise", "layers": [], "norm": "none",
                      "stack": [dict(layer) for _ in range(depth)]},
            "optim": {"name": "adam", "lr": 0.001},
            "train": {"precision": precision},
        },
    )  # fmt: skip
    validate(c)
    return c


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure_one(
    depth: int, channels: int, batch: int, backprop: bool, device: torch.device, precision: str
) -> dict[str, Any]:
    """Peak memory of three training steps, in this process."""
    net = build_net(config(depth, channels, precision), (1, 28, 28), 10, backprop=backprop)
    net.to(device).train()
    net.configure(steps_per_epoch=3, epochs=1)
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randint(0, 256, (batch, 1, 28, 28), dtype=torch.uint8, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device) / 2**20
    else:
        before = _rss_mb()
    for _ in range(3):
        net.train_step(x, y, torch.arange(batch, device=device), gen)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = _rss_mb()
    activation_mb = batch * channels * 28 * 28 * 4 / 2**20
    return {
        "depth": depth,
        "kind": "backprop" if backprop else "ff",
        "peak_mb": round(peak - before, 1),
        "one_activation_mb": round(activation_mb, 1),
        "parameters": sum(p.numel() for p in net.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--channels", type=int, default=40)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--one", nargs=2, metavar=("DEPTH", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.one:  # the child process: one measurement, as JSON on stdout
        depth, kind = int(args.one[0]), args.one[1]
        row = measure_one(depth, args.channels, args.batch, kind == "backprop", device,
                          args.precision)  # fmt: skip
        print(json.dumps(row))
        return
    rows = []
    for depth in args.depths:
        for kind in ("ff", "backprop"):
            out = subprocess.run(
                [sys.executable, __file__, "--one", str(depth), kind,
                 "--channels", str(args.channels), "--batch", str(args.batch),
                 "--device", args.device, "--precision", args.precision],
                check=True, capture_output=True, text=True,
                env={**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 17)},
            )  # fmt: skip
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{kind:8s} depth {depth:2d}: peak {row['peak_mb']:.0f} MiB", flush=True)
    write_result(
        "conv_memory",
        {
            "command": command("conv_memory.py", sys.argv[1:]),
            "channels": args.channels,
            "batch": args.batch,
            "precision": args.precision,
            "rows": rows,
            **environment(device),
        },
    )


if __name__ == "__main__":
    main()
