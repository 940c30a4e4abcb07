"""Sequences from MNIST digits: Moving MNIST and sequential (row-by-row) MNIST.

A sequence is stored like an image whose channels are time steps: ``(N, T, H, W)`` uint8, so it
lives in a :class:`~forwardforward.data.vision.Split` and the recurrent net reads frame ``t`` at
iteration ``t`` (``recurrent.frames = true``).

RecurrentForwardForward's sequential MNIST used pen-stroke sequences from external files, which
are not available here; ours is the common row-by-row variant (28 steps of 28 pixels).
"""

from __future__ import annotations

import torch
from torch import Tensor

from forwardforward.data.vision import Split

SEQUENCES = ("moving_mnist", "sequential_mnist")
"""Datasets whose "channels" are time steps; both are made from MNIST."""


def moving_mnist(
    digits: Split,
    *,
    frames: int = 20,
    size: int = 64,
    seed: int = 0,
    max_speed: float = 3.0,
) -> Split:
    """One moving digit per sequence: ``(N, frames, size, size)`` uint8, labelled by the digit.

    Each digit starts at a random position with a random velocity (at most ``max_speed``
    pixels a frame in each direction) and bounces off the canvas walls, so it always stays
    whole inside the canvas. Deterministic for a seed.
    """
    images = digits.images[:, 0]  # (N, h, w)
    n, h, w = images.shape
    if size < max(h, w):
        raise ValueError(f"a {size}x{size} canvas cannot hold {h}x{w} digits")
    gen = torch.Generator().manual_seed(seed)
    span_y, span_x = size - h, size - w
    pos = torch.rand(n, 2, generator=gen) * torch.tensor([span_y, span_x])
    vel = (torch.rand(n, 2, generator=gen) * 2 - 1) * max_speed
    out = torch.zeros(n, frames, size, size, dtype=torch.uint8)
    limit = torch.tensor([float(span_y), float(span_x)])
    rows = torch.arange(n)
    for t in range(frames):
        top = pos.round().long()
        for dy in range(h):  # paste row by row, all sequences at once
            yy = top[:, 0] + dy
            cols = top[:, 1, None] + torch.arange(w)
            out[rows[:, None], t, yy[:, None], cols] = images[:, dy, :].cpu()
        pos = pos + vel
        low, high = pos < 0, pos > limit
        pos = torch.where(low, -pos, pos)
        pos = torch.where(high, 2 * limit - pos, pos)
        vel = torch.where(low | high, -vel, vel)
    return Split(out.to(digits.images.device), digits.labels.clone())


def sequential_mnist(digits: Split) -> Split:
    """Row by row: 28 steps of 28 pixels, ``(N, 28, 1, 28)``."""
    images: Tensor = digits.images[:, 0]
    return Split(images[:, :, None, :].contiguous(), digits.labels.clone())
