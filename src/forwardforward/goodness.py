"""Goodness: a layer's activity -> one number per sample.

A goodness function maps activities ``(B, ...)`` to ``(B,)``. Whether goodness is maximised for
positive data (Hinton) or minimised (the "inverted" objective of RecurrentForwardForward) is a
property of the :class:`Objective`, which turns goodness into a *score* that is always higher for
data the layer believes is positive.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from forwardforward.registry import Registry


class Goodness(Protocol):
    """Activity ``(B, ...)`` -> goodness ``(B,)``."""

    def __call__(self, h: Tensor) -> Tensor: ...


def sum_squares(h: Tensor) -> Tensor:
    """Sum of squared activities per sample: ``(B, ...) -> (B,)`` (Hinton, loeweX)."""
    return h.flatten(1).square().sum(dim=1)


def mean_squares(h: Tensor) -> Tensor:
    """Mean of squared activities per sample: ``(B, ...) -> (B,)`` (mohammadpz, FFLib, nebullvm)."""
    return h.flatten(1).square().mean(dim=1)


GOODNESS: Registry[Goodness] = Registry(
    "goodness", {"sum_squares": sum_squares, "mean_squares": mean_squares}
)


def signed(goodness: Tensor, maximize: bool) -> Tensor:
    """The score of a goodness: itself when goodness is maximised, its negation otherwise."""
    return goodness if maximize else torch.neg(goodness)
