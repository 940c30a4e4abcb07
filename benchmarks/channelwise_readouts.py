"""How well each readout of a trained channel-wise run predicts, on the same weights.

    python benchmarks/channelwise_readouts.py RUN_DIR [RUN_DIR ...] [--data-dir DIR]

For every run it prints the test accuracy of each layer's class-group goodness alone, of the
run's voting layers summed (the goodness readout, one pass) and of its softmax probe when it
has one (``readout.kind = "probe"``: CwComp's SF classifier). A run predicts with one
readout; this shows what the others say about the same layers, so that CwComp's two readouts
(which its code prints side by side) can be compared. It chooses nothing on the test set.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from forwardforward.nets.channelwise import ChannelwiseNet
from forwardforward.train import load_data, load_run


def readouts(net: ChannelwiseNet, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy of every readout of ``net`` on ``images``: ``layer i`` alone, ``voters``
    (the net's voting range summed) and ``probe`` (when it has one)."""
    net.eval()
    n = len(net.layers)
    correct = dict.fromkeys([*(f"layer {i}" for i in range(n)), "voters"], 0)
    if net.probe is not None:
        correct["probe"] = 0
    first, last = (int(v) for v in net.voters)
    with torch.no_grad():
        for xb, yb in zip(images.split(1000), labels.split(1000), strict=True):
            per_layer = net.layer_scores(xb)
            for i, s in enumerate(per_layer):
                correct[f"layer {i}"] += int((s.argmax(1) == yb).sum())
            votes = torch.stack(per_layer[first : last + 1]).sum(0)
            correct["voters"] += int((votes.argmax(1) == yb).sum())
            if net.probe is not None:
                correct["probe"] += int((net.predict(xb) == yb).sum())
    return {k: v / max(len(labels), 1) for k, v in correct.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    for run_dir in args.run_dirs:
        config, _, net, _ = load_run(Path(run_dir))
        if not isinstance(net, ChannelwiseNet):
            raise SystemExit(f"{run_dir}: not a channel-wise FF run (model.kind = 'channelwise')")
        ds = load_data(config, args.data_dir, torch.device("cpu"), progress=False)
        acc = readouts(net, ds.test.images, ds.test.labels)
        print(json.dumps({"run": run_dir, "voters": net.voters.tolist(), "test_acc": acc}))


if __name__ == "__main__":
    main()
