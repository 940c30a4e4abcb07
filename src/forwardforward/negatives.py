"""Negative data for supervised FF: which wrong label codes go with which images.

A sampler returns ``(index (M,), q (M, C))``: negative ``m`` is image ``index[m]`` of the batch with
label code ``q[m]``. Samplers that need the model's opinion (hard negatives) take the per-label
scores ``(B, C)`` of the batch. No sampler ever returns the true label (three seed systems did).
"""

from __future__ import annotations

import math
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


# ------------------------------------------------------------------------------------------------
# Negative *images*, for unsupervised FF: no labels, the negative is a different kind of input.


class ImageNegatives(Protocol):
    """Unsupervised negatives. ``pair`` gives the positive and negative network inputs of a
    batch of images ``(B, C, H, W)``; ``present`` the input a trained network sees for an image
    (for the readout); ``in_features`` the width of those inputs."""

    @property
    def positives_are_presented(self) -> bool:
        """Whether ``pair``'s positives are exactly what ``present`` gives for the same images,
        so that a readout trained alongside can reuse the positives' activities."""

    def pair(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]: ...

    def present(self, x: Tensor) -> Tensor: ...

    def in_features(self, shape: tuple[int, ...]) -> int: ...


def other_samples(n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """For each of ``n`` samples, the index of a uniformly random *other* sample ``(n,)``."""
    if n < 2:
        raise ValueError("negatives that mix two different images need a batch of at least 2")
    offset = torch.randint(1, n, (n,), generator=generator, device=device)
    return (torch.arange(n, device=device) + offset) % n


def smooth_masks(
    n: int,
    size: tuple[int, int],
    generator: torch.Generator,
    blurs: int = 6,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Hinton's hybrid-image masks ``(n, 1, H, W)`` of 0/1: a random bit image blurred ``blurs``
    times with ``[1/4, 1/2, 1/4]`` horizontally and vertically, then thresholded at 0.5. Large
    regions of ones and zeros; one independent mask per sample."""
    h, w = size
    m = (torch.rand(n, 1, h, w, generator=generator, device=device) < 0.5).float()
    for _ in range(blurs):  # edges replicated; slices are ~3x faster than a 1-channel conv on CPU
        p = torch.cat([m[..., :1], m, m[..., -1:]], -1)
        m = 0.25 * p[..., :-2] + 0.5 * p[..., 1:-1] + 0.25 * p[..., 2:]
        p = torch.cat([m[..., :1, :], m, m[..., -1:, :]], -2)
        m = 0.25 * p[..., :-2, :] + 0.5 * p[..., 1:-1, :] + 0.25 * p[..., 2:, :]
    return (m > 0.5).float()


def hybrid(a: Tensor, b: Tensor, mask: Tensor) -> Tensor:
    """``mask * a + (1 - mask) * b`` for images ``(B, C, H, W)`` and masks ``(B, 1, H, W)``."""
    return mask * a + (1 - mask) * b


@dataclass(frozen=True)
class HybridImages:
    """Hinton's unsupervised negatives: each image mixed with a different image through its own
    smooth random mask (seed 004 shared one mask across the whole batch)."""

    blurs: int = 6

    @property
    def positives_are_presented(self) -> bool:
        return True

    def pair(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        size = (int(x.shape[-2]), int(x.shape[-1]))
        masks = smooth_masks(x.shape[0], size, generator, self.blurs, x.device)
        other = x[other_samples(x.shape[0], generator, x.device)]
        return x.flatten(1), hybrid(x, other, masks).flatten(1)

    def present(self, x: Tensor) -> Tensor:
        return x.flatten(1)

    def in_features(self, shape: tuple[int, ...]) -> int:
        return math.prod(shape)


def shift_images(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Each image of ``(B, C, H, W)`` translated by its own random offset of up to ``max_shift``
    pixels in each direction, zero-filled (SCFF's random translations of each view)."""
    if max_shift == 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (max_shift, max_shift, max_shift, max_shift))
    span = 2 * max_shift + 1
    dy = torch.randint(0, span, (b,), generator=generator, device=x.device)
    dx = torch.randint(0, span, (b,), generator=generator, device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


SCFF_PAIRINGS = ("sum", "concat", "shared")


@dataclass(frozen=True)
class SelfContrastive:
    """SCFF (Nature Communications 2025): the input is a pair of images; the positive pairs an
    image with itself, the negative with a different image. With ``pairing = "sum"`` the first
    layer applies the same weights to both images, so the pair ``(a, b)`` enters as ``a + b``
    (normalised as one image): a positive is ``2a``, a negative two digits overlaid. With ``concat``
    the images sit side by side with separate weights, and telling ``(a, a)`` from ``(a, b)``
    is an easy comparison of the halves. ``shared`` is SCFF's layer exactly: the images sit
    side by side, the first layer normalises the pair together and applies one weight matrix
    to both halves, so a positive keeps its larger norm (its strokes overlap). ``shift``: each
    image of a pair is translated by up to that many pixels, independently (SCFF's
    augmentation; 0 turns it off)."""

    pairing: str = "sum"
    shift: int = 0

    def _join(self, a: Tensor, b: Tensor) -> Tensor:
        if self.pairing == "sum":
            return (a + b).flatten(1)
        return torch.cat([a.flatten(1), b.flatten(1)], 1)

    def pair(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        first = shift_images(x, self.shift, generator)
        second = shift_images(x, self.shift, generator)
        other = second[other_samples(x.shape[0], generator, x.device)]
        return self._join(first, second), self._join(first, other)

    def present(self, x: Tensor) -> Tensor:
        return self._join(x, x)

    @property
    def positives_are_presented(self) -> bool:
        return self.shift == 0

    def in_features(self, shape: tuple[int, ...]) -> int:
        return (1 if self.pairing == "sum" else 2) * math.prod(shape)


def make_image_negatives(kind: str, blurs: int, pairing: str, shift: int) -> ImageNegatives:
    """The unsupervised negatives ``kind`` (a name of :data:`IMAGE_NEGATIVES`) with its options."""
    IMAGE_NEGATIVES[kind]  # an unknown name raises the registry's error
    if kind == "hybrid":
        return HybridImages(blurs=blurs)
    return SelfContrastive(pairing=pairing, shift=shift)


IMAGE_NEGATIVES: Registry[ImageNegatives] = Registry(
    "image negatives", {"hybrid": HybridImages(), "self_contrastive": SelfContrastive()}
)
