"""Negative data for supervised FF: which wrong label codes go with which images.

A sampler returns ``(index (M,), q (M, C))``: negative ``m`` is image ``index[m]`` of the batch with
label code ``q[m]``. Samplers that need the model's opinion (hard negatives) take the per-label
scores ``(B, C)`` of the batch. No sampler ever returns the true label (three seed systems did).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from forwardforward.registry import Registry


class NegativeSampler(Protocol):
    """``(y (B,), C, generator, scores (B, C) | None) -> (index (M,), q (M, C))``."""

    @property
    def needs_scores(self) -> bool:
        """Whether the sampler needs the model's per-label scores of the batch."""

    def __call__(
        self, y: Tensor, num_classes: int, generator: torch.Generator, scores: Tensor | None
    ) -> tuple[Tensor, Tensor]: ...


def wrong_labels(y: Tensor, num_classes: int, generator: torch.Generator) -> Tensor:
    """A uniformly random label different from ``y`` ``(B,)``, for every sample."""
    offset = torch.randint(
        1, num_classes, y.shape, generator=generator, device=y.device, dtype=y.dtype
    )
    return (y + offset) % num_classes


@dataclass(frozen=True)
class RandomWrong:
    """One uniformly random wrong label per image, resampled every batch."""

    needs_scores: bool = False

    def __call__(
        self, y: Tensor, num_classes: int, generator: torch.Generator, scores: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        idx = torch.arange(y.shape[0], device=y.device)
        return idx, F.one_hot(wrong_labels(y, num_classes, generator), num_classes).float()


@dataclass(frozen=True)
class AllWrong:
    """All ``C - 1`` wrong labels of every image (mohammadpz PR #14): ``M = (C - 1) B``, as
    ``C - 1`` blocks of ``B`` so that block ``k`` pairs with the positives."""

    needs_scores: bool = False

    def __call__(
        self, y: Tensor, num_classes: int, generator: torch.Generator, scores: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        b = y.shape[0]
        idx = torch.arange(b, device=y.device).repeat(num_classes - 1)
        offsets = torch.arange(1, num_classes, device=y.device).repeat_interleave(b)
        return idx, F.one_hot((y[idx] + offsets) % num_classes, num_classes).float()


@dataclass(frozen=True)
class Hard:
    """A wrong label sampled from the model's own softmax over per-label scores (Hinton's code).

    Args:
        temperature: divides the scores before the softmax.
    """

    temperature: float = 1.0
    needs_scores: bool = True

    def __call__(
        self, y: Tensor, num_classes: int, generator: torch.Generator, scores: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        if scores is None:
            raise ValueError("hard negatives need the model's per-label scores")
        logits = (scores.float() / self.temperature).scatter(1, y[:, None], float("-inf"))
        probs = torch.softmax(logits - logits.amax(dim=1, keepdim=True), dim=1)
        wrong = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        idx = torch.arange(y.shape[0], device=y.device)
        return idx, F.one_hot(wrong, num_classes).float()


@dataclass(frozen=True)
class Inverse:
    """The inverse code ``1 - onehot(y)`` (FFLib's default): every label but the true one."""

    needs_scores: bool = False

    def __call__(
        self, y: Tensor, num_classes: int, generator: torch.Generator, scores: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        idx = torch.arange(y.shape[0], device=y.device)
        return idx, 1.0 - F.one_hot(y, num_classes).float()


NEGATIVES: Registry[NegativeSampler] = Registry(
    "negatives",
    {"random_wrong": RandomWrong(), "all_wrong": AllWrong(), "hard": Hard(), "inverse": Inverse()},
)
