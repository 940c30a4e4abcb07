"""Channel-wise competitive FF (CwComp, AAAI 2024; DeeperForward, ICLR 2025).

Every layer's channels are split into one contiguous group per class; a group's goodness (the
mean square or the mean of its activities) is that class's score, and each layer learns from a
local cross-entropy over its scores (CwComp's CFSE loss, DeeperForward's loss). The label never
enters the input and no negative data is drawn: the other classes' groups of the same image
are its negatives. Prediction is one pass: the scores of the voting layers, summed.

What makes the methods work is here as options (``[channelwise]``): staggered per-layer epoch
windows (CwComp), parameter-free residual shortcuts and the choice of the voting layers on a
held-out split (DeeperForward). The backprop twin is :class:`ChannelwiseBackpropNet`: the same
layers, shortcuts included, and a linear output, trained end to end.
"""

from __future__ import annotations

import copy
import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from forwardforward.config import RunConfig
from forwardforward.data.vision import Split
from forwardforward.errors import ConfigError
from forwardforward.goodness import group_goodness
from forwardforward.layers import FFLayer
from forwardforward.layers.kinds import LayerSettings, Shape, layer_stack
from forwardforward.loop import Callback, Loop
from forwardforward.nets.backprop import BackpropNet
from forwardforward.nets.base import (
    NetBase,
    autocast_dtype,
    lr_lambda,
    optimizer_from_config,
    pixels,
)
from forwardforward.stepping import check_finite, step_all

__all__ = ["ChannelwiseBackpropNet", "ChannelwiseNet", "ChooseVoters", "build_channelwise_layers"]


def _activate_scored(layer: FFLayer, z: Tensor) -> tuple[Tensor, Tensor]:
    """A layer's output and its activities before any output norm (flat, both)."""
    scored = getattr(layer, "activate_scored", None)
    if scored is not None:
        return cast(tuple[Tensor, Tensor], scored(z))
    h = layer.activate(z)
    return h, h


def build_channelwise_layers(
    config: RunConfig, in_shape: Shape, num_classes: int
) -> tuple[list[FFLayer], list[Shape]]:
    """The layers of a channel-wise net and the shape each passes on (after its shortcut:
    a ``concat`` shortcut adds the channels of its source).

    Raises:
        ConfigError: a layer whose channels do not split into one group per class, or a
            shortcut whose source does not fit its target.
    """
    m, cw = config.model, config.channelwise
    settings = LayerSettings(
        norm=m.norm, activation=m.activation, bias=m.bias, init=m.init, classes=num_classes
    )
    layers: list[FFLayer] = []
    shapes: list[Shape] = []
    shortcuts = cw.shortcut_table()
    shape = in_shape
    for i, (kind, options) in enumerate(layer_stack(m.local, m.stack, m.layers)):
        layer = kind.build(options, shape, settings, not layers)
        out = tuple(layer.out_shape)
        channels = out[0]  # a flat output's features count as its channels
        if channels % num_classes:
            raise ConfigError(
                f"layer {i} has {channels} channels: the channel-wise net needs a multiple of "
                f"the {num_classes} classes (one channel group per class)"
            )
        if i in shortcuts:
            src, op = shortcuts[i]
            s_shape = shapes[src]
            if len(s_shape) != len(out) or (
                len(out) == 3
                and (
                    s_shape[1] % out[1]
                    or s_shape[2] % out[2]
                    or s_shape[1] // out[1] != s_shape[2] // out[2]
                )
            ):
                raise ConfigError(
                    f"channelwise.shortcuts: layer {src}'s output {s_shape} cannot be pooled to "
                    f"layer {i}'s {out}"
                )
            if op == "add" and s_shape[0] != out[0]:
                raise ConfigError(
                    f"channelwise.shortcuts: an add shortcut needs equal channels, layer {src} "
                    f"has {s_shape[0]} and layer {i} has {out[0]}"
                )
            if op == "concat":
                out = (out[0] + s_shape[0], *out[1:])
        layers.append(layer)
        shapes.append(out)
        shape = out
    return layers, shapes


@torch.no_grad()
def _average_step(avg: nn.Module, live: nn.Module, decay: float, t: int) -> None:
    """Step ``t`` (0-based) of the moving average ``avg`` of ``live``: every parameter moves
    towards ``live``'s by ``1 - min(decay, (1 + t) / (10 + t))``; the buffers (batch-norm
    statistics) are copied."""
    d = min(decay, (1.0 + t) / (10.0 + t))
    params: list[Tensor] = list(avg.parameters())
    if params:
        torch._foreach_lerp_(params, [p.detach() for p in live.parameters()], 1.0 - d)
    for b_avg, b_live in zip(avg.buffers(), live.buffers(), strict=True):
        b_avg.copy_(b_live)


class _Shortcuts:
    """Applies the net's residual shortcuts to a layer's output, from the outputs kept so far."""

    def __init__(self, config: RunConfig, shapes: list[Shape], layer_shapes: list[Shape]) -> None:
        self.table = config.channelwise.shortcut_table()
        self.sources = {src for src, _ in self.table.values()}
        self.shapes, self.layer_shapes = shapes, layer_shapes

    def __call__(self, i: int, out: Tensor, kept: dict[int, Tensor]) -> Tensor:
        """Layer ``i``'s flat output ``out`` with its shortcut applied; keeps it if a later
        shortcut reads it."""
        if i in self.table:
            src, op = self.table[i]
            s = kept[src].detach()
            target = self.layer_shapes[i]
            if len(target) == 3:
                s = s.view(s.shape[0], *self.shapes[src])
                factor = self.shapes[src][1] // target[1]
                if factor > 1:
                    s = F.avg_pool2d(s, factor)
                o = out.view(out.shape[0], *target)
                out = (o + s if op == "add" else torch.cat([o, s], 1)).flatten(1)
            else:
                out = out + s if op == "add" else torch.cat([out, s], 1)
        if i in self.sources:
            kept[i] = out
        return out


class ChannelwiseNet(NetBase):
    """The channel-wise competitive FF net (``model.kind = "channelwise"``).

    Args:
        config: a run configuration with ``model.kind = "channelwise"``; its ``model.stack``
            (and ``model.layers``) are the layers, its ``[channelwise]`` section the method.
        in_shape: ``(C, H, W)`` of an image.
        num_classes: the number of classes (and of channel groups in every layer).
    """

    steps_done: Tensor
    voters: Tensor
    ema_updates: Tensor

    def __init__(self, config: RunConfig, in_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.config = config
        self.in_shape = tuple(in_shape)
        self.num_classes = num_classes
        made, self.shapes = build_channelwise_layers(config, self.in_shape, num_classes)
        self.layers = nn.ModuleList(made)
        # the moving averages of the layers (channelwise.ema): copies that never learn by
        # gradient, kept in the state dict so that a resumed run goes on exactly
        self.averaged: nn.ModuleList | None = None
        if config.channelwise.ema:
            self.averaged = nn.ModuleList(copy.deepcopy(made)).requires_grad_(False)
            self.register_buffer("ema_updates", torch.zeros(len(made), dtype=torch.long))
        self.shortcuts = _Shortcuts(config, self.shapes, [tuple(la.out_shape) for la in made])
        # CwComp's softmax classifier (readout.kind = "probe"): a linear layer on the
        # flattened outputs of the readout's layers (default: the last), trained every step on
        # their detached outputs by its own optimiser (readout.probe_*)
        r = config.readout
        self.probe_layers = list(r.layers) or [len(made) - 1]
        self.probe = None
        if r.kind == "probe":
            width = sum(math.prod(self.shapes[i]) for i in self.probe_layers)
            self.probe = nn.Linear(width, num_classes)
        self.optimizers: list[torch.optim.Optimizer] = []
        self.schedulers: list[torch.optim.lr_scheduler.LambdaLR] = []
        self.autocast_dtype = autocast_dtype(config.train.precision)
        cw = config.channelwise
        first, last = cw.vote_range or [0, len(made) - 1]
        if cw.vote == "last":
            first = last = len(made) - 1
        elif cw.vote == "all":
            first, last = 0, len(made) - 1
        self.register_buffer("voters", torch.tensor([first, last]))
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self.steps_per_epoch = 1

    # -- the objective ---------------------------------------------------------------------------

    def prepare(self, x: Tensor) -> Tensor:
        """Images ``(B, ...)`` -> flat float inputs ``(B, C H W)``."""
        m = self.config.model
        return pixels(x.reshape(x.shape[0], -1), m.input_mean, m.input_std)

    def scores(self, scored: Tensor) -> Tensor:
        """Class scores ``(B, K)`` of a layer's activities ``(B, F)``: its groups' goodness."""
        cw = self.config.channelwise
        return group_goodness(scored, self.num_classes, cw.goodness) * cw.scale

    def predicting(self) -> nn.ModuleList:
        """The layers that predict: their moving averages with ``channelwise.ema``, else the
        layers themselves."""
        return self.layers if self.averaged is None else self.averaged

    def run_layer(
        self, i: int, h: Tensor, kept: dict[int, Tensor], layers: nn.ModuleList | None = None
    ) -> tuple[Tensor, Tensor]:
        """Layer ``i`` (of ``layers``, default the learning ones) on ``h``: what it passes on
        (shortcut applied) and its class scores."""
        layer = cast(FFLayer, (self.layers if layers is None else layers)[i])
        with self._autocast(h):
            out, act = _activate_scored(layer, layer.preactivation(h))
        scored = out if self.config.channelwise.score_on == "output" else act
        return self.shortcuts(i, out, kept), self.scores(scored)

    # -- training --------------------------------------------------------------------------------

    def window(self, i: int) -> tuple[int, int]:
        """Layer ``i``'s epochs ``[start, stop)`` (default: every epoch)."""
        windows = self.config.channelwise.windows
        return (windows[i][0], windows[i][1]) if windows else (0, 1 << 30)

    def epoch(self) -> int:
        """The epoch the next training step belongs to (0-based)."""
        return int(self.steps_done) // self.steps_per_epoch

    def active(self, epoch: int) -> list[int]:
        """The layers that learn in ``epoch``."""
        return [
            i for i in range(len(self.layers)) if self.window(i)[0] <= epoch < self.window(i)[1]
        ]

    def configure(self, steps_per_epoch: int, epochs: int | None = None) -> None:
        """One optimiser per layer, each with its schedule over the steps of its own window
        (cut at the run's ``epochs``, default ``train.epochs``)."""
        epochs = self.config.train.epochs if epochs is None else epochs
        self.steps_per_epoch = max(steps_per_epoch, 1)
        o = self.config.optim
        self.optimizers, self.schedulers = [], []
        for i, layer in enumerate(self.layers):
            start, stop = self.window(i)
            steps = max(min(stop, epochs) - start, 1) * steps_per_epoch
            opt = optimizer_from_config(list(layer.parameters()), o)
            self.optimizers.append(opt)
            self.schedulers.append(
                torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(o.schedule, steps, o.warmup))
            )
        if self.probe is not None:  # the last optimiser: every step of the run
            self._add_readout_optimizer(self.probe, epochs * self.steps_per_epoch)

    def train_step(
        self, x: Tensor, y: Tensor, index: Tensor, gen: torch.Generator
    ) -> dict[str, Tensor]:
        """Every layer in its window takes one step on its local cross-entropy; the frozen
        layers below them run in evaluation mode, the layers above them not at all. Each
        layer's gradient is computed as soon as its loss is (so only one layer's activations
        are alive at a time); the optimisers step once every loss is known to be finite. A
        probe learns from the detached outputs of its layers, as they come out of this pass
        (frozen layers in evaluation mode), in every step of the run."""
        active = self.active(self.epoch())
        self.steps_done += 1
        probe = self.probe
        if not active and probe is None:
            return {}
        h, kept = self.prepare(x), cast(dict[int, Tensor], {})
        losses: list[Tensor] = []
        correct = h.new_zeros(())
        step = int(self.steps_done) - 1
        feats: list[Tensor] = []
        stop = max([*active, *(self.probe_layers if probe is not None else [])])
        for i in range(stop + 1):
            layer = self.layers[i]
            if i in active:
                h, s = self.run_layer(i, h, kept)
                loss = F.cross_entropy(s, y)
                # each layer's graph is freed at once: one layer's activations at a time
                check_finite([loss], [f"layer {i}"], step)
                loss.backward()
                losses.append(loss.detach())
                correct = (s.detach().argmax(1) == y).float().mean()
            else:
                layer.eval()
                with torch.no_grad():
                    h, _ = self.run_layer(i, h, kept)
                layer.train(self.training)
            if probe is not None and i in self.probe_layers:
                feats.append(h.detach().float())
        stepping = list(active)
        metrics: dict[str, Tensor] = {}
        if probe is not None:
            logits = probe(torch.cat(feats, 1))
            probe_loss = F.cross_entropy(logits, y)
            check_finite([probe_loss], ["the probe"], step)
            probe_loss.backward()
            stepping.append(len(self.layers))
            metrics["probe_loss"] = probe_loss.detach()
            metrics["probe_acc"] = (logits.detach().argmax(1) == y).float().mean()
        # no weight moves before every loss is known to be finite
        step_all([self.optimizers[i] for i in stepping], [self.schedulers[i] for i in stepping])
        self.update_averages(active)
        if losses:
            metrics.update(loss=torch.stack(losses).mean(), layer_acc=correct)
        return metrics

    @torch.no_grad()
    def update_averages(self, layers: list[int]) -> None:
        """One step of the moving averages of ``layers`` (nothing without
        ``channelwise.ema``): each parameter moves towards the layer's by ``1 - decay``; the
        buffers (batch-norm statistics) are copied, for the recalibration to replace."""
        if self.averaged is None:
            return
        for i in layers:
            decay, t = self.config.channelwise.ema, int(self.ema_updates[i])
            _average_step(self.averaged[i], self.layers[i], decay, t)
            self.ema_updates[i] += 1

    def end_epoch(self, x: Tensor, y: Tensor, gen: torch.Generator) -> None:
        """Recompute the batch norms' statistics of the layers that learnt in the epoch just
        finished (and of those below them) on the first ``channelwise.recalibrate`` training
        images; nothing for a ``DataLoader`` (``x`` is empty)."""
        n = self.config.channelwise.recalibrate
        active = self.active(self.epoch() - 1)
        if n and active and len(x):
            self.recalibrate(x[:n], max(active))
            if self.averaged is not None:
                self.recalibrate(x[:n], max(active), layers=self.averaged)

    @torch.no_grad()
    def recalibrate(
        self, x: Tensor, last: int, batch_size: int = 500, layers: nn.ModuleList | None = None
    ) -> None:
        """Exact batch-norm statistics for layers ``0..last`` (of ``layers``, default the
        learning ones) on images ``x``, layer by layer: each layer's inputs come from the
        layers below in evaluation mode, with their new statistics (the precise-BN
        procedure)."""
        layers = self.layers if layers is None else layers
        was = self.training
        h_all = [self.prepare(xb) for xb in x.split(batch_size)]
        kept_all: list[dict[int, Tensor]] = [{} for _ in h_all]
        for i in range(last + 1):
            layer = layers[i]
            norms = [m for m in layer.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
            if norms:
                momenta = [bn.momentum for bn in norms]
                for bn in norms:
                    bn.reset_running_stats()
                    bn.momentum = None  # a cumulative average over the batches
                layer.train()
                for hb in h_all:
                    self.run_layer(i, hb, {}, layers)
                for bn, momentum in zip(norms, momenta, strict=True):
                    bn.momentum = momentum
            layer.eval()
            h_all = [
                self.run_layer(i, hb, kept, layers)[0]
                for hb, kept in zip(h_all, kept_all, strict=True)
            ]
        self.train(was)

    # -- prediction ------------------------------------------------------------------------------

    @torch.no_grad()
    def layer_scores(self, x: Tensor, last: int | None = None) -> list[Tensor]:
        """Every predicting layer's class scores ``(B, K)`` (up to layer ``last``), in one
        pass."""
        h, kept = self.prepare(x), cast(dict[int, Tensor], {})
        out: list[Tensor] = []
        stop = len(self.layers) if last is None else last + 1
        layers = self.predicting()
        for i in range(stop):
            h, s = self.run_layer(i, h, kept, layers)
            out.append(s)
        return out

    @torch.no_grad()
    def label_scores(self, x: Tensor, layers: list[int] | None = None) -> Tensor:
        """The summed scores of the voting layers ``(B, K)`` (or of ``layers``)."""
        first, last = (int(v) for v in self.voters)
        chosen = list(range(first, last + 1)) if layers is None else layers
        per_layer = self.layer_scores(x, max(chosen))
        return torch.stack([per_layer[i] for i in chosen]).sum(0)

    @torch.no_grad()
    def probe_features(self, x: Tensor) -> Tensor:
        """The flattened outputs of the probe's layers ``(B, F)``, in one pass of the
        predicting layers."""
        h, kept = self.prepare(x), cast(dict[int, Tensor], {})
        layers, feats = self.predicting(), []
        for i in range(max(self.probe_layers) + 1):
            h, _ = self.run_layer(i, h, kept, layers)
            if i in self.probe_layers:
                feats.append(h.float())
        return torch.cat(feats, 1)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """The class whose groups score highest in the voting layers ``(B,)``, or the probe's
        (``readout.kind = "probe"``): one pass."""
        if self.probe is not None:
            logits: Tensor = self.probe(self.probe_features(x))
            return logits.argmax(1)
        return self.label_scores(x).argmax(1)

    @torch.no_grad()
    def choose_voters(self, split: Split, batch_size: int = 1000) -> dict[str, Any]:
        """Choose the contiguous range of voting layers that scores best on ``split``
        (DeeperForward's signal integrating and pruning): ties go to the range that runs fewer
        layers, then to the later first layer. Returns the range and its accuracy."""
        was = self.training
        self.eval()
        n = len(self.layers)
        correct = torch.zeros(n, n)
        for xb, yb in zip(
            split.images.split(batch_size), split.labels.split(batch_size), strict=True
        ):
            per_layer = torch.stack(self.layer_scores(xb))  # (L, B, K)
            prefix = torch.cat([torch.zeros_like(per_layer[:1]), per_layer.cumsum(0)])
            for s in range(n):
                for e in range(s, n):
                    pred = (prefix[e + 1] - prefix[s]).argmax(1)
                    correct[s, e] += float((pred == yb).sum())
        self.train(was)
        best, choice = -1.0, (n - 1, n - 1)
        for e in range(n):
            for s in range(e, -1, -1):
                if correct[s, e] > best:
                    best, choice = float(correct[s, e]), (s, e)
        self.voters.copy_(torch.tensor(choice))
        return {"voters": list(choice), "voters_acc": best / max(len(split), 1)}


class ChooseVoters(Callback):
    """After every epoch, a channel-wise net chooses its voting layers on ``split`` (a
    validation split, never the test set), before the epoch is evaluated."""

    def __init__(self, split: Split, batch_size: int = 1000) -> None:
        self.split, self.batch_size = split, batch_size

    def on_epoch_end(self, loop: Loop, record: dict[str, Any]) -> None:
        net = loop.module
        assert isinstance(net, ChannelwiseNet)
        record.update(net.choose_voters(self.split, self.batch_size))


class ChannelwiseBackpropNet(BackpropNet):
    """The backprop twin of a channel-wise net: the very same layers (built by the same code,
    shortcuts included) with their inputs no longer detached, and a linear output on the last
    layer, trained end to end with cross-entropy. With ``channelwise.ema`` it keeps the same
    moving average of its weights (layers and output), which computes in evaluation mode; its
    batch norms' running averages are copied from the learning layers."""

    ema_updates: Tensor

    def __init__(self, config: RunConfig, in_shape: tuple[int, ...], num_classes: int) -> None:
        nn.Module.__init__(self)
        self.config = config
        self.in_shape = tuple(in_shape)
        made, self.shapes = build_channelwise_layers(config, self.in_shape, num_classes)
        for layer in made:
            if not hasattr(layer, "detach"):
                raise ConfigError(f"the backprop twin cannot undetach a {type(layer).__name__}")
            setattr(layer, "detach", False)  # noqa: B010 (any layer kind with the flag)
        self.layers = nn.ModuleList(made)
        self.shortcuts = _Shortcuts(config, self.shapes, [tuple(la.out_shape) for la in made])
        self.head = nn.Linear(math.prod(self.shapes[-1]), num_classes)
        self.averaged: nn.ModuleList | None = None
        if config.channelwise.ema:
            parts = [copy.deepcopy(self.layers), copy.deepcopy(self.head)]
            self.averaged = nn.ModuleList(parts).requires_grad_(False)
            self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        self.optimizers = []
        self.schedulers = []
        self.autocast_dtype = autocast_dtype(config.train.precision)

    def learnable(self) -> list[nn.Parameter]:
        """The layers' and the output's parameters, not their moving averages."""
        return [*self.layers.parameters(), *self.head.parameters()]

    def train_step(
        self, x: Tensor, y: Tensor, index: Tensor, gen: torch.Generator
    ) -> dict[str, Tensor]:
        """One step of the whole net, then one of its moving average (with ``ema``)."""
        metrics = super().train_step(x, y, index, gen)
        if self.averaged is not None:
            live = nn.ModuleList([self.layers, self.head])
            _average_step(self.averaged, live, self.config.channelwise.ema, int(self.ema_updates))
            self.ema_updates += 1
        return metrics

    def forward(self, x: Tensor) -> Tensor:
        """Images ``(B, ...)`` -> logits ``(B, C)``: in evaluation mode by the moving average
        of the weights when there is one."""
        layers, head = self.layers, self.head
        if self.averaged is not None and not self.training:
            layers, head = cast(nn.ModuleList, self.averaged[0]), cast(nn.Linear, self.averaged[1])
        m = self.config.model
        h = pixels(x.reshape(x.shape[0], -1), m.input_mean, m.input_std)
        kept: dict[int, Tensor] = {}
        for i, layer in enumerate(layers):
            out, _ = _activate_scored(cast(FFLayer, layer), cast(FFLayer, layer).preactivation(h))
            h = self.shortcuts(i, out, kept)
        logits: Tensor = head(h)
        return logits
