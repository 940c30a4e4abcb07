"""The conv presets: every CIFAR-10 preset trains end to end on a synthetic archive in the
real format (the real CIFAR-10 is not on these machines), FF net and backprop twin; the
MNIST-family conv presets build their nets and twins on their image shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_vision import _write_cifar

from forwardforward.config import load_preset
from forwardforward.data.vision import load_dataset
from forwardforward.nets.channelwise import ChannelwiseBackpropNet, ChannelwiseNet
from forwardforward.train import Trainer, build_net

CIFAR_PRESETS = ["cwcomp-cifar10", "deeperforward-cifar10", "scff-conv-cifar10"]
DIGIT_PRESETS = [
    "conv-mnist-quick", "cwcomp-mnist", "cwcomp-mnist-sf", "cwcomp-fashion", "deeperforward-mnist",
    "deeperforward-fashion",
]  # fmt: skip


@pytest.mark.parametrize("name", CIFAR_PRESETS)
@pytest.mark.parametrize("backprop", [False, True])
def test_cifar_presets_train_on_a_synthetic_archive(
    name: str, backprop: bool, tmp_path: Path
) -> None:
    _write_cifar(tmp_path)
    config = load_preset(
        name, ["train.epochs=1", "train.batch_size=10", "train.threads=1", "baseline.epochs=1"]
    )
    config.readout.probe_epochs = 1
    ds = load_dataset(
        "cifar10", data_dir=tmp_path, check_sizes=False, val_fraction=config.data.val_fraction
    )
    run = Trainer(config, out_dir=tmp_path / "run", dataset=ds, backprop=backprop, progress=False)
    assert run.dataset is not None and run.dataset.image_shape == (3, 32, 32)
    results = run.fit()
    assert 0.0 <= results["test_acc"] <= 1.0 and run.step >= 1
    assert (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.parametrize("name", DIGIT_PRESETS)
def test_digit_conv_presets_build_their_nets_and_twins(name: str) -> None:
    config = load_preset(name)
    net = build_net(config, (1, 28, 28), 10)
    twin = build_net(config, (1, 28, 28), 10, backprop=True)
    assert isinstance(net, ChannelwiseNet) and isinstance(twin, ChannelwiseBackpropNet)
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    assert net.eval().predict(x).shape == (2,) and twin.eval()(x).shape == (2, 10)
