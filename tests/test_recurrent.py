"""The recurrent FF net."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from _tolerance import assert_close_reduced

from forwardforward.config import RunConfig, load_preset
from forwardforward.layers import normalize
from forwardforward.nets.recurrent import RecurrentFFNet, RecurrentLayer

BASE = [
    "model.kind=recurrent",
    "model.layers=[12, 8]",
    "negatives.kind=random_wrong",
    "negatives.scores=goodness",
    "readout.kind=goodness",
    "recurrent.steps=6",
    "recurrent.window=[2, 5]",
]


def _config(*extra: str) -> RunConfig:
    return load_preset("mnist-quick", [*BASE, *extra])


def _net(*extra: str, shape: tuple[int, ...] = (1, 4, 4)) -> RecurrentFFNet:
    torch.manual_seed(0)
    return RecurrentFFNet(_config(*extra), shape, 3)


def _layer(module: torch.nn.Module) -> RecurrentLayer:
    """``module`` as the :class:`RecurrentLayer` it is (``net.layers`` holds plain modules)."""
    assert isinstance(module, RecurrentLayer)
    return module


def _score_terms(net: RecurrentFFNet) -> int:
    """The chain of sums (see ``_tolerance``) behind a label score: each step until the window
    ends updates every layer from up to three inputs (a norm's sum of squares, the products
    with the bias, their additions and the damped update, 3 roundings), then a goodness (``H``
    squares, a root squared again, the mean's division) and the sum over the window's steps
    and the readout layers."""
    start, stop = net.config.recurrent.window
    per_step = 0
    for module in net.layers:
        layer = _layer(module)
        ins = [layer.bottom_up.in_features, layer.top_down.in_features]
        ins += [layer.width] if layer.lateral is not None else []
        per_step = max(per_step, max(ins) + sum(ins) + 1 + (len(ins) - 1) + 3)
    goodness = max(net.widths) + 2 + (net.config.model.goodness == "mean_squares")
    return stop * per_step + goodness + (stop - start) * len(net.readout_layers)


def test_damping_update_matches_its_formula() -> None:
    net = _net("recurrent.damping=0.7", "recurrent.lateral=true", "recurrent.negate_top_down=true")
    x = torch.rand(5, 16)
    label = torch.eye(3)[torch.tensor([0, 1, 2, 0, 1])]
    prev = [torch.rand(5, 12), torch.rand(5, 8)]
    new = net.step(x, label, prev)
    n: Callable[[torch.Tensor], torch.Tensor] = lambda t: normalize(t, "rms")  # noqa: E731
    l0, l1 = net.layers
    assert isinstance(l0, RecurrentLayer) and isinstance(l1, RecurrentLayer)
    assert l0.lateral is not None and l1.lateral is not None
    z0 = l0.bottom_up(n(x)) - l0.top_down(n(prev[1])) + l0.lateral(n(prev[0]))
    z1 = l1.bottom_up(n(prev[0])) - l1.top_down(label) + l1.lateral(n(prev[1]))
    act = net.act
    torch.testing.assert_close(new[0], 0.3 * prev[0] + 0.7 * act(z0))
    torch.testing.assert_close(new[1], 0.3 * prev[1] + 0.7 * act(z1))


def test_activities_do_not_depend_on_a_hidden_label() -> None:
    net = _net("recurrent.label_hidden_steps=3")
    x = torch.rand(4, 1, 4, 4)
    g0 = net.settle(x, torch.zeros(4, dtype=torch.long))
    g1 = net.settle(x, torch.full((4,), 2, dtype=torch.long))
    assert torch.equal(g0[:3], g1[:3])  # label hidden: identical
    assert not torch.equal(g0[3:], g1[3:])  # shown: the label matters


@pytest.mark.parametrize("hidden", [0, 1, 3, 5])
def test_batched_prediction_equals_the_per_label_loop(hidden: int) -> None:
    """Also when the label is hidden into or past the window (steps 2..4 of 6)."""
    net = _net("recurrent.lateral=true", f"recurrent.label_hidden_steps={hidden}")
    x = torch.rand(7, 1, 4, 4)
    # one (B C)-row batch against a batch per label, and another order of the goodness sums
    assert_close_reduced(net.label_scores(x), net.label_scores_naive(x), _score_terms(net))


def test_state_dict_round_trips_every_weight() -> None:
    net = _net("recurrent.lateral=true")
    keys = set(net.state_dict())
    for i in range(2):
        for part in ("bottom_up.weight", "bottom_up.bias", "top_down.weight", "lateral.weight"):
            assert f"layers.{i}.{part}" in keys
    other = _net("recurrent.lateral=true")
    for p in other.parameters():
        torch.nn.init.normal_(p)
    other.load_state_dict(net.state_dict())
    for k, v in net.state_dict().items():
        assert torch.equal(v, other.state_dict()[k]), k
    assert len(list(net.parameters())) == 2 * 4


def test_only_label_steps_learn_and_no_gradient_crosses_steps() -> None:
    net = _net("recurrent.label_hidden_steps=2", "recurrent.update=every_step")
    net.configure(10)
    x, y = torch.rand(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    before = [p.detach().clone() for p in net.parameters()]
    net.train_step(x, y, torch.arange(6), torch.Generator().manual_seed(0))
    assert int(net.schedulers[0].last_epoch) == 6 - 2  # one optimiser step per shown step
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    # a step's states carry no graph into the next step
    states = net.step(torch.rand(2, 16), torch.eye(3)[:2], net.initial_states(2, x.device))
    nxt = net.step(torch.rand(2, 16), torch.eye(3)[:2], states)
    nxt[1].sum().backward()
    first = _layer(net.layers[0])
    assert first.bottom_up.weight.grad is None  # layer 0 only reaches layer 1 detached


def test_recurrent_net_learns_on_synthetic_data() -> None:
    from forwardforward.train import Trainer

    config = _config(
        "data.dataset=synthetic", "model.layers=[64, 64]", "train.epochs=2", "train.threads=1"
    )
    assert Trainer(config, progress=False).fit()["test_acc"] > 0.5


PROBE = ["negatives.kind=hard", "negatives.scores=probe", "readout.layers=[0, 1]"]


def _boom(*args: object, **kwargs: object) -> torch.Tensor:
    raise AssertionError("classifier-sampled negatives must not try every label")


def test_classifier_negatives_come_from_the_hidden_label_states() -> None:
    """The classifier sees the states averaged over the hidden-label steps: they hold no label,
    and training reuses them instead of running the image again."""
    net = _net(*PROBE, "recurrent.label_hidden_steps=2")
    net.configure(10)
    assert net.probe is not None and net.probe.weight.shape == (3, 12 + 8)
    x, y = torch.rand(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    expected = net.probe_features(x)
    # by hand: the normalised states of steps 0 and 1 under the uniform label, averaged
    fr = net.frames(x)
    s0 = net.step(net.frame(fr, 0), torch.full((6, 3), 1 / 3), net.initial_states(6, x.device))
    s1 = net.step(net.frame(fr, 1), torch.full((6, 3), 1 / 3), s0)
    by_hand = [
        (normalize(a[i], "rms") + normalize(b[i], "rms")) / 2 for a, b in [(s0, s1)] for i in (0, 1)
    ]
    torch.testing.assert_close(expected, torch.cat(by_hand, 1))
    seen: list[torch.Tensor] = []
    net.probe.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    net.label_scores = _boom  # type: ignore[method-assign]
    metrics = net.train_step(x, y, torch.arange(6), torch.Generator().manual_seed(0))
    assert seen and all(torch.allclose(s, expected, atol=1e-6) for s in seen)
    assert {"probe", "probe_acc"} <= set(metrics)
    assert int(net.schedulers[-1].last_epoch) == 1  # the classifier steps once per batch
    assert int(net.schedulers[0].last_epoch) == 6 - 2


def test_classifier_without_hidden_steps_sees_a_uniform_label_pass() -> None:
    net = _net(*PROBE, "recurrent.label_hidden_steps=0")
    assert net.probe_steps == 5  # the end of the prediction window
    x = torch.rand(4, 1, 4, 4)
    # the features do not depend on anything but the image
    torch.testing.assert_close(net.probe_features(x), net.probe_features(x.clone()))
    net.configure(10)
    net.label_scores = _boom  # type: ignore[method-assign]
    net.train_step(x, torch.tensor([0, 1, 2, 0]), torch.arange(4), torch.Generator())


def test_probe_readout_predicts_from_the_classifier_and_round_trips() -> None:
    net = _net("readout.kind=probe", "recurrent.label_hidden_steps=1")
    assert net.probe is not None
    with torch.no_grad():
        net.probe.weight.normal_()
    net.label_scores = _boom  # type: ignore[method-assign]
    x = torch.rand(5, 1, 4, 4)
    torch.testing.assert_close(net.predict(x), net.probe(net.probe_features(x)).argmax(1))
    other = _net("readout.kind=probe", "recurrent.label_hidden_steps=1")
    other.load_state_dict(net.state_dict())
    assert torch.equal(other.probe.weight, net.probe.weight)  # type: ignore[union-attr]


def test_recurrent_net_with_classifier_negatives_learns_on_synthetic_data() -> None:
    from forwardforward.train import Trainer

    config = _config(
        *PROBE,
        "recurrent.label_hidden_steps=2",
        "data.dataset=synthetic",
        "model.layers=[64, 64]",
        "train.epochs=2",
        "train.threads=1",
    )
    assert Trainer(config, progress=False).fit()["test_acc"] > 0.5


def test_bf16_precision_runs_the_products_in_bf16_and_keeps_fp32_states() -> None:
    net = _net("train.precision=bf16")
    assert net.autocast_dtype == torch.bfloat16  # from the configuration: evaluation too
    x = torch.rand(5, 16)
    label = torch.eye(3)[torch.tensor([0, 1, 2, 0, 1])]
    prev = [torch.rand(5, 12), torch.rand(5, 8)]
    net.autocast_dtype = None
    exact = net.step(x, label, prev)
    net.configure(10)  # building the optimisers leaves the precision alone
    assert net.autocast_dtype is None
    net.autocast_dtype = torch.bfloat16
    low = net.step(x, label, prev)
    assert all(s.dtype == torch.float32 for s in low)
    assert any(not torch.equal(a, b) for a, b in zip(exact, low, strict=True))
    for a, b in zip(exact, low, strict=True):
        torch.testing.assert_close(b, a, atol=0.05, rtol=0.02)


def test_label_gain_scales_the_weights_from_the_label_only() -> None:
    plain = _net()
    torch.manual_seed(0)
    net = RecurrentFFNet(_config("model.layers=[12, 400]", "recurrent.label_gain=3"), (1, 4, 4), 3)
    top = _layer(net.layers[-1]).top_down.weight.detach()
    expected = 3 * (2 / 3) ** 0.5
    assert abs(float(top.std()) - expected) < 0.1 * expected
    # the other top-down weights keep U(-0.05, 0.05)
    assert float(_layer(net.layers[0]).top_down.weight.detach().abs().max()) <= 0.05
    assert float(_layer(plain.layers[-1]).top_down.weight.detach().abs().max()) <= 0.05


def test_negative_label_gain_is_rejected() -> None:
    from forwardforward.errors import ConfigError

    with pytest.raises(ConfigError, match="label_gain"):
        _config("recurrent.label_gain=-1")
