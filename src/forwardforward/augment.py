"""Data augmentation on the device the images are on: random translations, rotations and
rescalings, and mirror images, drawn from the run's generator (so that a resumed run repeats
them)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from forwardforward.negatives import shift_images

__all__ = ["affine_images", "augmentation", "flip_images", "random_affine", "shift_images"]


def flip_images(x: Tensor, generator: torch.Generator) -> Tensor:
    """Each image of ``(B, C, H, W)`` mirrored left to right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def affine_images(x: Tensor, degrees: Tensor, scales: Tensor) -> Tensor:
    """Each image of ``(B, C, H, W)`` rotated counter-clockwise by its own angle ``degrees[b]``
    and magnified by ``scales[b]`` about its centre (bilinear, zero-filled). Integer pixels
    (uint8) are rounded back to their dtype, so the net still sees raw pixels."""
    if x.ndim != 4:
        raise ValueError(f"affine_images takes images (B, C, H, W), got shape {tuple(x.shape)}")
    b = x.shape[0]
    if degrees.shape != (b,) or scales.shape != (b,):
        raise ValueError(f"one angle and one scale per image: {b} images")
    if not bool((scales > 0).all()):
        raise ValueError("affine_images: every scale must be positive")
    f = x.float() if not x.is_floating_point() else x
    rad = degrees.to(f) * (math.pi / 180.0)
    cos, sin, inv = torch.cos(rad), torch.sin(rad), 1.0 / scales.to(f)
    # the sampling grid maps each output position to where it comes from in the input:
    # the inverse rotation, shrunk by the magnification (row 0 is x, row 1 is y, y downwards)
    theta = torch.zeros(b, 2, 3, dtype=f.dtype, device=f.device)
    theta[:, 0, 0], theta[:, 0, 1] = cos * inv, -sin * inv
    theta[:, 1, 0], theta[:, 1, 1] = sin * inv, cos * inv
    grid = F.affine_grid(theta, list(f.shape), align_corners=False)
    out = F.grid_sample(f, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if x.is_floating_point():
        return out
    info = torch.iinfo(x.dtype)
    return out.round().clamp(info.min, info.max).to(x.dtype)


def random_affine(x: Tensor, rotate: float, scale: float, generator: torch.Generator) -> Tensor:
    """Each image rotated by its own angle drawn uniformly from ``[-rotate, rotate]`` degrees and
    magnified by a factor drawn uniformly from ``[1 - scale, 1 + scale]``."""
    b = x.shape[0]
    u = torch.rand(2, b, generator=generator, device=x.device)
    return affine_images(x, (2 * u[0] - 1) * rotate, 1 + (2 * u[1] - 1) * scale)


def augmentation(
    shift: int, flip: bool, rotate: float = 0.0, scale: float = 0.0
) -> Callable[[Tensor, torch.Generator], Tensor] | None:
    """The training images' transform: a rotation by up to ``rotate`` degrees and a
    magnification by up to a factor ``1 +- scale`` (when either is asked for), a translation by
    up to ``shift`` pixels, then a mirror image with probability 1/2 if ``flip``; None when
    nothing is asked for."""
    if not shift and not flip and not rotate and not scale:
        return None

    def transform(x: Tensor, gen: torch.Generator) -> Tensor:
        if rotate or scale:
            x = random_affine(x, rotate, scale, gen)
        if shift:
            x = shift_images(x, shift, gen)
        if flip:
            x = flip_images(x, gen)
        return x

    return transform
