"""FF layers (normalisation, activations, peer normalisation, gradient isolation) and the label
encoders."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import pytest
import torch
from _tolerance import assert_close_reduced, ff_layer_terms, linear_scale, shared_first_terms

from forwardforward.config import RunConfig
from forwardforward.errors import ConfigError
from forwardforward.labels import LABEL_ENCODERS, Concatenate, OverwritePixels, TopRow
from forwardforward.layers import (
    FFLinear,
    l2_scale,
    no_scale,
    normalize,
    relu_straight_through,
    rms_scale,
)
from forwardforward.nets.feedforward import FFNet

# ---------------------------------------------------------------------------------------------
# Normalisation


def test_normalize_rms_l2_none_by_hand() -> None:
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, -1.0]])
    r = math.sqrt(12.5)  # sqrt(mean(9, 16))
    rms = normalize(x, "rms")
    assert rms[0].tolist() == pytest.approx([3 / r, 4 / r], rel=1e-6)
    assert rms[2].tolist() == pytest.approx([1.0, -1.0], rel=1e-6)
    l2 = normalize(x, "l2")
    assert l2[0].tolist() == pytest.approx([0.6, 0.8], rel=1e-6)
    assert l2[2].tolist() == pytest.approx([1 / math.sqrt(2), -1 / math.sqrt(2)], rel=1e-6)
    assert torch.equal(normalize(x, "none"), x)
    # an all-zero row stays zero (the epsilon keeps it finite)
    for norm in ("rms", "l2"):
        out = normalize(x, norm)
        assert torch.isfinite(out).all()
        assert out[1].tolist() == [0.0, 0.0]


def test_std_norm_standardises_each_sample_and_has_no_scale_form() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 6.0], [5.0, 5.0, 5.0, 9.0]])
    out = normalize(x, "std")
    assert out.mean(1).abs().max() < 1e-6
    assert out.square().mean(1).tolist() == pytest.approx([1.0, 1.0], rel=1e-5)
    centred = x[0] - 3.0
    assert out[0].tolist() == pytest.approx((centred / centred.square().mean().sqrt()).tolist())
    with pytest.raises(ValueError, match="std"):
        FFLinear(4, 3, norm="std").scale(torch.ones(1))


def test_fflinear_halves_applies_one_weight_to_both_normalised_halves() -> None:
    torch.manual_seed(0)
    layer = FFLinear(8, 3, norm="rms", halves=True)
    assert layer.weight.shape == (3, 4)
    a, b = torch.rand(5, 4), torch.rand(5, 4)
    n = normalize(torch.cat([a, b], 1), "rms")  # normalised together, not one by one
    assert layer.bias is not None
    both = n[:, :4] + n[:, 4:]
    expected = torch.relu(both @ layer.weight.T + layer.bias)
    # the layer's F.linear against a product and an addition: 4 terms and the bias
    scale = linear_scale(both, layer.weight, layer.bias)
    assert_close_reduced(layer(torch.cat([a, b], 1)), expected, 4 + 1, scale=scale)
    with pytest.raises(ValueError, match="even"):
        FFLinear(7, 3, halves=True)


def test_scale_functions_from_sum_of_squares() -> None:
    s = torch.tensor([25.0])
    assert rms_scale(s, 2).item() == pytest.approx(1 / math.sqrt(12.5), rel=1e-6)
    assert l2_scale(s, 2).item() == pytest.approx(0.2, rel=1e-6)
    assert no_scale(s, 2).item() == 1.0


def test_normalize_unknown_norm_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="rms"):
        normalize(torch.ones(1, 2), "batch")


# ---------------------------------------------------------------------------------------------
# FFLinear


def _layer(norm: str, activation: str = "relu") -> FFLinear:
    layer = FFLinear(2, 2, norm=norm, activation=activation)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 0.5]]))
        assert layer.bias is not None
        layer.bias.copy_(torch.tensor([0.1, -0.2]))
    return layer


@pytest.mark.parametrize(
    ("norm", "r"), [("rms", math.sqrt(12.5)), ("l2", 5.0), ("none", 1.0)], ids=str
)
def test_fflinear_forward_by_hand(norm: str, r: float) -> None:
    x = torch.tensor([[3.0, 4.0]])
    out = _layer(norm)(x)
    # unit 0: (1*3 + 2*4)/r + 0.1; unit 1: (-1*3 + 0.5*4)/r - 0.2 < 0 -> relu gives 0
    assert out.shape == (1, 2)
    assert out[0, 0].item() == pytest.approx(11 / r + 0.1, rel=1e-6)
    assert out[0, 1].item() == 0.0


def test_fflinear_without_bias_and_other_activation() -> None:
    layer = FFLinear(2, 1, norm="l2", activation="leaky_relu", bias=False)
    assert layer.bias is None
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[-1.0, 0.5]]))
    out = layer(torch.tensor([[3.0, 4.0]]))
    assert out.item() == pytest.approx(0.01 * (-0.6 + 0.4), rel=1e-5)


def test_fflinear_detaches_its_input() -> None:
    x = torch.tensor([[3.0, 4.0]], requires_grad=True)
    layer = _layer("rms")
    layer(x).sum().backward()
    assert x.grad is None
    assert layer.weight.grad is not None


def test_fflinear_rejects_unknown_pieces() -> None:
    with pytest.raises(ConfigError, match="norm"):
        FFLinear(2, 2, norm="batch")
    with pytest.raises(ConfigError, match="activation"):
        FFLinear(2, 2, activation="tanhh")
    with pytest.raises(ValueError, match="init"):
        FFLinear(2, 2, init="xavier")


@pytest.mark.parametrize("init", ["normal_fan_in", "normal_fan_out"])
def test_normal_inits_zero_the_bias_and_scale_by_fan(init: str) -> None:
    torch.manual_seed(0)
    layer = FFLinear(400, 100, init=init)
    assert layer.bias is not None and torch.equal(layer.bias, torch.zeros(100))
    fan = 400 if init == "normal_fan_in" else 100
    assert layer.weight.std().item() == pytest.approx(1 / math.sqrt(fan), rel=0.05)


# ---------------------------------------------------------------------------------------------
# The straight-through ReLU


def test_relu_st_forward_is_relu_backward_is_identity() -> None:
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0], requires_grad=True)
    y = relu_straight_through(x)
    assert y.tolist() == [0.0, 0.0, 0.0, 0.5, 3.0]
    (y * torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])).sum().backward()
    assert x.grad is not None
    assert x.grad.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]  # negative inputs get gradient too


def test_plain_relu_blocks_negative_gradient_for_contrast() -> None:
    x = torch.tensor([-2.0, 3.0], requires_grad=True)
    torch.relu(x).sum().backward()
    assert x.grad is not None and x.grad.tolist() == [0.0, 1.0]


# ---------------------------------------------------------------------------------------------
# Peer normalisation


def test_peer_loss_value_and_running_mean_update() -> None:
    layer = FFLinear(3, 2, peer_weight=0.5, peer_momentum=0.9)
    assert layer.running_mean.tolist() == [0.5, 0.5]
    h_pos = torch.tensor([[1.0, 0.0], [3.0, 2.0]])  # mean activity per unit: (2, 1)
    # running = 0.9 * 0.5 + 0.1 * (2, 1) = (0.65, 0.55); its mean 0.6
    # loss = 0.5 * mean((0.6 - 0.65)^2, (0.6 - 0.55)^2) = 0.5 * 0.0025
    layer.train()
    loss = layer.peer_loss(h_pos)
    assert loss.item() == pytest.approx(0.00125, rel=1e-5)
    assert layer.running_mean.tolist() == pytest.approx([0.65, 0.55], rel=1e-6)
    # a second call starts from the updated running mean: 0.9 * (0.65, 0.55) + 0.1 * (2, 1)
    layer.peer_loss(h_pos)
    assert layer.running_mean.tolist() == pytest.approx([0.785, 0.595], rel=1e-6)


def test_peer_loss_leaves_running_mean_alone_in_eval_mode() -> None:
    layer = FFLinear(3, 2, peer_weight=0.5, peer_momentum=0.9)
    layer.eval()
    loss = layer.peer_loss(torch.tensor([[1.0, 0.0], [3.0, 2.0]]))
    assert loss.item() == pytest.approx(0.00125, rel=1e-5)
    assert layer.running_mean.tolist() == [0.5, 0.5]


def test_peer_loss_gradient_reaches_the_activities() -> None:
    layer = FFLinear(3, 2, peer_weight=1.0, peer_momentum=0.0)
    h = torch.tensor([[1.0, 0.0], [3.0, 2.0]], requires_grad=True)
    layer.peer_loss(h).backward()
    assert h.grad is not None and h.grad.abs().sum() > 0
    assert not layer.running_mean.requires_grad


def test_peer_pull_gradient_is_hintons_constant_pull() -> None:
    layer = FFLinear(3, 2, peer_weight=0.5, peer_momentum=0.9, peer_form="pull")
    h = torch.tensor([[1.0, 0.0], [3.0, 2.0]], requires_grad=True)
    layer.train()
    layer.peer_loss(h).backward()
    # running = (0.65, 0.55), mean 0.6: every positive activity of unit c gets the gradient
    # weight * (r_c - mean r) / B = 0.5 * (+0.05, -0.05) / 2, whatever the activity
    assert h.grad is not None
    assert torch.allclose(h.grad, torch.tensor([[0.0125, -0.0125], [0.0125, -0.0125]]))
    assert layer.running_mean.tolist() == pytest.approx([0.65, 0.55], rel=1e-6)
    with pytest.raises(ValueError, match="unknown peer_form 'strong'; choose one of: loss, pull"):
        FFLinear(3, 2, peer_form="strong")


def test_weight_decay_can_spare_the_biases() -> None:
    from forwardforward.nets.base import make_optimizer

    for decay_bias, bias_after in ((True, 0.9), (False, 1.0)):
        layer = FFLinear(3, 2)
        with torch.no_grad():
            layer.weight.fill_(1.0)
            layer.bias.fill_(1.0)  # type: ignore[union-attr]
        opt = make_optimizer(
            list(layer.parameters()), "sgd", lr=0.1, momentum=0.0, weight_decay=1.0,
            decay_bias=decay_bias,
        )  # fmt: skip
        for p in layer.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
        assert layer.weight.detach().unique().tolist() == pytest.approx([0.9])
        assert layer.bias.detach().unique().tolist() == pytest.approx([bias_after])  # type: ignore[union-attr]


def test_reset_parameters_resets_running_mean() -> None:
    layer = FFLinear(3, 2, peer_weight=0.5)
    layer.peer_loss(torch.ones(2, 2) * 7)
    layer.reset_parameters()
    assert layer.running_mean.tolist() == [0.5, 0.5]


# ---------------------------------------------------------------------------------------------
# Gradient isolation in a whole network

IN_SHAPE = (1, 4, 4)
C = 3


def _net(tiny_config: Callable[..., RunConfig], *overrides: str) -> FFNet:
    torch.manual_seed(0)
    config = tiny_config("model.layers=[8, 6, 5]", *overrides)
    net = FFNet(config, IN_SHAPE, C)
    net.configure(steps_per_epoch=10)
    return net


def _linear(layer: torch.nn.Module) -> FFLinear:
    """``layer`` as the :class:`FFLinear` it is (``net.layers`` holds plain modules)."""
    assert isinstance(layer, FFLinear)
    return layer


def _batch(n: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *IN_SHAPE, generator=g)
    y = torch.randint(0, C, (n,), generator=g)
    return x, y


def test_no_gradient_reaches_an_earlier_layer(tiny_config: Callable[..., RunConfig]) -> None:
    net = _net(tiny_config)
    x, y = _batch()
    xf = net.flat(x).clone().requires_grad_()
    a = net.encoder.embed_labels(xf, y)
    h0 = net.layers[0](a)
    h1 = net.layers[1](h0)
    half = len(y) // 2
    loss1 = net.layer_loss(1, h1, half)
    loss1.backward()
    second = _linear(net.layers[1])
    assert second.weight.grad is not None
    assert second.weight.grad.abs().sum() > 0
    assert net.layers[0].weight.grad is None
    assert net.layers[0].bias.grad is None
    assert xf.grad is None


def test_train_step_changes_every_layer(tiny_config: Callable[..., RunConfig]) -> None:
    net = _net(tiny_config)
    before = copy.deepcopy(net.state_dict())
    x, y = _batch()
    gen = torch.Generator().manual_seed(1)
    metrics = net.train_step(x, y, torch.arange(len(y)), gen)
    assert set(metrics) >= {"loss0", "loss1", "loss2", "probe"}
    after = net.state_dict()
    for i in range(3):
        for p in ("weight", "bias"):
            key = f"layers.{i}.{p}"
            assert not torch.equal(before[key], after[key]), f"{key} did not change"
    assert not torch.equal(before["probe.weight"], after["probe.weight"])


def test_each_layer_gets_the_gradient_of_its_own_loss_only(
    tiny_config: Callable[..., RunConfig],
) -> None:
    """The gradient train_step applies to layer k equals the gradient of layer k's loss alone,
    computed on the detached output of layer k-1."""
    net = _net(tiny_config)
    ref = copy.deepcopy(net)  # same weights, running means and optimiser-free forward
    x, y = _batch(n=10, seed=5)
    gen = torch.Generator().manual_seed(7)
    ref_gen = torch.Generator().manual_seed(7)

    grads: dict[int, torch.Tensor] = {}
    handles = [
        _linear(layer).weight.register_hook(lambda g, i=i: grads.__setitem__(i, g.detach().clone()))
        for i, layer in enumerate(net.layers)
    ]
    net.train_step(x, y, torch.arange(len(y)), gen)
    for h in handles:
        h.remove()
    assert set(grads) == {0, 1, 2}

    # the reference: the same negatives (same generator state), one layer's loss at a time
    xf = ref.flat(x)
    idx, q = ref.sampler(y, C, ref_gen, None)
    b = len(y)
    a = torch.cat([ref.encoder.embed_labels(xf, y), ref.encoder.embed(xf[idx], q)]).detach()
    rows = len(a)  # R: the positives, then the negatives
    # train_step's first layer shares its product across labels (forward_shared) and the
    # reference's does not: they round differently, and so does every layer after. Layer k's
    # gradient ends a chain of sums: the forwards of layers 0..k, its goodness (H_k units),
    # the loss's mean over the R rows and the weight gradient's sum over them (plus the shared
    # form's C label codes at layer 0); the peer term's means (P rows, H_k units) are shorter.
    forward = 0
    for k, layer in enumerate(ref.layers):
        lin = _linear(layer)
        forward += shared_first_terms(lin, C) if k == 0 else ff_layer_terms(lin)
        h = layer(a)
        loss_k = ref.layer_loss(k, h, b)
        (g_k,) = torch.autograd.grad(loss_k, lin.weight)
        n = forward + lin.out_features + 2 * rows + (C if k == 0 else 0)
        assert_close_reduced(grads[k], g_k, n, msg=f"layer {k}")
        a = h.detach()


# ---------------------------------------------------------------------------------------------
# Label encoders

X = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5, 0.9, 0.7, 0.8]])  # (1, 8); its max 0.9 is at index 5


def test_overwrite_one_and_max() -> None:
    enc = OverwritePixels(3, 8, "one")
    out = enc.embed_labels(X, torch.tensor([1]))
    assert out.tolist()[0] == pytest.approx([0, 1, 0, 0.4, 0.5, 0.9, 0.7, 0.8])
    enc_max = OverwritePixels(3, 8, "max")
    out = enc_max.embed_labels(X, torch.tensor([2]))
    assert out.tolist()[0] == pytest.approx([0, 0, 0.9, 0.4, 0.5, 0.9, 0.7, 0.8])
    assert enc.out_features == 8
    assert enc.base(X).tolist()[0] == pytest.approx([0, 0, 0, 0.4, 0.5, 0.9, 0.7, 0.8])


def test_max_value_is_per_image() -> None:
    x = torch.tensor([[0.0, 0.0, 0.0, 0.2], [0.0, 0.0, 0.0, 0.6]])
    enc = OverwritePixels(2, 4, "max")
    out = enc.embed_labels(x, torch.tensor([0, 1]))
    torch.testing.assert_close(out, torch.tensor([[0.2, 0, 0, 0.2], [0, 0.6, 0, 0.6]]))


def test_top_row() -> None:
    # images (1, 3, 7): the top row is pixels 0..6; 3 classes -> segments of 2 pixels
    x = torch.arange(1, 22, dtype=torch.float32)[None] / 100  # (1, 21), max 0.21
    enc = TopRow(3, 21, "one", width=7)
    assert enc.out_features == 21
    out = enc.embed_labels(x, torch.tensor([1]))[0]
    assert out[:7].tolist() == [0, 0, 1, 1, 0, 0, 0]  # class 1 lights pixels 2 and 3
    assert torch.equal(out[7:], x[0, 7:])  # the rest of the image is untouched
    out_max = TopRow(3, 21, "max", width=7).embed_labels(x, torch.tensor([2]))[0]
    assert out_max[:7].tolist() == pytest.approx([0, 0, 0, 0, 0.21, 0.21, 0])
    assert torch.equal(enc.base(x)[0, :7], torch.zeros(7))


def test_top_row_needs_a_wide_enough_row() -> None:
    with pytest.raises(ValueError, match="width"):
        TopRow(10, 64, width=8)


def test_concat() -> None:
    enc = Concatenate(3, 8, "one")
    assert enc.out_features == 11
    out = enc.embed_labels(X, torch.tensor([0]))[0]
    assert torch.equal(out[:8], X[0])  # the whole image is kept
    assert out[8:].tolist() == [1, 0, 0]
    out = Concatenate(3, 8, "max").embed_labels(X, torch.tensor([2]))[0]
    assert out[8:].tolist() == pytest.approx([0, 0, 0.9])
    assert enc.base(X)[0, 8:].tolist() == [0, 0, 0]


@pytest.mark.parametrize("name", ["overwrite", "top_row", "concat"])
@pytest.mark.parametrize("value", ["one", "max"])
def test_neutral_and_arbitrary_codes(name: str, value: str) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 16, generator=g)
    cls = LABEL_ENCODERS[name]
    enc = cls(3, 16, value, width=4) if cls is TopRow else cls(3, 16, value)
    strength = x.amax(1) if value == "max" else torch.ones(4)
    neutral = enc.neutral(x, 0.1)
    slots = enc.patterns.sum(0) > 0  # every pixel some class lights
    expected_slots = 0.1 * strength[:, None] * enc.patterns.sum(0)[None]
    torch.testing.assert_close(neutral[:, slots], expected_slots[:, slots])
    torch.testing.assert_close(neutral[:, ~slots], enc.base(x)[:, ~slots])
    # embed is linear in the code: the neutral code is the average of the one-hot codes
    mean_onehot = sum(enc.embed_labels(x, torch.full((4,), c)) for c in range(3)) / 3
    torch.testing.assert_close(enc.neutral(x, 1 / 3), mean_onehot)


@pytest.mark.parametrize("name", ["overwrite", "top_row", "concat"])
def test_base_zeroes_every_label_slot(name: str) -> None:
    x = torch.rand(2, 16) + 0.5
    cls = LABEL_ENCODERS[name]
    enc = cls(3, 16, "one", width=4) if cls is TopRow else cls(3, 16, "one")
    base = enc.base(x)
    slots = enc.patterns.sum(0) > 0
    assert base.shape == (2, enc.out_features)
    assert (base[:, slots] == 0).all()
    assert (base[:, ~slots] != 0).any()


def test_onehot_and_unknown_value() -> None:
    enc = OverwritePixels(4, 8)
    oh = enc.onehot(torch.tensor([2, 0]))
    assert oh.dtype == torch.float32
    assert oh.tolist() == [[0, 0, 1, 0], [1, 0, 0, 0]]
    with pytest.raises(ValueError, match="label value"):
        OverwritePixels(4, 8, "half")


def test_label_encoder_registry() -> None:
    assert set(LABEL_ENCODERS) == {"overwrite", "top_row", "concat", "planes", "none"}
    with pytest.raises(ConfigError, match="overwrite"):
        LABEL_ENCODERS["sideways"]
