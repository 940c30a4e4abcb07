"""A spy on a trainer's net: the batches its training steps see."""

from __future__ import annotations

import pytest
import torch

from forwardforward.train import Trainer


def record_batches(
    trainer: Trainer, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(images, indices)`` of every batch ``trainer.net.train_step`` is given, in order,
    filled in as the trainer fits."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = trainer.net.train_step

    def spy(
        x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, gen: torch.Generator
    ) -> dict[str, torch.Tensor]:
        seen.append((x.clone(), index.clone()))
        return real(x, y, index, gen)

    monkeypatch.setattr(trainer.net, "train_step", spy)
    return seen
