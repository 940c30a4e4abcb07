"""Fixed-seed short runs whose metrics a change of structure must keep.

    python benchmarks/regression.py [--out FILE] [PRESET ...]

Each preset trains one epoch on a small fraction of its data (seed 0, one thread, fp32) and
prints every metric of its epoch record and its final results. Run it on two checkouts (e.g.
``PYTHONPATH=/path/to/old/src python benchmarks/regression.py --out old.json``) and compare the
two JSON files with ``--compare old.json new.json``: the script uses only the ``Trainer`` API
that both sides have.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

import forwardforward as ff
from forwardforward.train import Trainer

#: preset -> overrides that make its run short
RUNS: dict[str, list[str]] = {
    "mnist-quick": ["data.fraction=0.05"],
    "scff-mnist": ["data.fraction=0.05"],
    "rff-mnist": ["data.fraction=0.02", "train.eval_batch_size=2000"],
    "hinton-aesop-teacher": [],
    "hinton-unsup-lrf": ["data.fraction=0.01", "readout.probe_epochs=1"],
    "hinton-unsup-mnist": ["data.fraction=0.01", "readout.probe_epochs=1"],
    "conv-ff-mnist": ["data.fraction=0.01"],
}
#: one example's shape per dataset, to build every preset's nets without their data
SHAPES = {
    "aesop": (1, 10, 30),
    "moving_mnist": (20, 64, 64),
    "sequential_mnist": (28, 1, 28),
}
COMMON = ["train.epochs=1", "train.seed=0", "train.threads=1", "train.precision=fp32"]
VOLATILE = ("seconds", "threads", "device")  # timings and the machine: not compared


def run(preset: str) -> dict[str, Any]:
    config = ff.load_preset(preset, [*COMMON, *RUNS[preset]])
    trainer = Trainer(config, out_dir=None, progress=False)
    results = trainer.fit()
    keep = {k: v for k, v in results.items() if not any(w in k for w in VOLATILE)}
    epochs = [
        {k: v for k, v in r.items() if not any(w in k for w in VOLATILE)} for r in trainer.history
    ]
    return {"results": keep, "epochs": epochs}


def fingerprints() -> dict[str, Any]:
    """The parameter and buffer names and shapes of every preset's FF net and backprop twin:
    what a checkpoint written before a change must find after it."""
    from forwardforward.checkpoint import fingerprint
    from forwardforward.train import build_net

    out: dict[str, Any] = {}
    for preset in ff.preset_names():
        config = ff.load_preset(preset)
        shape = SHAPES.get(config.data.dataset, (1, 28, 28))
        classes = 30 if config.data.dataset == "aesop" else 10
        for backprop in (False, True):
            net = build_net(config, shape, classes, backprop)
            out[f"{preset} {'backprop' if backprop else 'ff'}"] = fingerprint(net)
    return out


def compare(old: dict[str, Any], new: dict[str, Any]) -> int:
    """Print a table of every metric on both sides; non-zero exit if any differs."""
    differ = 0
    print("| preset | metric | before | after |\n|---|---|---|---|")
    for preset in old:
        rows: dict[str, tuple[Any, Any]] = {}
        for side, store in ((0, old), (1, new)):
            entry = store.get(preset, {})
            flat = {f"results.{k}": v for k, v in entry.get("results", {}).items()}
            for i, rec in enumerate(entry.get("epochs", [])):
                flat.update({f"epoch{i + 1}.{k}": v for k, v in rec.items()})
            for k, v in flat.items():
                pair = rows.get(k, (None, None))
                rows[k] = (v, pair[1]) if side == 0 else (pair[0], v)
        for k, (a, b) in rows.items():
            same = a == b or (
                isinstance(a, float) and isinstance(b, float) and math.isclose(a, b, rel_tol=0)
            )
            differ += not same
            mark = "" if same else " **differs**"
            print(f"| {preset} | {k} | {a} | {b}{mark} |")
    print(f"\n{differ} metric(s) differ", file=sys.stderr)
    return 1 if differ else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="*", default=list(RUNS))
    parser.add_argument("--out", help="write the metrics to this JSON file")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    parser.add_argument(
        "--fingerprints", action="store_true", help="every preset's parameter names and shapes"
    )
    args = parser.parse_args()
    if args.compare:
        before, after = (json.loads(Path(p).read_text()) for p in args.compare)
        if "fingerprints" in before or "fingerprints" in after:
            same = before.get("fingerprints") == after.get("fingerprints")
            print(
                f"fingerprints of {len(after.get('fingerprints', {}))} nets: "
                f"{'identical' if same else 'DIFFER'}"
            )
            return 0 if same else 1
        return compare(before, after)
    if args.fingerprints:
        text = json.dumps({"fingerprints": fingerprints()}, indent=1)
        if args.out:
            Path(args.out).write_text(text + "\n")
        return 0
    torch.set_num_threads(1)
    out = {preset: run(preset) for preset in args.presets}
    text = json.dumps(out, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
