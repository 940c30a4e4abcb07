"""The convolutional FF layer (`[[model.stack]] kind = "conv"`): shapes, its relation to the
linear layer, detached inputs, and a preset that trains an FF conv net and its twin."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _tolerance import assert_close_reduced, linear_scale

from forwardforward.config import load_preset
from forwardforward.errors import ConfigError
from forwardforward.layers import FFConv2d, FFLinear, normalize
from forwardforward.nets.backprop import BackpropNet
from forwardforward.nets.feedforward import FFNet
from forwardforward.train import Trainer


def test_a_kernel_over_the_whole_image_is_the_linear_layer_on_the_same_weights() -> None:
    torch.manual_seed(0)
    conv = FFConv2d((2, 6, 6), 5, kernel_size=6, norm="rms", activation="relu")
    linear = FFLinear(72, 5, norm="rms", activation="relu")
    with torch.no_grad():
        linear.weight.copy_(conv.weight.reshape(5, 72))
        assert conv.bias is not None and linear.bias is not None
        linear.bias.copy_(conv.bias)
    x = torch.rand(7, 72)
    assert conv.out_shape == (5, 1, 1)
    # the rms norm (72 squares, a root, a division) and a dot product of 72 terms plus the bias
    scale = linear_scale(normalize(x, "rms"), linear.weight, linear.bias)
    assert_close_reduced(conv(x), linear(x), 72 + 3 + 73, scale=scale)


def test_shapes_pooling_groups_and_a_detached_input() -> None:
    layer = FFConv2d((4, 12, 12), 8, kernel_size=3, stride=1, padding=1, groups=2, pool=2)
    assert layer.weight.shape == (8, 2, 3, 3)
    assert layer.out_shape == (8, 6, 6) and layer.out_features == 8 * 36
    x = torch.rand(3, 4 * 144, requires_grad=True)
    out = layer(x)
    assert out.shape == (3, 8 * 36)
    z = layer.preactivation(x)
    assert z.shape == (3, 8, 12, 12)
    expected = F.max_pool2d(F.relu(z), 2).flatten(1)
    assert torch.equal(out, expected)  # the same kernels in the same order
    out.square().sum().backward()
    assert x.grad is None  # no gradient crosses the layer
    assert layer.weight.grad is not None
    with pytest.raises(ValueError, match="groups=3 must divide"):
        FFConv2d((4, 12, 12), 8, kernel_size=3, groups=3)
    with pytest.raises(ValueError, match="does not fit"):
        FFConv2d((1, 4, 4), 8, kernel_size=5)


PRESET = """\
name = "conv-test"

[data]
dataset = "synthetic"

[model]
layers = []
norm = "rms"
goodness = "mean_squares"
loss = "symba"
alpha = 4.0
[[model.stack]]
kind = "conv"
channels = 8
kernel = 5
stride = 2
[[model.stack]]
kind = "conv"
channels = 8
kernel = 3
padding = 1
pool = 2

[optim]
lr = 0.01

[train]
epochs = 3
batch_size = 50
threads = 1
"""


def test_a_conv_preset_trains_the_ff_net_and_its_twin(tmp_path: Path) -> None:
    path = tmp_path / "conv.toml"
    path.write_text(PRESET)
    config = load_preset(str(path))
    ff_run = Trainer(config, out_dir=tmp_path / "ff", progress=False)
    assert isinstance(ff_run.net, FFNet)
    shapes = [layer.out_shape for layer in ff_run.net.layers if isinstance(layer, FFConv2d)]
    assert shapes == [(8, 12, 12), (8, 6, 6)]
    assert ff_run.fit()["test_acc"] > 0.3  # chance: 0.1
    from forwardforward.plots import fields_figure

    figure = fields_figure(ff_run.net.layers[0], (1, 28, 28))  # its 8 filters
    assert figure.ndim == 2 and str(figure.dtype) == "uint8" and len(set(figure.flat)) > 2
    twin = Trainer(config, out_dir=tmp_path / "bp", backprop=True, progress=False)
    assert isinstance(twin.net, BackpropNet)
    assert {"stack.0.weight", "stack.1.0.weight", "head.weight"} <= set(twin.net.state_dict())
    assert twin.fit()["test_acc"] > 0.3


def test_bad_conv_options_name_the_table(tmp_path: Path) -> None:
    path = tmp_path / "conv.toml"
    path.write_text(PRESET)
    with pytest.raises(ConfigError, match=r"model.stack\[0\]: channels, kernel, stride"):
        load_preset(str(path), ['model.stack=[{kind = "conv", channels = 0, kernel = 3}]'])
    too_big = load_preset(str(path), ['model.stack=[{kind = "conv", channels = 4, kernel = 40}]'])
    with pytest.raises(ConfigError, match="does not fit a 28x28 input"):
        FFNet(too_big, (1, 28, 28), 10)


def test_label_planes_give_a_conv_net_the_label_at_every_position() -> None:
    from forwardforward.labels import LabelPlanes

    enc = LabelPlanes(3, 2 * 16, plane=16)  # a 2-channel 4x4 image, 3 classes
    x = torch.rand(5, 32)
    y = torch.tensor([0, 1, 2, 1, 0])
    out = enc.embed_labels(x, y).view(5, 5, 4, 4)
    assert torch.equal(out[:, :2].flatten(1), x)  # the image's own channels, untouched
    for b in range(5):
        for c in range(3):
            assert bool((out[b, 2 + c] == float(c == y[b])).all())
    assert torch.equal(enc.base(x), F.pad(x, (0, 48)))  # the image part: planes cleared
    with pytest.raises(ValueError, match="do not tile"):
        LabelPlanes(3, 30, plane=16)
    config = load_preset("conv-ff-mnist", ["train.epochs=1"])
    net = FFNet(config, (1, 28, 28), 10)
    first = net.layers[0]
    assert isinstance(first, FFConv2d) and first.in_shape == (11, 28, 28)
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    assert net.eval().label_scores(images).shape == (4, 10)  # every label tried
