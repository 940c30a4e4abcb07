"""Layer losses: ``(score_pos (P,), score_neg (N,), theta) -> scalar``.

Scores are signed goodness (see :func:`forwardforward.goodness.signed`): every loss here pushes
positive scores up and negative scores down, so the inverted objective is the same loss on
negated goodness and negated threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from forwardforward.registry import Registry


class Loss(Protocol):
    """``(score_pos (P,), score_neg (N,), theta, alpha) -> scalar loss``."""

    def __call__(self, pos: Tensor, neg: Tensor, theta: float, alpha: float) -> Tensor: ...


def threshold_softplus(pos: Tensor, neg: Tensor, theta: float, alpha: float = 1.0) -> Tensor:
    """Hinton's loss: ``softplus(alpha (theta - pos))`` and ``softplus(alpha (neg - theta))``.

    The mean over all P + N terms, i.e. binary cross-entropy with logits ``alpha (score - theta)``
    (loeweX's ``BCEWithLogits``; mohammadpz and FFLib with ``alpha = 1``).
    """
    logits = torch.cat([theta - pos, neg - theta]) * alpha
    return F.softplus(logits).mean()


def symba(pos: Tensor, neg: Tensor, theta: float = 0.0, alpha: float = 4.0) -> Tensor:
    """SymBa's pairwise loss ``softplus(-alpha (pos - neg))``; needs no threshold.

    With ``K`` negatives per positive (``N = K P``, negatives grouped as ``K`` blocks of ``P``),
    every negative is paired with its own positive.
    """
    if neg.shape[0] % pos.shape[0] != 0:
        raise ValueError(
            f"symba pairs each negative with a positive: {neg.shape[0]} negatives "
            f"is not a multiple of {pos.shape[0]} positives"
        )
    repeats = neg.shape[0] // pos.shape[0]
    return F.softplus(-alpha * (pos.repeat(repeats) - neg)).mean()


def linear(pos: Tensor, neg: Tensor, theta: float = 0.0, alpha: float = 1.0) -> Tensor:
    """nebullvm's linear loss: ``alpha (mean(neg) - mean(pos))``. Unbounded: use a small lr."""
    return alpha * (neg.mean() - pos.mean())


def log_sigmoid(pos: Tensor, neg: Tensor, theta: float, alpha: float = 1.0) -> Tensor:
    """nebullvm's ``-sign * log sigmoid``: ``-log s(a(pos-theta)) + log s(a(neg-theta))``.

    The negative term is bounded only because goodness is non-negative.
    """
    return -F.logsigmoid(alpha * (pos - theta)).mean() + F.logsigmoid(alpha * (neg - theta)).mean()


@dataclass(frozen=True)
class ThresholdSoftplus:
    """:func:`threshold_softplus` as a pair loss ``(pos, neg) -> loss`` (for
    :class:`~forwardforward.FFSequential`). Under the inverted objective the scores are the
    negated goodness: give a negative ``theta`` there."""

    theta: float
    alpha: float = 1.0

    def __call__(self, pos: Tensor, neg: Tensor) -> Tensor:
        return threshold_softplus(pos, neg, self.theta, self.alpha)


@dataclass(frozen=True)
class SymBa:
    """:func:`symba` as a pair loss ``(pos, neg) -> loss``: no threshold to choose."""

    alpha: float = 4.0

    def __call__(self, pos: Tensor, neg: Tensor) -> Tensor:
        return symba(pos, neg, 0.0, self.alpha)


LOSSES: Registry[Loss] = Registry(
    "loss",
    {
        "threshold_softplus": threshold_softplus,
        "symba": symba,
        "linear": linear,
        "log_sigmoid": log_sigmoid,
    },
)


class LocalObjective:
    """Every layer's local FF objective as a model configuration describes it: goodness, its
    direction, the loss and each layer's threshold.

    Args:
        goodness: a name in :data:`forwardforward.goodness.GOODNESS`.
        loss: a name in :data:`LOSSES`.
        maximize: False for the inverted objective (low goodness for positive data).
        theta: a number, ``"units"``: mean square activity 1 per unit (the layer's width for
            ``sum_squares``, 1 for ``mean_squares``), or a list with one number per layer.
        alpha: the loss's sharpness.
        widths: every layer's width, for ``theta = "units"``.
        theta_neg: the negatives' threshold, in the same forms, or ``"same"``. The loss sees the
            negatives' scores moved by the difference, so that threshold-softplus compares
            positives with ``theta`` and negatives with ``theta_neg`` (SymBa: a margin).
    """

    def __init__(
        self,
        goodness: str,
        loss: str,
        maximize: bool,
        theta: float | str | list[float],
        alpha: float,
        widths: list[int],
        theta_neg: float | str | list[float] = "same",
    ) -> None:
        from forwardforward.goodness import GOODNESS

        self.goodness = GOODNESS[goodness]
        self.loss_fn = LOSSES[loss]
        self.maximize, self.alpha = maximize, alpha
        units = [float(w) if goodness == "sum_squares" else 1.0 for w in widths]

        def per_layer(value: float | str | list[float]) -> list[float]:
            if value == "units":
                return units
            if isinstance(value, list):
                if len(value) != len(widths):
                    raise ValueError(f"{len(value)} thresholds for {len(widths)} layers")
                return [float(v) for v in value]
            return [float(value)] * len(widths)

        thetas = per_layer(theta)
        thetas_neg = thetas if theta_neg == "same" else per_layer(theta_neg)
        sign = 1.0 if maximize else -1.0
        self.thetas = [sign * t for t in thetas]  # thresholds on scores
        # how far the negatives' threshold sits from the positives', on the score scale
        self.neg_shifts = [sign * (tn - t) for t, tn in zip(thetas, thetas_neg, strict=True)]

    def score(self, h: Tensor) -> Tensor:
        """Signed goodness ``(B,)`` of activities ``(B, H)``: higher means "more positive"."""
        g = self.goodness(h)  # fp32 even for bf16 activities
        return g if self.maximize else -g

    def __call__(self, i: int, h: Tensor, b: int) -> tuple[Tensor, Tensor, Tensor]:
        """Layer ``i``'s loss on stacked activities ``(P + N, H)`` whose first ``b = P`` rows are
        the positives, with the positive and negative scores it was computed from.

        Goodness is computed once on the stacked batch and the scores are split afterwards:
        slicing the activities instead would cost two full-size zero-filled gradients.
        """
        scores = self.score(h)
        pos, neg = scores[:b], scores[b:]
        return self.loss(i, pos, neg), pos, neg

    def loss(self, i: int, pos: Tensor, neg: Tensor) -> Tensor:
        """Layer ``i``'s loss on the scores of positives ``(P,)`` and negatives ``(N,)``."""
        shift = self.neg_shifts[i]
        seen = neg - shift if shift else neg
        return self.loss_fn(pos, seen, self.thetas[i], self.alpha)
