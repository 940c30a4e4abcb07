"""Affine data augmentation (``train.augment_rotate``, ``train.augment_scale``): the exact
geometry of a rotation and a magnification, raw pixels kept raw, draws from the generator, and
the training loop feeding the nets the transformed images."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from _spy import record_batches

from forwardforward.augment import affine_images, augmentation, random_affine
from forwardforward.config import RunConfig
from forwardforward.train import Trainer


def _blob(size: int = 28, sigma: float = 3.0, cy: float = 13.5, cx: float = 13.5) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float32)
    g = torch.exp(-((r[:, None] - cy) ** 2 + (r[None, :] - cx) ** 2) / (2 * sigma**2))
    return g.view(1, 1, size, size)


def test_a_quarter_turn_is_rot90() -> None:
    x = torch.rand(3, 2, 6, 6, generator=torch.Generator().manual_seed(0))
    out = affine_images(x, torch.full((3,), 90.0), torch.ones(3))
    # a quarter turn maps pixel centres onto pixel centres: only sin/cos rounding is left
    torch.testing.assert_close(out, torch.rot90(x, 1, (-2, -1)), atol=1e-5, rtol=0)
    back = affine_images(x, torch.full((3,), -90.0), torch.ones(3))
    torch.testing.assert_close(back, torch.rot90(x, -1, (-2, -1)), atol=1e-5, rtol=0)


def test_no_angle_and_no_magnification_leave_raw_pixels_unchanged() -> None:
    u = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    out = affine_images(u, torch.zeros(4), torch.ones(4))
    assert out.dtype == torch.uint8 and torch.equal(out, u)
    assert augmentation(0, False, 0.0, 0.0) is None


def test_a_magnification_grows_a_centred_blob_by_its_square() -> None:
    x = _blob()
    for s in (0.8, 1.25):
        out = affine_images(x, torch.zeros(1), torch.tensor([s]))
        # the blob's mass scales with the area; bilinear sampling of a smooth blob is exact
        # to well under 1% (its tails stay inside the frame)
        assert float(out.sum() / x.sum()) == pytest.approx(s * s, rel=0.01)
        # and its width with s: the second moment about the centre grows by s^2
        r = torch.arange(28, dtype=torch.float32) - 13.5
        d2 = r[:, None] ** 2 + r[None, :] ** 2
        m0, m1 = float((x[0, 0] * d2).sum() / x.sum()), float((out[0, 0] * d2).sum() / out.sum())
        assert m1 / m0 == pytest.approx(s * s, rel=0.02)


def test_a_rotation_turns_an_off_centre_blob_about_the_centre() -> None:
    x = _blob(cy=13.5, cx=20.5, sigma=1.5)  # 7 pixels right of the centre
    out = affine_images(x, torch.tensor([30.0]), torch.ones(1))
    r = torch.arange(28, dtype=torch.float32)
    w = out[0, 0] / out.sum()
    cy, cx = float((w.sum(1) * r).sum()), float((w.sum(0) * r).sum())
    # counter-clockwise on the screen (rows grow downwards): up and to the left
    angle = math.radians(30.0)
    assert cx == pytest.approx(13.5 + 7 * math.cos(angle), abs=0.05)
    assert cy == pytest.approx(13.5 - 7 * math.sin(angle), abs=0.05)


def test_draws_come_from_the_generator_and_stay_in_range() -> None:
    x = _blob().repeat(64, 1, 1, 1)
    a = random_affine(x, 15.0, 0.2, torch.Generator().manual_seed(3))
    b = random_affine(x, 15.0, 0.2, torch.Generator().manual_seed(3))
    c = random_affine(x, 15.0, 0.2, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    ratio = a.flatten(1).sum(1) / x.flatten(1).sum(1)  # a centred blob: mass = scale^2
    assert float(ratio.min()) >= 0.8**2 * 0.99 and float(ratio.max()) <= 1.2**2 * 1.01
    assert float(ratio.std()) > 0.05  # each image its own magnification


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        affine_images(torch.zeros(2, 28, 28), torch.zeros(2), torch.ones(2))
    with pytest.raises(ValueError, match="one angle and one scale per image"):
        affine_images(torch.zeros(2, 1, 28, 28), torch.zeros(3), torch.ones(2))
    with pytest.raises(ValueError, match="positive"):
        affine_images(torch.zeros(2, 1, 28, 28), torch.zeros(2), torch.zeros(2))


@pytest.mark.parametrize("backprop", [False, True])
def test_training_sees_rotated_images(
    tiny_config: Callable[..., RunConfig], monkeypatch: pytest.MonkeyPatch, backprop: bool
) -> None:
    trainer = Trainer(
        tiny_config("train.epochs=1", "train.augment_rotate=20", "train.augment_scale=0.1"),
        backprop=backprop,
        progress=False,
    )
    seen = record_batches(trainer, monkeypatch)
    trainer.fit()
    assert trainer.dataset is not None and seen
    images = trainer.dataset.train.images
    x, idx = seen[0]
    assert x.dtype == images.dtype and x.shape == images[idx].shape
    changed = [not torch.equal(x[i], images[j]) for i, j in enumerate(idx.tolist())]
    assert sum(changed) > 0.9 * len(changed)
