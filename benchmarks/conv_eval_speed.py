"""Evaluation speed of a conv FF net: the channel-group readout (one pass) against the
try-all-labels readout of the classic FF conv net (one pass per candidate label), same layers.

    python benchmarks/conv_eval_speed.py [--run RUN_DIR] [--preset conv-mnist-quick]

The channel-wise net is the trained run ``--run`` (else the preset, untrained); the classic net
has the same conv stack, takes the label in its first pixels (``model.label = "overwrite"``)
and predicts by the goodness of every (image, label) pair. Its weights are untrained: its speed
does not depend on them, so only the channel-wise net's accuracy is shown. The 10,000 MNIST
test images are scored 1,000 per call, in the run's precision; the best of three timings is
kept. Writes ``results/conv_eval_speed.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _common import command, environment, matmul_peaks, sync, write_result

from forwardforward.config import load_preset
from forwardforward.data.vision import load_dataset
from forwardforward.nets.feedforward import FFNet
from forwardforward.train import build_net, load_run, resolve_device


def timed(predict: Any, images: torch.Tensor, device: torch.device) -> tuple[float, torch.Tensor]:
    """Best of three passes over ``images``, 1000 per call; the predictions."""
    best, preds = float("inf"), torch.empty(0)
    for _ in range(3):
        sync(device)
        tic = time.perf_counter()
        preds = torch.cat([predict(xb) for xb in images.split(1000)])
        sync(device)
        best = min(best, time.perf_counter() - tic)
    return best, preds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path)
    parser.add_argument("--preset", default="conv-mnist-quick")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    device = resolve_device(args.device)
    peaks = matmul_peaks(device)
    if args.run is not None:
        config, _, net, _ = load_run(args.run, str(device))
        source = f"the run `{args.run}` ({config.name})"
    else:
        config = load_preset(args.preset)
        net = build_net(config, (1, 28, 28), 10).to(device)
        source = f"the preset `{args.preset}`, untrained"
    net.eval()
    ds = load_dataset(config.data.dataset, data_dir=args.data_dir, device=device)
    x, y = ds.test.images, ds.test.labels
    classic_config = load_preset(
        args.preset if args.run is None else "conv-mnist-quick",
        ["model.kind=feedforward", "model.label=overwrite", "model.norm=rms",
         "model.loss=symba", "model.goodness=mean_squares"],
    )  # fmt: skip
    classic_config.model.stack = config.model.stack
    classic_config.train.precision = config.train.precision
    classic = FFNet(classic_config, (1, 28, 28), 10).to(device).eval()
    with torch.no_grad():
        t_group, p_group = timed(net.predict, x, device)
        t_all, _ = timed(classic.predict, x, device)
    rows = [
        {"readout": "channel groups, one pass", "seconds": t_group,
         "images_per_s": len(y) / t_group, "test_acc": float((p_group == y).float().mean())},
        {"readout": "try-all labels (classic FF conv net, 10 passes)", "seconds": t_all,
         "images_per_s": len(y) / t_all, "test_acc": None},
    ]  # fmt: skip
    for r in rows:
        print(f"{r['readout']}: {r['seconds']:.2f} s, {r['images_per_s']:.0f} images/s", flush=True)
    write_result(
        "conv_eval_speed",
        {
            "command": command("conv_eval_speed.py", sys.argv[1:]),
            "source": source,
            "stack": config.model.stack,
            "precision": config.train.precision,
            "rows": rows,
            "speedup": t_all / t_group,
            "matmul_peak_flops_per_s": peaks,
            **environment(device),
        },
    )


if __name__ == "__main__":
    main()
