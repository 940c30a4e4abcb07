"""The recurrent FF net: Hinton's GLOM-like net and RecurrentForwardForward's variant.

The image is clamped at the bottom and the label code at the top. Every hidden layer is
updated synchronously from the states of the step before::

    proposed_l = act(W_f norm(h_{l-1}) + s W_b norm(h_{l+1}) + W_lat norm(h_l) + b)
    h_l <- (1 - damping) h_l + damping proposed_l

with ``h_0`` the image, ``h_{L+1}`` the label code (one-hot; uniform ``1/C`` while the label is
hidden), ``s = -1`` when the top-down input is negated (RecurrentForwardForward) and the
lateral term optional. Every input is detached: a layer learns from its own loss at each step
only. Positive (true label) and negative (wrong label) sequences run as one stacked batch;
prediction runs every candidate label as one batch and sums goodness over a window of steps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from forwardforward.config import RunConfig
from forwardforward.layers import ACTIVATIONS, normalize
from forwardforward.losses import LocalObjective
from forwardforward.negatives import NEGATIVES, Hard
from forwardforward.nets.base import (
    NetBase,
    autocast_dtype,
    pixels,
)
from forwardforward.stepping import learn


class RecurrentLayer(nn.Module):
    """One hidden layer of the recurrent net: bottom-up, top-down and optional lateral weights.

    Args:
        below: width of the layer below (the image for the first layer).
        width: this layer's width ``H``.
        above: width of the layer above (the label code for the top layer).
        lateral: whether the layer sees its own previous state.
    """

    def __init__(self, below: int, width: int, above: int, lateral: bool) -> None:
        super().__init__()
        self.width = width
        self.bottom_up = nn.Linear(below, width)
        self.top_down = nn.Linear(above, width, bias=False)
        nn.init.uniform_(self.top_down.weight, -0.05, 0.05)
        self.lateral: nn.Linear | None = None
        if lateral:
            self.lateral = nn.Linear(width, width, bias=False)
            nn.init.orthogonal_(self.lateral.weight, gain=0.5)

    def propose(self, below: Tensor, above: Tensor, own: Tensor, sign: float, p: float) -> Tensor:
        """The pre-activation from the (already normalised, detached) inputs ``(B, .)``."""
        drop = p > 0 and self.training
        if drop:
            below, above, own = (F.dropout(t, p) for t in (below, above, own))
        z: Tensor = self.bottom_up(below)
        td = self.top_down(above)
        z = z - td if sign < 0 else z + td  # sign is +1 or -1
        if self.lateral is not None:
            z = z + self.lateral(own)
        return z


class RecurrentFFNet(NetBase):
    """The recurrent FF net (``model.kind = "recurrent"``; options in ``[recurrent]``).

    Inputs are images ``(B, C, H, W)`` (uint8 or float); the same image is shown at every step.
    """

    def __init__(
        self,
        config: RunConfig,
        in_shape: tuple[int, ...],
        num_classes: int,
        *,
        frames: bool = False,
    ) -> None:
        super().__init__()
        m, rc = config.model, config.recurrent
        self.config = config
        self.in_shape = tuple(in_shape)
        self.num_classes = num_classes
        # sequence data keeps time in the channels: frame t is shown at iteration t
        self.sequence = frames
        frame = math.prod(in_shape[1:]) if self.sequence else math.prod(in_shape)
        widths = [frame, *m.layers, num_classes]
        self.layers = nn.ModuleList(
            RecurrentLayer(widths[i], widths[i + 1], widths[i + 2], rc.lateral)
            for i in range(len(m.layers))
        )
        if rc.label_gain > 0:  # the top layer's weights from the label code
            top = self.layers[-1]
            assert isinstance(top, RecurrentLayer)
            with torch.no_grad():
                top.top_down.weight.normal_(0.0, rc.label_gain * math.sqrt(2.0 / num_classes))
        self.widths = list(m.layers)
        self.act = ACTIVATIONS[m.activation]
        sampler = NEGATIVES[config.negatives.kind]
        self.sampler = Hard(config.negatives.temperature) if isinstance(sampler, Hard) else sampler
        self.objective = LocalObjective(
            m.goodness, m.loss, m.maximize, m.theta, m.alpha, self.widths, m.theta_neg
        )
        self.goodness = self.objective.goodness
        self.readout_layers = list(config.readout.layers) or list(range(len(m.layers)))
        self.sign = -1.0 if rc.negate_top_down else 1.0
        # RecurrentForwardForward's classifier: a linear softmax on time-averaged activities
        # with the label hidden; it samples hard negatives and can predict
        self.probe: nn.Linear | None = None
        if config.readout.kind == "probe" or config.negatives.scores == "probe":
            self.probe = nn.Linear(sum(self.widths[i] for i in self.readout_layers), num_classes)
            nn.init.zeros_(self.probe.weight)
            nn.init.zeros_(self.probe.bias)
        self.optimizers: list[torch.optim.Optimizer] = []
        self.schedulers: list[torch.optim.lr_scheduler.LambdaLR] = []
        # evaluation runs in the configured precision too (configure() may change it)
        self.autocast_dtype = autocast_dtype(config.train.precision)

    # -- dynamics --------------------------------------------------------------------------------

    def frames(self, x: Tensor) -> Tensor:
        """Inputs -> frames ``(B, F, D)`` float (``F = 1`` for a static image)."""
        f = x.reshape(x.shape[0], x.shape[1] if self.sequence else 1, -1)
        return pixels(f, self.config.model.input_mean, self.config.model.input_std)

    @staticmethod
    def frame(frames: Tensor, t: int) -> Tensor:
        """The frame shown at iteration ``t``: the last one once the sequence has ended."""
        return frames[:, min(t, frames.shape[1] - 1)]

    def initial_states(self, n: int, device: torch.device) -> list[Tensor]:
        return [torch.zeros(n, w, device=device) for w in self.widths]

    def step(self, image: Tensor, label: Tensor, states: list[Tensor]) -> list[Tensor]:
        """One synchronous update: ``image`` ``(N, D)``, ``label`` code ``(N, C)``, states of the
        step before (detached) -> the new states (with the graph of this step only)."""
        rc, norm = self.config.recurrent, self.config.model.norm
        prev = [s.detach() for s in states]
        normed = [normalize(s, norm) for s in prev]  # each state feeds up to three paths
        below = [normalize(image, norm), *normed[:-1]]
        above = [*normed[1:], label]
        new = []
        # bf16 products (train.precision); the states stay fp32
        with self._autocast(image):
            for i, layer in enumerate(self.layers):
                assert isinstance(layer, RecurrentLayer)
                z = layer.propose(below[i], above[i], normed[i], self.sign, rc.dropout)
                proposed = self.act(z).float()
                new.append(torch.lerp(prev[i], proposed, rc.damping))  # (1 - d) old + d new
        return new

    def label_code(self, y: Tensor, hidden: bool) -> Tensor:
        """One-hot codes ``(N, C)``, or uniform ``1/C`` while the label is hidden."""
        if hidden:
            return torch.full(
                (y.shape[0], self.num_classes), 1.0 / self.num_classes, device=y.device
            )
        return F.one_hot(y, self.num_classes).float()

    # -- training --------------------------------------------------------------------------------

    def configure(self, steps_per_epoch: int, epochs: int | None = None) -> None:
        """Every layer steps at every iteration shown the label (``every_step``) or once per
        sequence; the classifier once per batch."""
        rc = self.config.recurrent
        epochs = self.config.train.epochs if epochs is None else epochs
        per_batch = rc.steps - rc.label_hidden_steps if rc.update == "every_step" else 1
        self._build_optimizers(steps_per_epoch * epochs * per_batch, steps_per_epoch * epochs)

    # -- the classifier ----------------------------------------------------------------------------

    @property
    def probe_steps(self) -> int:
        """The classifier sees the states of iterations ``[0, k)`` with the label hidden:
        ``k = label_hidden_steps`` (free during training), or the prediction window's end when
        the label is never hidden."""
        rc = self.config.recurrent
        return rc.label_hidden_steps or rc.window[1]

    def _features(self, history: list[list[Tensor]]) -> Tensor:
        """Readout layers' normalised states averaged over iterations -> ``(N, F)``."""
        per_layer = [
            torch.stack([self._readout_norm(states[i].float()) for states in history]).mean(0)
            for i in self.readout_layers
        ]
        return torch.cat(per_layer, 1)

    @torch.no_grad()
    def probe_features(self, x: Tensor) -> Tensor:
        """The classifier's input for images or sequences ``(N, ...)``: ``(N, F)``."""
        fr = self.frames(x)
        labels = torch.zeros(fr.shape[0], dtype=torch.long, device=fr.device)
        hidden = self.label_code(labels, hidden=True)
        states = self.initial_states(fr.shape[0], fr.device)
        history = []
        for t in range(self.probe_steps):
            states = self.step(self.frame(fr, t), hidden, states)
            history.append(states)
        return self._features(history)

    def _losses(self, states: list[Tensor], b: int) -> list[Tensor]:
        return [self.objective(i, h, b)[0] for i, h in enumerate(states)]

    def _learn(self, losses: list[Tensor]) -> None:
        n = len(self.layers)  # the probe, if any, steps on its own loss
        names = [f"layer {i % n}" for i in range(len(losses))]  # every_step: n per iteration
        step = int(self.schedulers[0].last_epoch)
        learn(losses, names, self.optimizers[:n], self.schedulers[:n], step=step)

    def train_step(
        self, x: Tensor, y: Tensor, index: Tensor, gen: torch.Generator
    ) -> dict[str, Tensor]:
        """Run positive and negative sequences as one batch; learn at every step after the label
        is shown (or once per sequence)."""
        rc = self.config.recurrent
        fr = self.frames(x)
        b = fr.shape[0]
        # while the label is hidden, positive and negative rows are the same: run them once
        states = self.initial_states(b, fr.device)
        history = []
        with torch.no_grad():
            hidden = self.label_code(y, hidden=True)
            for t in range(rc.label_hidden_steps):
                states = self.step(self.frame(fr, t), hidden, states)
                history.append(states)
        metrics: dict[str, Tensor] = {}
        feats = None
        if self.probe is not None:
            feats = self._features(history) if history else self.probe_features(fr)
        _, q_neg = self.sampler(y, self.num_classes, gen, self.negative_scores(fr, feats))
        both = torch.cat([fr, fr])
        codes = torch.cat([F.one_hot(y, self.num_classes).float(), q_neg])
        states = [torch.cat([s, s]) for s in states]
        pending: list[Tensor] = []
        sums = torch.zeros(len(self.layers))
        for t in range(rc.label_hidden_steps, rc.steps):
            states = self.step(self.frame(both, t), codes, states)
            losses = self._losses(states, b)
            sums += torch.stack([loss.detach() for loss in losses])
            if rc.update == "every_step":
                self._learn(losses)
            else:
                pending.extend(losses)
            states = [s.detach() for s in states]
        if pending:
            self._learn(pending)
        shown = rc.steps - rc.label_hidden_steps
        metrics.update({f"loss{i}": sums[i] / shown for i in range(len(self.layers))})
        if self.probe is not None:
            assert feats is not None
            logits = self.probe(feats)
            probe_loss = F.cross_entropy(logits, y)
            step = int(self.schedulers[-1].last_epoch)
            learn([probe_loss], ["probe"], self.optimizers[-1:], self.schedulers[-1:], step=step)
            metrics["probe"] = probe_loss.detach()
            metrics["probe_acc"] = (logits.detach().argmax(1) == y).float().mean()
        return metrics

    # -- prediction ------------------------------------------------------------------------------

    @torch.no_grad()
    def settle(self, x: Tensor, labels: Tensor) -> Tensor:
        """Goodness per step and layer for images ``(N, ...)`` with label indices ``(N,)``:
        ``(T, L, N)``. The label is hidden for the first ``label_hidden_steps`` steps."""
        rc = self.config.recurrent
        fr = self.frames(x)
        states = self.initial_states(fr.shape[0], fr.device)
        codes = self.label_code(labels, hidden=False)
        hidden = self.label_code(labels, hidden=True)
        out = []
        for t in range(rc.steps):
            label = codes if t >= rc.label_hidden_steps else hidden
            states = self.step(self.frame(fr, t), label, states)
            out.append(torch.stack([self.goodness(s) for s in states]))
        return torch.stack(out)

    @torch.no_grad()
    def label_scores(self, x: Tensor, layers: list[int] | None = None) -> Tensor:
        """Goodness summed over the window's steps and ``layers`` for every label: ``(B, C)``.
        All labels run as one ``(B C)``-row batch."""
        layers = self.readout_layers if layers is None else layers
        rc = self.config.recurrent
        fr = self.frames(x)
        b, c = fr.shape[0], self.num_classes
        start, stop = rc.window
        # the steps with the label hidden do not depend on it: run them once per image, then
        # every label until the window ends (the steps after it do not count)
        shared = min(rc.label_hidden_steps, stop)
        states = self.initial_states(b, fr.device)
        hidden = self.label_code(torch.zeros(b, dtype=torch.long, device=fr.device), hidden=True)
        total = torch.zeros(b, device=fr.device)
        for t in range(shared):
            states = self.step(self.frame(fr, t), hidden, states)
            if t >= start:
                total += sum(self.goodness(states[i]) for i in layers)
        total = total.repeat_interleave(c)
        states = [s.repeat_interleave(c, 0) for s in states]
        frames = fr.repeat_interleave(c, 0)
        codes = self.label_code(torch.arange(c, device=fr.device).repeat(b), hidden=False)
        for t in range(shared, stop):
            states = self.step(self.frame(frames, t), codes, states)
            if t >= start:
                total += sum(self.goodness(states[i]) for i in layers)
        return total.view(b, c)

    @torch.no_grad()
    def label_scores_naive(self, x: Tensor, layers: list[int] | None = None) -> Tensor:
        """:meth:`label_scores` one label at a time (a reference for tests)."""
        layers = self.readout_layers if layers is None else layers
        fr = self.frames(x)
        start, stop = self.config.recurrent.window
        cols = []
        for c in range(self.num_classes):
            labels = torch.full((fr.shape[0],), c, dtype=torch.long, device=fr.device)
            cols.append(self.settle(fr, labels)[start:stop, layers].sum((0, 1)))
        return torch.stack(cols, 1)
