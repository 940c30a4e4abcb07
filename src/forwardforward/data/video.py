"""Sequences from MNIST digits: Moving MNIST and sequential (row-by-row) MNIST.

A sequence is stored like an image whose channels are time steps: ``(N, T, H, W)`` uint8, so it
lives in a :class:`~forwardforward.data.vision.Split` and the recurrent net reads frame ``t`` at
iteration ``t`` (``recurrent.frames = true``).

RecurrentForwardForward's sequential MNIST used pen-stroke sequences from external files, which
are not available here; ours is the common row-by-row variant (28 steps of 28 pixels).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import IO

import numpy as np
import torch
from torch import Tensor

from forwardforward.checkpoint import atomic_write_bytes
from forwardforward.data.vision import Split
from forwardforward.errors import DataError

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


CACHE_MAGIC = b"forwardforward-video-1\n"
"""First line of a cached video file; a JSON header line and the raw uint8 frames follow."""


def cached_moving_mnist(
    digits: Split,
    cache_dir: str | Path,
    *,
    frames: int = 20,
    size: int = 64,
    seed: int = 0,
    max_speed: float = 3.0,
) -> Split:
    """:func:`moving_mnist`, kept on disk under ``cache_dir/moving_mnist/``.

    The file's name is a hash of the digits, their labels and the generator's settings, so
    another setting never reads a stale file. Its header holds the shape and the sha256 of the
    frames; a file that fails the check (truncated, corrupt) is reported and made again. The
    file is written atomically: an interrupted write leaves no partial file behind.
    """
    settings = {"frames": frames, "size": size, "seed": seed, "max_speed": max_speed}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    key.update(digits.images.cpu().numpy().tobytes())
    key.update(digits.labels.cpu().numpy().astype("<i8").tobytes())
    path = Path(cache_dir) / "moving_mnist" / f"{key.hexdigest()[:40]}.bin"
    shape = (len(digits), frames, size, size)
    if path.exists():
        try:
            images = read_video_cache(path, shape)
        except DataError as exc:
            warnings.warn(f"{exc}; generating it again", stacklevel=2)
        else:
            return Split(images.to(digits.images.device), digits.labels.clone())
    video = moving_mnist(digits, frames=frames, size=size, seed=seed, max_speed=max_speed)
    write_video_cache(path, video.images)
    return video


def write_video_cache(path: Path, images: Tensor) -> None:
    """Write uint8 ``images`` with a header (shape, sha256) atomically to ``path``."""
    payload = images.cpu().contiguous().numpy().tobytes()
    header = {"shape": list(images.shape), "sha256": hashlib.sha256(payload).hexdigest()}

    def write(f: IO[bytes]) -> None:
        f.write(CACHE_MAGIC)
        f.write(json.dumps(header).encode() + b"\n")
        f.write(payload)

    atomic_write_bytes(path, write)


def read_video_cache(path: Path, shape: tuple[int, ...] | None = None) -> Tensor:
    """Read a file from :func:`write_video_cache`, checking its shape and checksum.

    Raises :class:`DataError` naming the file and what is wrong with it.
    """
    with open(path, "rb") as f:
        magic = f.read(len(CACHE_MAGIC))
        if magic != CACHE_MAGIC:
            raise DataError(f"{path}: not a forwardforward video cache file")
        try:
            header = json.loads(f.readline(4096))
            found = tuple(int(n) for n in header["shape"])
            digest = str(header["sha256"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: unreadable header ({exc})") from None
        if shape is not None and found != tuple(shape):
            raise DataError(f"{path}: holds shape {list(found)}, expected {list(shape)}")
        payload = f.read()
    expected = int(np.prod(found))
    if len(payload) != expected:
        raise DataError(f"{path}: truncated ({len(payload)} of {expected} bytes of frames)")
    if hashlib.sha256(payload).hexdigest() != digest:
        raise DataError(f"{path}: checksum mismatch (the file is corrupt)")
    return torch.from_numpy(np.frombuffer(payload, dtype=np.uint8).copy()).reshape(found)


def sequential_mnist(digits: Split) -> Split:
    """Row by row: 28 steps of 28 pixels, ``(N, 28, 1, 28)``."""
    images: Tensor = digits.images[:, 0]
    return Split(images[:, :, None, :].contiguous(), digits.labels.clone())
