"""The backprop twin: the same layer widths trained end to end with cross-entropy.

It is the baseline next to every FF result: same architecture (the FF net's hidden layers,
without the label in the input, plus a linear output layer), same data, same epoch budget.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from forwardforward.config import RunConfig
from forwardforward.layers import ACTIVATIONS, layer_stack
from forwardforward.layers.kinds import Shape
from forwardforward.nets.base import (
    NetBase,
    autocast_dtype,
    lr_lambda,
    optimizer_from_config,
    pixels,
)
from forwardforward.stepping import learn


class BackpropNet(NetBase):
    """An MLP ``D -> layers... -> C`` with the FF preset's activation, trained by backprop.

    The straight-through ReLU of the FF preset is a plain ReLU here (backprop needs no trick).
    """

    def __init__(self, config: RunConfig, in_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.config = config
        act = config.model.activation
        self.act = ACTIVATIONS["relu" if act == "relu_st" else act]
        self.in_shape = tuple(in_shape)
        # the FF net's stack, each layer's twin built by its kind: locally connected layers in
        # ``local``, other kinds in ``stack`` (with the shape each takes), then the linear layers
        m = config.model
        shape: Shape = (in_shape[0], in_shape[1], in_shape[2])
        local: list[nn.Module] = []
        stack: list[nn.Module] = []
        self.stack_shapes: list[Shape] = []
        for kind, options in layer_stack(m.local, m.stack, []):
            twin, out_shape = kind.twin(options, shape)
            if len(local) < len(m.local):
                local.append(twin)
            else:
                stack.append(twin)
                self.stack_shapes.append(shape)
            shape = out_shape
        self.local, self.stack = nn.ModuleList(local), nn.ModuleList(stack)
        widths = [math.prod(shape), *m.layers]
        self.layers = nn.ModuleList(
            nn.Linear(widths[i], widths[i + 1]) for i in range(len(widths) - 1)
        )
        self.head = nn.Linear(widths[-1], num_classes)
        self.optimizers: list[torch.optim.Optimizer] = []
        self.schedulers: list[torch.optim.lr_scheduler.LambdaLR] = []
        # evaluation runs in the configured precision too (configure() may change it)
        self.autocast_dtype = autocast_dtype(config.train.precision)

    def forward(self, x: Tensor) -> Tensor:
        """Images ``(B, ...)`` -> logits ``(B, C)``."""
        m = self.config.model
        h = pixels(x, m.input_mean, m.input_std).reshape(x.shape[0], *self.in_shape)
        for lc in self.local:
            h = self.act(lc(h))
        for layer, shape in zip(self.stack, self.stack_shapes, strict=True):
            h = self.act(layer(h.reshape(h.shape[0], *shape)))
        h = h.flatten(1)
        for layer in self.layers:
            h = self.act(layer(h))
        out: Tensor = self.head(h)
        return out

    def learnable(self) -> list[nn.Parameter]:
        """The parameters the optimiser steps (all of them here)."""
        return list(self.parameters())

    def configure(self, steps_per_epoch: int, epochs: int | None = None) -> None:
        """One optimiser and schedule for ``epochs`` epochs (default: ``baseline.epochs``, else
        ``train.epochs``) of ``steps_per_epoch`` steps."""
        b = self.config.baseline
        if epochs is None:
            epochs = b.epochs or self.config.train.epochs
        opt = optimizer_from_config(self.learnable(), b.optim)
        self.optimizers = [opt]
        self.schedulers = [
            torch.optim.lr_scheduler.LambdaLR(
                opt, lr_lambda(b.optim.schedule, steps_per_epoch * epochs, b.optim.warmup)
            )
        ]

    def train_step(
        self, x: Tensor, y: Tensor, index: Tensor, gen: torch.Generator
    ) -> dict[str, Tensor]:
        with self._autocast(x):
            loss = F.cross_entropy(self(x).float(), y)
        step = int(self.schedulers[0].last_epoch)
        learn([loss], ["the backprop twin"], self.optimizers, self.schedulers, step=step)
        return {"loss": loss.detach()}

    @torch.no_grad()
    def log_probs(self, x: Tensor) -> Tensor | None:
        """Log-probabilities of every label ``(B, C)``."""
        return torch.log_softmax(self(x).float(), 1)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        logits: Tensor = self(x)
        return logits.argmax(1)


class RecurrentBackpropNet(BackpropNet):
    """The recurrent twin, trained by backpropagation through time: a stack of recurrent
    layers of the FF net's widths, the same iterations, frames and damping, and a linear output
    on the top layer's states averaged over the prediction window."""

    def __init__(
        self,
        config: RunConfig,
        in_shape: tuple[int, ...],
        num_classes: int,
        *,
        frames: bool = False,
    ) -> None:
        nn.Module.__init__(self)
        self.config = config
        self.sequence = frames  # the channels are time steps, one frame per iteration
        frame = math.prod(in_shape[1:]) if self.sequence else math.prod(in_shape)
        widths = [frame, *config.model.layers]
        act = config.model.activation
        self.act = ACTIVATIONS["relu" if act == "relu_st" else act]
        self.inputs = nn.ModuleList(
            nn.Linear(widths[i], widths[i + 1]) for i in range(len(widths) - 1)
        )
        self.recurrent = nn.ModuleList(nn.Linear(w, w, bias=False) for w in config.model.layers)
        self.head = nn.Linear(widths[-1], num_classes)
        self.optimizers = []
        self.schedulers = []
        self.autocast_dtype = autocast_dtype(config.train.precision)

    def forward(self, x: Tensor) -> Tensor:
        """Images or sequences ``(B, F, ...)`` -> logits ``(B, C)``."""
        rc = self.config.recurrent
        frames = x.reshape(x.shape[0], x.shape[1] if self.sequence else 1, -1)
        frames = pixels(frames, self.config.model.input_mean, self.config.model.input_std)
        states = [frames.new_zeros(frames.shape[0], w) for w in self.config.model.layers]
        start, stop = rc.window
        pooled = frames.new_zeros(frames.shape[0], states[-1].shape[1])
        for t in range(rc.steps):
            below = frames[:, min(t, frames.shape[1] - 1)]
            for i, (inp, rec) in enumerate(zip(self.inputs, self.recurrent, strict=True)):
                proposed = self.act(inp(below) + rec(states[i]))
                states[i] = (1 - rc.damping) * states[i] + rc.damping * proposed
                below = states[i]
            if start <= t < stop:
                pooled = pooled + states[-1] / (stop - start)
        out: Tensor = self.head(pooled)
        return out
