"""What a recurrent FF net learns, measured while it trains: the local losses, the goodness of
positives and negatives at every iteration, the label's share of the top layer's input and the
gradient norms.

    python benchmarks/recurrent_diagnose.py PRESET --name NAME [--set KEY=VALUE ...]
        [--every 50] [--rows 500]

Every ``--every`` training steps (and once before the first) the net is put in eval mode and
run on the same ``--rows`` training sequences twice: with their true labels (the positives) and
with a fixed wrong label each (the negatives). Per layer it records the local loss over the
iterations that learn (those with the label shown), the mean goodness of positives and
negatives per iteration, how often a sequence's positive scores better than its negative (the
goodness "orders" them: 50% is no separation), and the spread of goodness between sequences
against the mean gap between a sequence's positive and its negative; at the top layer, the
norms of the three input paths (bottom-up, top-down from the label, lateral) and of the
difference the label makes between a positive and its negative; and the norm of each layer's
gradient of its loss (taken, not applied). Writes ``results/diagnose_NAME.json`` and the
figure ``docs/diagnose-NAME.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _common import RESULTS, ROOT, command, environment, matmul_peaks, write_result
from torch import Tensor

import forwardforward as ff
from forwardforward.layers import normalize
from forwardforward.loop import Callback, Loop
from forwardforward.nets.recurrent import RecurrentFFNet, RecurrentLayer
from forwardforward.train import Trainer


def paths(net: RecurrentFFNet, x: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """One no-grad run of ``net`` on sequences ``x`` with ``labels``: goodness ``(T, L, N)``
    and, per iteration, the mean norm of the top layer's bottom-up, top-down and lateral
    terms ``(T,)`` each."""
    rc, norm = net.config.recurrent, net.config.model.norm
    fr = net.frames(x)
    states = net.initial_states(fr.shape[0], fr.device)
    codes = net.label_code(labels, hidden=False)
    hidden = net.label_code(labels, hidden=True)
    goodness, up, down, side = [], [], [], []
    top = net.layers[-1]
    assert isinstance(top, RecurrentLayer)
    with torch.no_grad():
        for t in range(rc.steps):
            label = codes if t >= rc.label_hidden_steps else hidden
            below = normalize(states[-2] if len(states) > 1 else net.frame(fr, t), norm)
            up.append(top.bottom_up(below).norm(dim=1).mean())
            down.append(top.top_down(label).norm(dim=1).mean())
            if top.lateral is None:
                side.append(torch.tensor(0.0))
            else:
                side.append(top.lateral(normalize(states[-1], norm)).norm(dim=1).mean())
            states = net.step(net.frame(fr, t), label, states)
            goodness.append(torch.stack([net.goodness(s) for s in states]))
    return {
        "goodness": torch.stack(goodness),
        "bottom_up": torch.stack(up),
        "top_down": torch.stack(down),
        "lateral": torch.stack(side),
    }


def grad_norms(net: RecurrentFFNet, x: Tensor, y: Tensor, q: Tensor) -> list[float]:
    """Each layer's gradient norm of its own loss, averaged over the iterations that learn."""
    rc = net.config.recurrent
    fr = net.frames(x)
    b = fr.shape[0]
    with torch.no_grad():
        states = net.initial_states(b, fr.device)
        hidden = net.label_code(y, hidden=True)
        for t in range(rc.label_hidden_steps):
            states = net.step(net.frame(fr, t), hidden, states)
    both = torch.cat([fr, fr])
    codes = F.one_hot(torch.cat([y, q]), net.num_classes).float()
    states = [torch.cat([s, s]) for s in states]
    sums = [0.0] * len(net.layers)
    for t in range(rc.label_hidden_steps, rc.steps):
        states = net.step(net.frame(both, t), codes, states)
        for i, h in enumerate(states):
            loss = net.objective(i, h, b)[0]
            params = [p for p in net.layers[i].parameters() if p.requires_grad]
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            sums[i] += math.sqrt(sum(float(g.pow(2).sum()) for g in grads if g is not None))
        states = [s.detach() for s in states]
    return [s / (rc.steps - rc.label_hidden_steps) for s in sums]


class Diagnose(Callback):
    """Measures ``net`` on fixed sequences every ``every`` steps (and before the first)."""

    def __init__(
        self, net: RecurrentFFNet, x: Tensor, y: Tensor, every: int, seed: int, per_epoch: int
    ) -> None:
        self.net, self.x, self.y, self.every = net, x, y, every
        self.steps_per_epoch = per_epoch
        gen = torch.Generator().manual_seed(seed)
        c = net.num_classes
        self.q = (y + torch.randint(1, c, y.shape, generator=gen)) % c  # one wrong label each
        self.points: list[dict[str, Any]] = []

    def on_fit_start(self, loop: Loop) -> None:
        self.measure(loop.step)

    def on_batch_end(self, loop: Loop, metrics: dict[str, Tensor], batch: int) -> None:
        if loop.step % self.every == 0:
            self.measure(loop.step)

    def on_fit_end(self, loop: Loop) -> None:
        if not self.points or self.points[-1]["step"] != loop.step:
            self.measure(loop.step)

    def measure(self, step: int) -> None:
        net, rc = self.net, self.net.config.recurrent
        was_training = net.training
        net.eval()
        pos = paths(net, self.x, self.y)
        neg = paths(net, self.x, self.q)
        gp, gn = pos["goodness"], neg["goodness"]  # (T, L, N)
        shown = slice(rc.label_hidden_steps, rc.steps)
        sign = 1.0 if net.config.model.maximize else -1.0  # a score: higher is "positive"
        losses = []
        for i in range(len(net.layers)):
            per_step = [
                float(net.objective.loss(i, sign * gp[t, i], sign * gn[t, i]))
                for t in range(rc.label_hidden_steps, rc.steps)
            ]
            losses.append(sum(per_step) / len(per_step))
        start, stop = rc.window
        window_pos, window_neg = gp[start:stop].mean(0), gn[start:stop].mean(0)  # (L, N)
        ordered = (sign * (window_pos - window_neg) > 0).float().mean(1)  # (L,)
        # how much goodness differs between sequences, against what the label changes in one
        spread = window_pos.std(1)
        gap = (window_pos - window_neg).abs().mean(1)
        top = net.layers[-1]
        assert isinstance(top, RecurrentLayer)
        codes = F.one_hot(self.y, net.num_classes) - F.one_hot(self.q, net.num_classes)
        with torch.no_grad():
            diff = top.top_down.weight @ codes.float().T  # (H, N): what the label changes
        net.train(was_training)
        grads = grad_norms(net, self.x, self.y, self.q)
        self.points.append(
            {
                "step": step,
                "epoch": step / self.steps_per_epoch,
                "loss": losses,
                "goodness_pos": gp[shown].mean((0, 2)).tolist(),
                "goodness_neg": gn[shown].mean((0, 2)).tolist(),
                "ordered": ordered.tolist(),
                "sequence_spread": spread.tolist(),
                "label_gap": gap.tolist(),
                "top_bottom_up": float(pos["bottom_up"][shown].mean()),
                "top_top_down": float(pos["top_down"][shown].mean()),
                "top_lateral": float(pos["lateral"][shown].mean()),
                "top_label_difference": float(diff.norm(dim=0).mean()),
                "grad_norm": grads,
                "per_step_pos": gp.mean(2).T.tolist(),  # (L, T)
                "per_step_neg": gn.mean(2).T.tolist(),
            }
        )
        last = self.points[-1]
        print(
            f"step {step}: loss {' '.join(f'{v:.3f}' for v in losses)}; ordered "
            f"{' '.join(f'{v:.0%}' for v in last['ordered'])}; label share "
            f"{label_share(last):.0%}",
            flush=True,
        )


def label_share(p: dict[str, Any]) -> float:
    """The top-down (label) term's share of the top layer's three input norms."""
    total = p["top_bottom_up"] + p["top_top_down"] + p["top_lateral"]
    return float(p["top_top_down"] / max(1e-9, total))


def figure(points: list[dict[str, Any]], rc: Any, title: str, out: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(17, 7.5), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 4)
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
    ep = [p["epoch"] for p in points]
    n = len(points[0]["loss"])
    ax = axes[0][0]
    for i in range(n):
        ax.plot(ep, [p["loss"][i] for p in points], color=colors[i], label=f"layer {i + 1}")
    ax.axhline(math.log(2), color="grey", lw=0.8, ls=":")
    ax.set(title="local loss (label shown)", xlabel="epoch", ylabel="loss (ln 2 dotted)")
    ax.legend(fontsize=8)
    ax = axes[0][1]
    for i in range(n):
        ax.plot(ep, [p["goodness_pos"][i] for p in points], color=colors[i], label=f"{i + 1} pos")
        ax.plot(ep, [p["goodness_neg"][i] for p in points], color=colors[i], ls="--")
    ax.set(title="goodness: positives (solid), negatives (dashed)", xlabel="epoch")
    ax.legend(fontsize=8)
    ax = axes[0][2]
    for i in range(n):
        ax.plot(
            ep, [100 * p["ordered"][i] for p in points], color=colors[i], label=f"layer {i + 1}"
        )
    ax.axhline(50, color="grey", lw=0.8, ls=":")
    ax.set(title="sequences whose positive beats its negative", xlabel="epoch", ylabel="%")
    ax.legend(fontsize=8)
    for k, (point, name) in enumerate(((points[0], "before training"), (points[-1], "end"))):
        ax = axes[1][k]
        steps = list(range(len(point["per_step_pos"][0])))
        for i in range(n):
            ax.plot(steps, point["per_step_pos"][i], color=colors[i], label=f"{i + 1} pos")
            ax.plot(steps, point["per_step_neg"][i], color=colors[i], ls="--")
        ax.axvspan(-0.5, rc.label_hidden_steps - 0.5, color="#eeeeee")
        ax.axvspan(rc.window[0] - 0.5, rc.window[1] - 0.5, color="#dde8f4")
        ax.set(title=f"goodness per iteration, {name}", xlabel="iteration (grey: label hidden, "
               "blue: prediction window)")  # fmt: skip
        ax.legend(fontsize=8)
    ax = axes[1][2]
    share = [label_share(p) for p in points]
    ax.plot(ep, [100 * s for s in share], color="black", label="label's share of top input (%)")
    ax.set(title="top layer input; gradient norms", xlabel="epoch", ylabel="label share (%)")
    ax2 = ax.twinx()
    for i in range(n):
        ax2.plot(
            ep, [p["grad_norm"][i] for p in points], color=colors[i], ls=":", label=f"grad {i + 1}"
        )
    ax2.set_ylabel("gradient norm (dotted)")
    ax2.set_yscale("log")
    ax.legend(fontsize=8, loc="upper left")
    ax2.legend(fontsize=8, loc="upper right")
    ax = axes[0][3]
    for i in range(n):
        spread = [p["sequence_spread"][i] for p in points]
        ax.plot(ep, spread, color=colors[i], label=f"layer {i + 1}")
        ax.plot(ep, [p["label_gap"][i] for p in points], color=colors[i], ls="--")
    ax.set(title="goodness spread; label gap (dashed)", xlabel="epoch")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    axes[1][3].axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    print(f"wrote {out}", flush=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("preset", nargs="?")
    p.add_argument(
        "--name", required=True, help="results/diagnose_NAME.json, docs/diagnose-NAME.png"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--every", type=int, default=50, help="training steps between measurements")
    p.add_argument("--rows", type=int, default=500, help="training sequences measured")
    p.add_argument(
        "--replot", action="store_true", help="redraw the figure from results/diagnose_NAME.json"
    )
    return p


def replot(name: str) -> None:
    """Redraws ``docs/diagnose-NAME.png`` from the stored points; the configuration comes from
    the command stored beside them."""
    stored = json.loads((RESULTS / f"diagnose_{name}.json").read_text())
    args = parser().parse_args(shlex.split(stored["command"])[2:])
    config = ff.load_preset(args.preset, args.set)
    figure(stored["points"], config.recurrent, f"{args.preset} {' '.join(args.set)}",
           ROOT / "docs" / f"diagnose-{name}.png")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.replot:
        replot(args.name)
        return
    if args.preset is None:
        raise SystemExit("give a preset (or --replot)")
    config = ff.load_preset(args.preset, args.set)
    peaks = matmul_peaks(torch.device("cpu"))
    trainer = Trainer(config, out_dir=None)
    net = trainer.net
    if not isinstance(net, RecurrentFFNet):
        raise SystemExit(
            f"{args.preset}: not a recurrent FF net (model.kind = {config.model.kind})"
        )
    assert trainer.dataset is not None
    train = trainer.dataset.train
    x, y = train.images[: args.rows], train.labels[: args.rows]
    diag = Diagnose(net, x, y, args.every, config.train.seed, trainer.steps_per_epoch)
    trainer.loop.callbacks.append(diag)
    tic = time.perf_counter()
    results = trainer.fit()
    seconds = time.perf_counter() - tic
    name = args.name
    argv_used = [args.preset, "--name", name, *[a for s in args.set for a in ("--set", s)],
                 "--every", str(args.every), "--rows", str(args.rows)]  # fmt: skip
    write_result(
        f"diagnose_{name}",
        {
            "command": command("recurrent_diagnose.py", argv_used),
            "environment": environment(torch.device("cpu")),
            "matmul_peak_flops": peaks,
            "seconds": seconds,
            "test_accuracy": results.get("test_acc"),
            "points": diag.points,
        },
    )
    replot(name)


if __name__ == "__main__":
    main()
