"""How much of the digit a recurrent net's states hold once a sequence has been shown: a ridge
classifier on the states, untrained nets against trained runs.

    python benchmarks/recurrent_memory.py [--preset rff-seq-mnist] [--damping 0.7 0.3 0.1]
        [--runs RUN_DIR ...] [--train 6000] [--test 2000]

Each net runs the first ``--train`` training and ``--test`` test sequences with the label hidden
(the uniform code) for all of its iterations; a ridge regression onto the one-hot labels (every
feature standardised on the training rows, penalty 0.1 per row) is fitted on the training
states and scored on the test states. The features are every layer's state (L2-normalised) at
the iteration that shows the last row, and every layer's state averaged over the rows. The
untrained nets are the preset's with each ``--damping``; ``--runs`` adds trained run folders.
Writes ``results/recurrent_memory.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _common import command, environment, write_result
from torch import Tensor

import forwardforward as ff
from forwardforward.nets.recurrent import RecurrentFFNet
from forwardforward.train import load_data, load_run


def ridge_accuracy(
    train: Tensor, y_train: Tensor, test: Tensor, y_test: Tensor, penalty: float = 0.1
) -> float:
    """Test accuracy of a ridge regression from standardised features onto one-hot labels."""
    mean, std = train.mean(0), train.std(0) + 1e-6
    a = F.pad((train - mean) / std, (0, 1), value=1.0)  # a bias column
    b = F.pad((test - mean) / std, (0, 1), value=1.0)
    targets = F.one_hot(y_train, int(y_train.max()) + 1).float()
    gram = a.T @ a + penalty * len(a) * torch.eye(a.shape[1])
    w = torch.linalg.solve(gram, a.T @ targets)
    return float(((b @ w).argmax(1) == y_test).float().mean())


@torch.no_grad()
def features(net: RecurrentFFNet, x: Tensor) -> dict[str, Tensor]:
    """The states at the last row and averaged over the rows, label hidden: ``(N, sum H)``."""
    fr = net.frames(x)
    rows = fr.shape[1]
    states = net.initial_states(fr.shape[0], fr.device)
    hidden = net.label_code(torch.zeros(fr.shape[0], dtype=torch.long), hidden=True)
    history = []
    for t in range(rows):
        states = net.step(net.frame(fr, t), hidden, states)
        history.append(states)
    last = torch.cat([F.normalize(s, dim=1) for s in history[-1]], 1)
    mean = torch.cat([torch.stack([h[i] for h in history]).mean(0) for i in range(len(states))], 1)
    return {"last_row": last, "mean_over_rows": mean}


def measure(net: RecurrentFFNet, data: Any, n_train: int, n_test: int) -> dict[str, float]:
    net.eval()
    tr, te = data.train, data.test
    f_tr = features(net, tr.images[:n_train])
    f_te = features(net, te.images[:n_test])
    y_tr, y_te = tr.labels[:n_train], te.labels[:n_test]
    return {k: ridge_accuracy(f_tr[k], y_tr, f_te[k], y_te) for k in f_tr}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="rff-seq-mnist")
    p.add_argument("--damping", type=float, nargs="*", default=[0.7, 0.3, 0.1])
    p.add_argument("--runs", nargs="*", default=[], help="trained run folders")
    p.add_argument("--train", type=int, default=6000)
    p.add_argument("--test", type=int, default=2000)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    base = ff.load_preset(args.preset)
    data = load_data(base, None, torch.device("cpu"), progress=False)
    rows: list[dict[str, Any]] = []
    for damping in args.damping:
        config = ff.load_preset(args.preset, [f"recurrent.damping={damping}"])
        torch.manual_seed(config.train.seed)
        net = RecurrentFFNet(config, data.image_shape, data.num_classes, frames=True)
        rows.append(
            {"net": f"untrained, damping {damping}", **measure(net, data, args.train, args.test)}
        )
        print(rows[-1], flush=True)
    for run in args.runs:
        config, _, trained, _ = load_run(Path(run))
        if not isinstance(trained, RecurrentFFNet):
            raise SystemExit(f"{run}: not a recurrent FF run")
        rows.append({"net": f"trained: {run}", **measure(trained, data, args.train, args.test)})
        print(rows[-1], flush=True)
    argv_used = ["--preset", args.preset, "--damping", *map(str, args.damping),
                 *(["--runs", *args.runs] if args.runs else []),
                 "--train", str(args.train), "--test", str(args.test)]  # fmt: skip
    write_result(
        "recurrent_memory",
        {
            "command": command("recurrent_memory.py", argv_used),
            "environment": environment(torch.device("cpu")),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
