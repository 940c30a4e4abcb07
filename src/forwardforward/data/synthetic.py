"""A small procedurally generated image dataset, for tests, demos and smoke runs (no files).

Each class has a smooth random prototype image; samples are the prototype, shifted by up to
one pixel and with pixel noise added. It is learnable but not trivial, deterministic for a seed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from forwardforward.data.vision import Split, VisionDataset


def synthetic_dataset(
    *,
    n_train: int = 2000,
    n_test: int = 500,
    num_classes: int = 10,
    image_shape: tuple[int, int, int] = (1, 28, 28),
    noise: float = 0.25,
    val_fraction: float = 0.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> VisionDataset:
    """A seeded synthetic dataset of ``(C, H, W)`` uint8 images in ``num_classes`` classes."""
    gen = torch.Generator().manual_seed(seed)
    c, h, w = image_shape
    coarse = torch.rand(num_classes, c, max(h // 4, 1), max(w // 4, 1), generator=gen)
    protos = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)

    def make(n: int) -> Split:
        labels = torch.randint(0, num_classes, (n,), generator=gen)
        shifts = torch.randint(-1, 2, (n, 2), generator=gen)
        imgs = protos[labels]
        imgs = torch.stack(
            [
                torch.roll(im, (int(s[0]), int(s[1])), dims=(1, 2))
                for im, s in zip(imgs, shifts, strict=True)
            ]
        )
        imgs = (imgs + noise * torch.randn(imgs.shape, generator=gen)).clamp(0, 1)
        return Split((imgs * 255).round().to(torch.uint8), labels)

    n_val = round(n_train * val_fraction)
    train, test = make(n_train), make(n_test)
    val = None
    if n_val:
        val = Split(train.images[:n_val], train.labels[:n_val])
        train = Split(train.images[n_val:], train.labels[n_val:])
    ds = VisionDataset(
        name="synthetic",
        num_classes=num_classes,
        classes=tuple(str(i) for i in range(num_classes)),
        train=train,
        val=val,
        test=test,
    )
    return ds.to(device)
