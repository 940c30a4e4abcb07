"""How peaked is an Aesop run's sampling softmax? The spread of its scores, and the entropy
of its sampling distribution at its negatives' temperature.

    python benchmarks/aesop_spread.py RUN_DIR [RUN_DIR ...] [--data-dir DIR]

For every window of the 248 training strings (real contexts) it scores every next
character, then prints the mean standard deviation of those scores across the 30 characters
and the mean entropy (nats; the uniform's is ln 30 = 3.40) of ``softmax(scores / T)`` at the
run's ``negatives.temperature``. Self-generated negatives are sampled from that softmax, so
the figures show how close to uniform a run's negatives were.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from forwardforward.data.text import ALPHABET, load_aesop, windows
from forwardforward.nets.sequence import SequenceFFNet
from forwardforward.train import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    contexts, _ = windows(load_aesop(args.data_dir).train)
    print(f"{'run':40s} {'width':>6s} {'T':>7s} {'score std':>10s} {'entropy':>8s}")
    for run_dir in args.run_dirs:
        config, _, net, _ = load_run(Path(run_dir))
        if not isinstance(net, SequenceFFNet):
            raise SystemExit(f"{run_dir}: not an Aesop run (data.dataset = 'aesop')")
        temperature = config.negatives.temperature
        stds, entropies = [], []
        for chunk in contexts.split(2000):
            scores = net.next_scores(chunk).double()
            stds.append(scores.std(1))
            logp = torch.log_softmax(scores / temperature, 1)
            entropies.append(-(logp.exp() * logp).sum(1))
        width = max(config.model.layers)
        print(
            f"{run_dir:40s} {width:6d} {temperature:7g} {float(torch.cat(stds).mean()):10.1f} "
            f"{float(torch.cat(entropies).mean()):8.2f}"
        )
    print(f"uniform entropy: {math.log(len(ALPHABET)):.2f}")


if __name__ == "__main__":
    main()
