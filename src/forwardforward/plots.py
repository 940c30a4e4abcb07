"""Figures as PNG files, written without a plotting library.

A figure here is a grid of grey-level tiles (images, masks, receptive fields), which is all
the FF figures need; the PNG encoder is the standard one (zlib-compressed scanlines).
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from forwardforward.checkpoint import atomic_write_bytes


def encode_png(image: npt.NDArray[np.uint8]) -> bytes:
    """A grey ``(H, W)`` or RGB ``(H, W, 3)`` uint8 image as PNG bytes."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(
            f"expected a uint8 (H, W) or (H, W, 3) image, got {image.dtype} {image.shape}"
        )
    h, w = image.shape[:2]
    color = 0 if image.ndim == 2 else 2
    rows = image.reshape(h, -1)
    raw = b"".join(b"\x00" + rows[i].tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def write_png(path: Path, image: npt.NDArray[np.uint8]) -> Path:
    """Write ``image`` to ``path`` atomically."""
    data = encode_png(image)
    atomic_write_bytes(path, lambda f: f.write(data))
    return path


def grid(tiles: Tensor, cols: int, pad: int = 2, scale: int = 1) -> npt.NDArray[np.uint8]:
    """Tiles ``(N, H, W)`` with values in ``[0, 1]`` -> one uint8 image, ``cols`` per row."""
    n, h, w = tiles.shape
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), 255, dtype=np.uint8)
    pix = (tiles.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    for k in range(n):
        r, c = divmod(k, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[y : y + h, x : x + w] = pix[k]
    return np.kron(out, np.ones((scale, scale), dtype=np.uint8)) if scale > 1 else out


def normalise_each(t: Tensor) -> Tensor:
    """Scale every tile ``(N, H, W)`` to ``[0, 1]`` on its own range."""
    flat = t.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).view_as(t)


def masks_figure(
    images: Tensor, seed: int = 0, n: int = 8, blurs: int = 6
) -> npt.NDArray[np.uint8]:
    """Rows: image a, image b, the mask, the hybrid negative, for ``n`` pairs of images
    ``(N, 1, H, W)`` in ``[0, 1]``."""
    from forwardforward.negatives import hybrid, other_samples, smooth_masks

    gen = torch.Generator().manual_seed(seed)
    a = images[:n].float()
    b = a[other_samples(a.shape[0], gen, a.device)]
    m = smooth_masks(a.shape[0], (a.shape[-2], a.shape[-1]), gen, blurs)
    h = hybrid(a, b, m)
    rows = torch.cat([a[:, 0], b[:, 0], m[:, 0], h[:, 0]])
    return grid(rows, cols=a.shape[0], scale=3)


def fields_figure(
    layer: torch.nn.Module, in_shape: tuple[int, ...], n: int = 64
) -> npt.NDArray[np.uint8]:
    """The first layer's receptive fields: the input weights of its first ``n`` units (fully
    connected) or the filters at the centre location (locally connected), each scaled to its
    own range; the label slots of the input are left out."""
    from forwardforward.layers import FFLinear, FFLocallyConnected2d

    c, h, w = in_shape[0], in_shape[-2], in_shape[-1]
    if isinstance(layer, FFLocallyConnected2d):
        loc = (layer.out_h // 2) * layer.out_w + layer.out_w // 2
        k = layer.kernel_size
        filt = layer.weight[loc, :n].view(-1, layer.in_shape[0], k, k)[:, 0]
        return grid(normalise_each(filt), cols=min(8, filt.shape[0]), scale=8)
    if not isinstance(layer, FFLinear):
        raise TypeError(f"no receptive fields for {type(layer).__name__}")
    weights = layer.weight[:n, : c * h * w].view(-1, c, h, w)[:, 0]
    return grid(normalise_each(weights), cols=8, scale=3)


def settling_figure(images: Tensor, goodness: Tensor, cell: int = 6) -> npt.NDArray[np.uint8]:
    """For a few images ``(N, 1, H, W)``: the image above a heat map of its goodness per
    candidate label (rows) and iteration (columns), ``goodness`` ``(N, C, T)``; every column is
    scaled to its own range, so the brightest cell is the label that wins at that step."""
    n, c, t = goodness.shape
    h, w = images.shape[-2:]
    tile_w = max(w * 2, t * cell)
    tile_h = h * 2 + 4 + c * cell
    out = np.full((tile_h + 4, n * (tile_w + 4) + 4), 255, dtype=np.uint8)
    g = goodness.float()
    lo, hi = g.amin(1, keepdim=True), g.amax(1, keepdim=True)
    maps = (g - lo) / (hi - lo).clamp_min(1e-12)
    for k in range(n):
        x0 = 4 + k * (tile_w + 4)
        img = (images[k, 0].float().clamp(0, 1).cpu().numpy() * 255).astype(np.uint8)
        out[2 : 2 + 2 * h, x0 : x0 + 2 * w] = np.kron(img, np.ones((2, 2), dtype=np.uint8))
        heat = (maps[k].cpu().numpy() * 255).round().astype(np.uint8)
        block = np.kron(heat, np.ones((cell, cell), dtype=np.uint8))
        out[6 + 2 * h : 6 + 2 * h + c * cell, x0 : x0 + t * cell] = block
    return out
