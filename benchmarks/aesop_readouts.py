"""How well each readout of a trained Aesop run predicts the next character.

    python benchmarks/aesop_readouts.py RUN_DIR [RUN_DIR ...] [--data-dir DIR]

For every run it prints the per-character accuracy (teacher-forced: the real previous 10
characters; training / held-out strings) of the goodness readout (every candidate character
tried, the highest goodness wins) on each layer alone and on all of them summed, and of the
softmax probe when the run has one. A run is trained with one readout; this shows what the
others would have said about the same layers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from forwardforward.data.text import ALPHABET, load_aesop, windows
from forwardforward.nets.sequence import SequenceFFNet
from forwardforward.train import load_run


def _accuracy(scores: torch.Tensor, targets: torch.Tensor) -> str:
    return f"{100 * float((scores.argmax(1) == targets).float().mean()):.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    data = load_aesop(args.data_dir)
    splits = [windows(data.train), windows(data.test)]
    for run_dir in args.run_dirs:
        _, _, net, _ = load_run(Path(run_dir))
        if not isinstance(net, SequenceFFNet):
            raise SystemExit(f"{run_dir}: not an Aesop run (data.dataset = 'aesop')")
        n = len(net.layers)
        readouts: list[tuple[str, list[int] | None]] = [
            (f"goodness, layer {i}", [i]) for i in range(n)
        ]
        readouts.append((f"goodness, layers 0-{n - 1}", list(range(n))))
        if net.probe is not None:
            readouts.append(("softmax probe", None))
        print(run_dir)
        for name, layers in readouts:
            figures = []
            for contexts, targets in splits:
                chunks = []
                for chunk in contexts.split(2000):
                    if layers is None:
                        chunks.append(net.next_scores(chunk, "probe"))
                    else:
                        x = F.one_hot(chunk, len(ALPHABET)).float()[:, None]
                        scores = net.label_scores(x, layers)
                        chunks.append(scores if net.config.model.maximize else -scores)
                figures.append(_accuracy(torch.cat(chunks), targets))
            print(f"  {name:22s} {figures[0]:>7s} / {figures[1]:>7s}")


if __name__ == "__main__":
    main()
