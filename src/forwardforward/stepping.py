"""Learning from local losses: the NaN guard and the optimiser step, in one place.

Every network (FF, recurrent, sequence, backprop twin and :class:`~forwardforward.FFSequential`)
learns through :func:`learn`: check that every loss is finite (else stop with a message naming
the loss and the step, before anything is updated), backpropagate their sum (each loss reaches
only its own layer's weights, since layer inputs are detached), then step every optimiser and
its schedule.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from forwardforward.errors import TrainingDiverged

__all__ = ["check_finite", "learn", "step_all"]

LRScheduler = torch.optim.lr_scheduler.LRScheduler


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
    """Check ``losses`` (see :func:`check_finite`), backpropagate their sum, step."""
    check_finite(losses, names, step)
    total = losses[0] if len(losses) == 1 else torch.stack(list(losses)).sum()
    total.backward()
    step_all(optimizers, schedulers)
