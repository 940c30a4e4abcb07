"""``benchmarks/channelwise_readouts.py``: every readout of a channel-wise run on the same
weights; the one the run predicts with agrees with its accuracy."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from forwardforward import accuracy, fit
from forwardforward.config import load_preset
from forwardforward.data.synthetic import synthetic_dataset
from forwardforward.nets.channelwise import ChannelwiseNet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from channelwise_readouts import readouts

STACK = (
    'model.stack=[{kind = "conv", channels = 20, kernel = 3, padding = 1, pool = 2, '
    'out_norm = "batch"}, {kind = "conv", channels = 20, kernel = 3, padding = 1, pool = 2, '
    'out_norm = "batch"}]'
)


@pytest.mark.parametrize("probe", [False, True])
def test_the_readouts_include_the_one_the_run_predicts_with(probe: bool) -> None:
    over = ["data.dataset=synthetic", STACK, "channelwise.vote=all", "train.threads=1"]
    over += ["readout.kind=probe"] if probe else []
    config = load_preset("conv-mnist-quick", over)
    ds = synthetic_dataset(n_train=200, n_test=100)
    torch.manual_seed(0)
    net = ChannelwiseNet(config, (1, 28, 28), 10)
    fit(net, ds, epochs=1, batch_size=50, progress=False)
    acc = readouts(net, ds.test.images, ds.test.labels)
    assert set(acc) == {"layer 0", "layer 1", "voters", *(["probe"] if probe else [])}
    assert acc["probe" if probe else "voters"] == accuracy(net, ds.test)
    # the last layer alone is what a net voting with the last layer predicts
    last = ChannelwiseNet(
        load_preset("conv-mnist-quick", [*over, "channelwise.vote=last"]), (1, 28, 28), 10
    )
    last.load_state_dict(net.state_dict())
    last.voters.copy_(torch.tensor([1, 1]))  # the state dict brought the voters of "all"
    last.probe = None
    assert acc["layer 1"] == accuracy(last, ds.test)
