"""Wall time from start (data loading and evaluation included) until the MNIST test accuracy
first reaches a target, for FF and for its backprop twin.

    python benchmarks/time_to_accuracy.py [--preset mnist-quick] [--target 0.985] [--set k=v ...]
        [--name time_to_accuracy]

The preset is trained as configured, with the test split scored after every epoch; the time is
the run's elapsed time when that score is logged. Writes ``results/time_to_accuracy.json``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from _common import command, environment, matmul_peaks, peak_memory_mb, write_result

from forwardforward.config import load_preset
from forwardforward.perf import keep_freed_memory
from forwardforward.train import Trainer, resolve_device

REFERENCE_SECONDS = 1800.0
"""loeweX's 3x1000 recipe: 100 epochs of 17-19 s to reach 98.55% on this 2-core machine."""


def measure(
    preset: str, overrides: list[str], target: float, backprop: bool, data_dir: str | None
) -> dict[str, Any]:
    config = load_preset(preset, [*overrides, "train.eval_every=1", "data.eval_split=test"])
    trainer = Trainer(config, out_dir=None, data_dir=data_dir, backprop=backprop, progress=False)
    results = trainer.fit()
    reached = [r for r in trainer.history if r.get("test_acc", 0.0) >= target]
    first = reached[0] if reached else None
    return {
        "kind": "backprop" if backprop else "ff",
        "seconds_to_target": first["elapsed_seconds"] if first else None,
        "epoch_reached": first["epoch"] if first else None,
        "final_test_acc": results["test_acc"],
        "wall_seconds": results["wall_seconds"],
        "data_seconds": results["data_seconds"],
        "epochs": results["epochs"],
        "history": [
            {k: r[k] for k in ("epoch", "elapsed_seconds", "test_acc") if k in r}
            for r in trainer.history
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mnist-quick")
    parser.add_argument("--target", type=float, default=0.985)
    parser.add_argument("--set", action="append", default=[], help="a preset override")
    parser.add_argument("--data-dir")
    parser.add_argument("--skip-backprop", action="store_true")
    parser.add_argument("--name", default="time_to_accuracy", help="the result file's name")
    args = parser.parse_args()
    keep_freed_memory()
    device = resolve_device(load_preset(args.preset, args.set).train.device)
    peaks = matmul_peaks(device)
    runs = []
    for backprop in (False,) if args.skip_backprop else (False, True):
        row = measure(args.preset, args.set, args.target, backprop, args.data_dir)
        runs.append(row)
        got = row["seconds_to_target"]
        print(
            f"{args.preset} {row['kind']}: "
            + (f"{100 * args.target:.1f}% after {got:.1f} s" if got else "target not reached")
            + f" (final {100 * row['final_test_acc']:.2f}% in {row['wall_seconds']:.0f} s)",
            flush=True,
        )
    ff = runs[0]
    write_result(
        args.name,
        {
            "command": command("time_to_accuracy.py", sys.argv[1:]),
            "preset": args.preset,
            "overrides": args.set,
            "target": args.target,
            "reference_seconds": REFERENCE_SECONDS,
            "speedup_vs_reference": (
                REFERENCE_SECONDS / ff["seconds_to_target"]
                if ff["seconds_to_target"] and args.preset == "mnist-quick"
                else None
            ),
            "runs": runs,
            "matmul_peak_flops_per_s": peaks,
            "peak_memory_mb": peak_memory_mb(device),
            **environment(device),
        },
    )


if __name__ == "__main__":
    main()
