"""One process of a distributed test run (started by tests/test_dist.py, not collected).

    python tests/dist_worker.py OUT.pt KEY=VALUE ...

Trains a small synthetic problem with the given overrides; rank 0 (or the only process) saves
the whole net's state, the history and the results to OUT.pt.
"""

from __future__ import annotations

import sys

import torch

import forwardforward as ff
from forwardforward.train import Trainer

#: a small problem: 200 synthetic images, batches of 20, two epochs
BASE = [
    "data.dataset=synthetic",
    "data.fraction=0.1",
    "model.layers=[64, 64]",
    "train.epochs=2",
    "train.batch_size=20",
    "train.threads=1",
]


def main() -> None:
    out, overrides = sys.argv[1], sys.argv[2:]
    trainer = Trainer(ff.load_preset("mnist-quick", [*BASE, *overrides]), progress=False)
    results = trainer.fit()
    if trainer.is_main:
        torch.save(
            {"state": trainer.net.state_dict(), "history": trainer.history, "results": results},
            out,
        )
    trainer.close()


if __name__ == "__main__":
    main()
