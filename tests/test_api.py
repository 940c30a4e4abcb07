"""The README's Python API example, on the synthetic dataset."""

from __future__ import annotations

import torch

import forwardforward as ff


def test_readme_api_example_runs_and_predicts() -> None:
    config = ff.load_preset(
        "mnist-quick",
        ["data.dataset=synthetic", "model.layers=[64]", "train.epochs=2", "train.threads=1"],
    )
    trainer = ff.Trainer(config, out_dir=None, progress=False)
    results = trainer.fit()
    assert 0.0 <= results["test_acc"] <= 1.0
    assert trainer.dataset is not None
    labels = trainer.net.predict(trainer.dataset.test.images[:8])
    assert labels.shape == (8,) and labels.dtype == torch.int64
    assert results["test_acc"] > 0.5  # synthetic classes are easy: far above chance (0.1)
