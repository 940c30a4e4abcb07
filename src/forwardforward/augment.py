"""Data augmentation on the device the images are on: random translations and mirror images,
drawn from the run's generator (so that a resumed run repeats them)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from forwardforward.negatives import shift_images

__all__ = ["augmentation", "flip_images", "shift_images"]


def flip_images(x: Tensor, generator: torch.Generator) -> Tensor:
    """Each image of ``(B, C, H, W)`` mirrored left to right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def augmentation(shift: int, flip: bool) -> Callable[[Tensor, torch.Generator], Tensor] | None:
    """The training images' transform: a translation by up to ``shift`` pixels, then a mirror
    image with probability 1/2 if ``flip``; None when neither is asked for."""
    if not shift and not flip:
        return None

    def transform(x: Tensor, gen: torch.Generator) -> Tensor:
        if shift:
            x = shift_images(x, shift, gen)
        if flip:
            x = flip_images(x, gen)
        return x

    return transform
