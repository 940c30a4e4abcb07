"""A supervised FF network assembled from pieces, with no configuration: the container.

:class:`FFSequential` holds layers (any ``nn.Module`` mapping ``(B, D) -> (B, H)``: the
library's :class:`~forwardforward.layers.FFLinear` or your own) with their local objective, and
offers what the loop needs: the local training step and prediction::

    net = ff.FFSequential(
        [ff.FFLinear(784, 500), ff.FFLinear(500, 500)],
        labels=ff.OverwritePixels(10, 784),
        loss=ff.SymBa(alpha=4.0),
    )
    ff.fit(net, ff.load_dataset("mnist"), epochs=4)

Every layer's input is detached by the container, so no gradient crosses a layer, whatever the
layer does; each layer has its own optimiser, built by ``optimizer(params)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from forwardforward.goodness import mean_squares
from forwardforward.labels import LabelEncoder
from forwardforward.layers import FFLayer, normalize
from forwardforward.losses import SymBa
from forwardforward.negatives import NegativeSampler, RandomWrong
from forwardforward.nets.base import FFModule, lr_lambda, pixels
from forwardforward.stepping import learn

__all__ = ["FFSequential"]

#: ``(goodness of the positives (P,), goodness of the negatives (N,)) -> loss``, as scores:
#: higher means "more positive" (the goodness itself, or its negation when minimised).
PairLoss = Callable[[Tensor, Tensor], Tensor]
OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]


def _adam(params: list[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-3)


class FFSequential(FFModule):
    """Layers trained one by one on their local FF objective, on labelled inputs.

    Args:
        layers: the layers, in order; each maps ``(B, D) -> (B, H)`` and sees a detached input.
            A :class:`~forwardforward.layers.FFLayer` with ``peer_weight > 0`` adds its peer
            normalisation to its loss.
        labels: how a label enters the input (e.g.
            :class:`~forwardforward.labels.OverwritePixels`); its ``out_features`` is the first
            layer's input width.
        negatives: which wrong labels make the negative inputs (default: one random wrong
            label per image; :class:`~forwardforward.negatives.Hard` samples them from the
            readout's own scores).
        goodness: activities ``(B, H) -> (B,)``.
        loss: a layer's loss from the scores of its positives and negatives; one for all
            layers, or one per layer.
        maximize: False for the inverted objective (low goodness for positive data).
        optimizer: builds each layer's optimiser from its parameters (and the probe's).
        schedule: the learning rate over the run: ``constant``, ``cooldown`` (constant for the
            first half, then linear to 0) or ``cosine``.
        readout: ``goodness`` predicts the label whose input has the highest summed goodness
            over ``readout_layers``; ``probe`` trains a linear softmax on their normalised
            activities, jointly with the layers, and predicts with it in one pass.
        readout_layers: the layers the readout sums or reads (default: all).
        neutral_level: the label code of the probe's input (every class at this value).
    """

    def __init__(
        self,
        layers: Sequence[nn.Module],
        *,
        labels: LabelEncoder,
        negatives: NegativeSampler | None = None,
        goodness: Callable[[Tensor], Tensor] = mean_squares,
        loss: PairLoss | Sequence[PairLoss] | None = None,
        maximize: bool = True,
        optimizer: OptimizerFactory = _adam,
        schedule: str = "constant",
        readout: Literal["goodness", "probe"] = "goodness",
        readout_layers: Sequence[int] | None = None,
        probe_width: int | None = None,
        neutral_level: float = 0.1,
    ) -> None:
        super().__init__()
        if not layers:
            raise ValueError("FFSequential needs at least one layer")
        if readout not in ("goodness", "probe"):
            raise ValueError(f"unknown readout {readout!r}; choose one of: goodness, probe")
        self.layers = nn.ModuleList(layers)
        self.labels = labels
        self.num_classes = labels.num_classes
        self.negatives: NegativeSampler = RandomWrong() if negatives is None else negatives
        self.goodness = goodness
        losses = SymBa() if loss is None else loss
        self.losses = list(losses) if isinstance(losses, Sequence) else [losses] * len(layers)
        if len(self.losses) != len(self.layers):
            raise ValueError(f"{len(self.losses)} losses for {len(self.layers)} layers")
        self.maximize = maximize
        self.optimizer_factory = optimizer
        lr_lambda(schedule, 1)  # an unknown schedule fails now, not at the first epoch
        self.schedule = schedule
        self.readout = readout
        self.readout_layers = list(range(len(layers)) if readout_layers is None else readout_layers)
        if any(not 0 <= i < len(layers) for i in self.readout_layers):
            raise ValueError(f"readout_layers {self.readout_layers} outside 0..{len(layers) - 1}")
        self.neutral_level = neutral_level
        self.probe: nn.Linear | None = None
        if readout == "probe":
            if probe_width is None:
                probe_width = sum(_width(self.layers[i]) for i in self.readout_layers)
            self.probe = nn.Linear(probe_width, self.num_classes, bias=False)
            nn.init.zeros_(self.probe.weight)
        self.optimizers: list[torch.optim.Optimizer] = []
        self.schedulers: list[torch.optim.lr_scheduler.LambdaLR] = []

    # -- the local objective -------------------------------------------------------------------

    def flat(self, x: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` (uint8 or float) or ``(B, D)`` -> ``(B, D)`` float."""
        return pixels(x.reshape(x.shape[0], -1))

    def score(self, h: Tensor) -> Tensor:
        """Signed goodness ``(B,)``: higher means "more positive"."""
        g = self.goodness(h)
        return g if self.maximize else -g

    def layer_loss(self, i: int, h: Tensor, b: int) -> Tensor:
        """Layer ``i``'s loss on activities ``(P + N, H)`` whose first ``b = P`` rows are the
        positives, plus its peer normalisation (an :class:`FFLayer` with ``peer_weight``)."""
        scores = self.score(h)
        loss = self.losses[i](scores[:b], scores[b:])
        layer = self.layers[i]
        if isinstance(layer, FFLayer) and layer.peer_weight > 0:
            loss = loss + layer.peer_loss(h[:b].float())
        return loss

    # -- training ------------------------------------------------------------------------------

    def configure(self, steps_per_epoch: int, epochs: int | None = None) -> None:
        """One optimiser and learning-rate schedule per layer (and one for the probe), for
        ``epochs`` epochs of ``steps_per_epoch`` steps (``fit`` calls it)."""
        if epochs is None:
            if self.schedule != "constant":
                raise ValueError(f"the {self.schedule!r} schedule needs the number of epochs")
            epochs = 1
        total = steps_per_epoch * epochs
        modules = [*self.layers, *([self.probe] if self.probe is not None else [])]
        self.optimizers = [self.optimizer_factory(list(m.parameters())) for m in modules]
        self.schedulers = [
            torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(self.schedule, total))
            for opt in self.optimizers
        ]

    def train_step(
        self, x: Tensor, y: Tensor, index: Tensor, gen: torch.Generator
    ) -> dict[str, Tensor]:
        """One step on a batch: positives and negatives go through every layer as one stacked
        batch; every layer learns from its own loss only, and every optimiser steps."""
        if not self.optimizers:
            raise RuntimeError("call configure(steps_per_epoch, epochs) first (fit does)")
        xf = self.flat(x)
        feats = self.probe_features(xf) if self.probe is not None else None
        scores = None
        if self.negatives.needs_scores:
            assert self.probe is not None or self.readout == "goodness"
            scores = self.probe(feats).detach() if self.probe is not None else self.label_scores(xf)
        idx, q = self.negatives(y, self.num_classes, gen, scores)
        b = len(y)
        a = torch.cat([self.labels.embed_labels(xf, y), self.labels.embed(xf[idx], q)])
        losses, names = [], []
        for i, layer in enumerate(self.layers):
            a = layer(a.detach())
            losses.append(self.layer_loss(i, a, b))
            names.append(f"layer {i}")
        metrics = {f"loss{i}": loss.detach() for i, loss in enumerate(losses)}
        s = self.score(a.detach())  # the last layer's scores: positives above negatives
        metrics["ff_acc"] = (s[:b].repeat(len(idx) // b) > s[b:]).float().mean()
        if self.probe is not None:
            assert feats is not None
            logits = self.probe(feats)
            losses.append(F.cross_entropy(logits, y))
            names.append("probe")
            metrics["probe"] = losses[-1].detach()
        step = int(self.schedulers[0].last_epoch)
        learn(losses, names, self.optimizers, self.schedulers, step=step)
        return metrics

    # -- prediction ----------------------------------------------------------------------------

    @torch.no_grad()
    def label_scores(self, x: Tensor) -> Tensor:
        """Summed score of every candidate label over the readout layers: ``(B, ...) -> (B, C)``;
        every label's input goes through the net in one ``(B C)``-row batch."""
        xf = self.flat(x)
        b, c = xf.shape[0], self.num_classes
        rows = torch.arange(b, device=xf.device).repeat_interleave(c)
        candidates = torch.arange(c, device=xf.device).repeat(b)
        a = self.labels.embed_labels(xf.index_select(0, rows), candidates)
        total = torch.zeros(b * c, device=xf.device)
        for i, layer in enumerate(self.layers):
            a = layer(a)
            if i in self.readout_layers:
                total += self.score(a)
        return total.view(b, c)

    @torch.no_grad()
    def probe_features(self, x: Tensor) -> Tensor:
        """RMS-normalised activities of the readout layers for the neutral label ``(B, F)``."""
        a = self.labels.neutral(self.flat(x), self.neutral_level)
        feats = []
        for i, layer in enumerate(self.layers):
            a = layer(a)
            if i in self.readout_layers:
                feats.append(normalize(a.float().flatten(1), "rms"))
        return torch.cat(feats, dim=1)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Predicted labels ``(B,)``: the probe's argmax, or the best label's goodness."""
        if self.probe is not None:
            logits: Tensor = self.probe(self.probe_features(x))
            return logits.argmax(1)
        return self.label_scores(x).argmax(1)


def _width(layer: nn.Module) -> int:
    """A layer's output width, for sizing the probe."""
    width = getattr(layer, "out_features", None)
    if not isinstance(width, int):
        raise ValueError(
            f"cannot tell the output width of {type(layer).__name__}: give probe_width"
        )
    return width
