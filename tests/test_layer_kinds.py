"""Layer kinds: a new kind is its own definition (here, in this file), a preset naming it and a
test; the configuration, the FF net and the backprop twin take it without a change."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from forwardforward.config import load_preset
from forwardforward.errors import ConfigError
from forwardforward.layers import (
    LAYER_KINDS,
    FFLayer,
    FFLinear,
    FFLocallyConnected2d,
    LayerKind,
    LayerSettings,
    register_layer_kind,
)
from forwardforward.layers.kinds import Shape
from forwardforward.nets.backprop import BackpropNet
from forwardforward.nets.feedforward import FFNet
from forwardforward.train import Trainer


@dataclass
class NarrowOptions:
    """A fully connected layer ``factor`` times narrower than its input."""

    factor: int = 2

    def check(self) -> None:
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, got {self.factor}")


def _narrow(options: NarrowOptions, in_shape: Shape, s: LayerSettings, first: bool) -> FFLayer:
    d = math.prod(in_shape)
    return FFLinear(d, d // options.factor, **s.layer_args())


def _narrow_twin(options: NarrowOptions, in_shape: Shape) -> tuple[nn.Module, Shape]:
    d = math.prod(in_shape)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, d // options.factor)), (d // options.factor,)


NARROW = register_layer_kind(LayerKind("narrow", NarrowOptions, _narrow, _narrow_twin))

PRESET = """\
name = "narrow-test"

[data]
dataset = "synthetic"

[model]
layers = [16]
goodness = "mean_squares"
loss = "symba"
alpha = 4.0
[[model.stack]]
kind = "narrow"
factor = 4

[optim]
lr = 0.01

[train]
epochs = 3
batch_size = 50
threads = 1
"""


def test_a_new_kind_trains_in_a_preset_with_its_twin(tmp_path: Path) -> None:
    path = tmp_path / "narrow.toml"
    path.write_text(PRESET)
    config = load_preset(str(path))
    assert config.model.stack == [{"kind": "narrow", "factor": 4}]
    ff_run = Trainer(config, out_dir=tmp_path / "ff", progress=False)
    assert isinstance(ff_run.net, FFNet)
    layers = [layer for layer in ff_run.net.layers if isinstance(layer, FFLinear)]
    widths = [(layer.in_features, layer.out_features) for layer in layers]
    assert widths == [(784, 196), (196, 16)]  # the stack, then model.layers
    assert ff_run.fit()["test_acc"] > 0.3  # it learns (chance: 0.1)
    twin = Trainer(config, out_dir=tmp_path / "bp", backprop=True, progress=False)
    assert isinstance(twin.net, BackpropNet)
    keys = set(twin.net.state_dict())
    assert {"stack.0.1.weight", "layers.0.weight", "head.weight"} <= keys
    assert twin.fit()["test_acc"] > 0.3


def test_the_stack_is_checked_where_it_is_written(tmp_path: Path) -> None:
    path = tmp_path / "narrow.toml"
    path.write_text(PRESET)
    with pytest.raises(ConfigError, match=r"model.stack\[0\]: unknown layer kind 'wide'"):
        load_preset(str(path), ['model.stack=[{kind = "wide"}]'])
    with pytest.raises(ConfigError, match=r"unknown option 'model.stack\[0\].factr'"):
        load_preset(str(path), ['model.stack=[{kind = "narrow", factr = 2}]'])
    with pytest.raises(ConfigError, match=r"model.stack\[0\]: factor must be >= 1"):
        load_preset(str(path), ['model.stack=[{kind = "narrow", factor = 0}]'])
    with pytest.raises(ConfigError, match=r"model.stack\[0\]: give the layer's kind"):
        load_preset(str(path), ["model.stack=[{factor = 2}]"])
    flat_then_local = '[{kind = "narrow"}, {kind = "local", channels = 2, kernel = 3}]'
    config = load_preset(str(path), [f"model.stack={flat_then_local}"])
    with pytest.raises(ConfigError, match="needs an image input"):
        FFNet(config, (1, 28, 28), 10)


def test_stacked_local_layers_are_model_local(tmp_path: Path) -> None:
    """``[[model.stack]] kind = "local"`` builds what ``model.local`` builds."""
    path = tmp_path / "narrow.toml"
    path.write_text(PRESET)
    by_list = load_preset(str(path), ["model.stack=[]", "model.local=[[4, 5, 2, 1]]"])
    table = '{kind = "local", channels = 4, kernel = 5, stride = 2, padding = 1}'
    by_table = load_preset(str(path), [f"model.stack=[{table}]"])
    torch.manual_seed(0)
    a = FFNet(by_list, (1, 28, 28), 10)
    torch.manual_seed(0)
    b = FFNet(by_table, (1, 28, 28), 10)
    assert isinstance(a.layers[0], FFLocallyConnected2d) and a.layers[0].out_shape == (4, 13, 13)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_the_package_registers_its_kinds_and_refuses_a_clash() -> None:
    assert {"linear", "local", "narrow"} <= set(LAYER_KINDS)
    assert register_layer_kind(NARROW) is NARROW  # the same kind again: harmless
    with pytest.raises(ValueError, match="'narrow' is already registered"):
        register_layer_kind(LayerKind("narrow", NarrowOptions, _narrow, _narrow_twin))


def test_a_file_in_the_layers_package_registers_its_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the package does on import: every module in its folder is imported, so a new
    layer file registers its kind without an edit anywhere else."""
    import forwardforward.layers as package
    from forwardforward.layers import import_kinds

    (tmp_path / "tiny_kind.py").write_text(
        "from dataclasses import dataclass\n"
        "from forwardforward.layers import LayerKind, register_layer_kind\n"
        "@dataclass\nclass Options:\n    width: int = 1\n"
        "register_layer_kind(LayerKind('tiny', Options, print, print))\n"
    )
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])
    assert "tiny_kind" in import_kinds(list(package.__path__), package.__name__)
    assert "tiny" in LAYER_KINDS
