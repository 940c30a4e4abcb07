"""Whole networks. Each offers the same small surface (see :class:`Trainable`), so the trainer,
the CLI, checkpoints and benchmarks work with all of them unchanged."""

from forwardforward.nets.base import Trainable
from forwardforward.nets.feedforward import FFNet

__all__ = ["FFNet", "Trainable"]
