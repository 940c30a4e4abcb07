"""Whole networks, each an :class:`FFModule` (an ``nn.Module`` with the loop's hooks), so the
loop, the CLI, checkpoints and benchmarks work with all of them unchanged."""

from forwardforward.nets.base import FFModule, Trainable
from forwardforward.nets.feedforward import FFNet

__all__ = ["FFModule", "FFNet", "Trainable"]
