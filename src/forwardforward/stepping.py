"""Learning from local losses: the NaN guard and the optimiser step, in one place.

Every network (FF, recurrent, sequence, backprop twin and :class:`~forwardforward.FFSequential`)
learns through :func:`learn`: check that every loss is finite (else stop with a message naming
the loss and the step, before anything is updated), backpropagate their sum (each loss reaches
only its own layer's weights, since layer inputs are detached), then step every optimiser and
its schedule.

Data-parallel training (:mod:`forwardforward.dist`) enters here too: while a
:class:`GradientSync` is active (:func:`syncing`), :func:`learn` checks the losses of the whole
global batch (so that every process stops together) and sums every process's share of the
gradients before any optimiser steps, and :func:`batch_mean` gives a batch statistic of the
global batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

import torch
from torch import Tensor

from forwardforward.errors import TrainingDiverged

__all__ = [
    "GradientSync",
    "active_sync",
    "batch_mean",
    "check_finite",
    "learn",
    "step_all",
    "syncing",
]

LRScheduler = torch.optim.lr_scheduler.LRScheduler


class GradientSync(Protocol):
    """What a data-parallel step does at the three points where processes must agree."""

    def reduce_losses(self, losses: Tensor) -> Tensor:
        """The losses ``(K,)`` of the global batch, from this process's share of it."""

    def reduce_grads(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Replace every ``p.grad`` by the gradient of the global batch's loss."""

    def mean(self, x: Tensor) -> Tensor:
        """The mean over the global batch of ``x`` (this process's rows ``(n, ...)``), whose
        gradient reaches this process's rows as a mean over them would."""


_ACTIVE: list[GradientSync] = []


@contextmanager
def syncing(sync: GradientSync) -> Iterator[None]:
    """Make :func:`learn` and :func:`batch_mean` use ``sync`` inside the block."""
    _ACTIVE.append(sync)
    try:
        yield
    finally:
        _ACTIVE.pop()


def active_sync() -> GradientSync | None:
    """The :class:`GradientSync` of the step in progress, or None (one process)."""
    return _ACTIVE[-1] if _ACTIVE else None


def batch_mean(x: Tensor) -> Tensor:
    """``x.mean(0)`` over the batch: the global batch's when a data-parallel step is active."""
    sync = active_sync()
    return x.mean(0) if sync is None else sync.mean(x)


def check_finite(losses: Sequence[Tensor], names: Sequence[str], step: int) -> None:
    """Raise :class:`TrainingDiverged` if a loss is NaN or infinite, naming the first such
    loss (``names[i]``: ``"layer 0"``, ``"the probe"``) and the optimisation ``step``."""
    stacked = torch.stack([loss.detach().float().reshape(()) for loss in losses])
    if bool(torch.isfinite(stacked).all()):
        return
    bad = int((~torch.isfinite(stacked)).nonzero()[0])
    raise TrainingDiverged(
        f"loss of {names[bad]} is {stacked[bad].item()} at optimisation step {step}: "
        "lower the learning rate or check the data"
    )


def step_all(
    optimizers: Sequence[torch.optim.Optimizer], schedulers: Sequence[LRScheduler] = ()
) -> None:
    """Step every optimiser, clear its gradients, then step every schedule."""
    for opt in optimizers:
        opt.step()
        opt.zero_grad(set_to_none=True)
    for sched in schedulers:
        sched.step()


def learn(
    losses: Sequence[Tensor],
    names: Sequence[str],
    optimizers: Sequence[torch.optim.Optimizer],
    schedulers: Sequence[LRScheduler] = (),
    *,
    step: int,
) -> None:
    """Check ``losses`` (see :func:`check_finite`), backpropagate their sum, step.

    Under :func:`syncing`, the losses checked are the global batch's and the gradients are
    summed over the processes before the optimisers step.
    """
    sync = active_sync()
    if sync is None:
        check_finite(losses, names, step)
    else:
        reduced = sync.reduce_losses(
            torch.stack([loss.detach().float().reshape(()) for loss in losses])
        )
        check_finite(list(reduced.unbind()), names, step)
    total = losses[0] if len(losses) == 1 else torch.stack(list(losses)).sum()
    total.backward()
    if sync is not None:
        sync.reduce_grads([p for opt in optimizers for g in opt.param_groups for p in g["params"]])
    step_all(optimizers, schedulers)
