"""FFNet: the batched try-all-labels readout, prediction, the probe, module plumbing, greedy
training and divergence."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable

import pytest
import torch
from _tolerance import (
    assert_close_reduced,
    ff_layer_terms,
    linear_scale,
    reduction_tol,
    shared_first_terms,
)

from forwardforward.config import RunConfig
from forwardforward.errors import ConfigError, TrainingDiverged
from forwardforward.layers import EPS, FFLinear, normalize
from forwardforward.nets.feedforward import FFNet

IN_SHAPE = (1, 6, 6)  # D = 36; top_row labels use the 6-pixel top row
C = 4


def _data(n: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, *IN_SHAPE, generator=g) * 255).round().to(torch.uint8)
    y = torch.randint(0, C, (n,), generator=g)
    return x, y


def _net(tiny_config: Callable[..., RunConfig], *overrides: str, seed: int = 0) -> FFNet:
    config = tiny_config("model.layers=[16, 8, 6]", *overrides)
    torch.manual_seed(seed)
    net = FFNet(config, IN_SHAPE, C)
    net.configure(steps_per_epoch=10)
    return net


def _forward_terms(net: FFNet) -> list[int]:
    """The chain of sums (see ``_tolerance``) up to each layer's output, the first layer's in
    its shared form where the net shares it (the longer of the two forms)."""
    out, total = [], 0
    for i, layer in enumerate(net.layers):
        assert isinstance(layer, FFLinear)
        shared = i == 0 and net._sharing_first() is not None
        total += shared_first_terms(layer, C) if shared else ff_layer_terms(layer)
        out.append(total)
    return out


def _goodness_terms(net: FFNet, width: int) -> int:
    """A goodness of ``H`` units: the squared norm sums ``H`` squares and squares its root
    again; the mean of squares divides once more."""
    return width + 2 + (net.config.model.goodness == "mean_squares")


def _score_terms(net: FFNet, layers: list[int]) -> int:
    """The chain of sums behind a label score: a readout layer's goodness at the end of the
    forwards, then the sum over the readout layers."""
    fwd = _forward_terms(net)
    return max(fwd[i] + _goodness_terms(net, net.widths[i]) for i in layers) + len(layers)


def _step_terms(net: FFNet, b: int, copies: int) -> int:
    """The chain of sums of one training step on ``B = b`` images with ``copies - 1`` negatives
    each (``R = copies B`` rows): layer k's weight gradient (its forward, its goodness, the
    loss's mean over the R rows and the gradient's sum over them, with the shared form's C
    label codes at layer 0) or the probe's (the forwards, a readout norm, the logits over the F
    features, the log-softmax over the C labels, the mean over the B images and the gradient's
    sum over them), whichever is longer."""
    rows, fwd, widths = b * copies, _forward_terms(net), net.widths
    layer = max(
        fwd[k] + _goodness_terms(net, h) + 2 * rows + (C if k == 0 else 0)
        for k, h in enumerate(widths)
    )
    probe = fwd[-1] + max(widths) + 2 + sum(widths) + C + 2 * b
    return max(layer, probe)


def _train_briefly(net: FFNet, steps: int = 5) -> None:
    gen = torch.Generator().manual_seed(0)
    for s in range(steps):
        x, y = _data(seed=100 + s)
        net.train_step(x, y, torch.arange(len(y)), gen)


# ---------------------------------------------------------------------------------------------
# Batched readout == naive per-label loop


@pytest.mark.parametrize("label", ["overwrite", "top_row", "concat"])
@pytest.mark.parametrize("norm", ["rms", "l2", "none", "std"])
@pytest.mark.parametrize("value", ["one", "max", "norm"])
@pytest.mark.parametrize("trained", [False, True], ids=["untrained", "trained"])
def test_label_scores_equal_the_naive_loop(
    tiny_config: Callable[..., RunConfig], label: str, norm: str, value: str, trained: bool
) -> None:
    net = _net(
        tiny_config,
        f"model.label={label}",
        f"model.norm={norm}",
        f"model.label_value={value}",
        "optim.name=adam",
        "optim.lr=0.01",
    )
    if trained:
        _train_briefly(net)
    net.eval()
    x, _ = _data(n=9, seed=3)
    fast = net.label_scores(x)
    naive = net.label_scores_naive(x)
    assert fast.shape == (9, C)
    # the shared first product and one (B C)-row batch against one label at a time
    assert_close_reduced(fast, naive, _score_terms(net, [0, 1, 2]))
    for layers in ([0], [1, 2], [2]):
        assert_close_reduced(
            net.label_scores(x, layers),
            net.label_scores_naive(x, layers),
            _score_terms(net, layers),
        )


@pytest.mark.parametrize("activation", ["relu_st", "gelu", "silu", "leaky_relu", "triangle"])
def test_label_scores_equal_the_naive_loop_other_activations(
    tiny_config: Callable[..., RunConfig], activation: str
) -> None:
    net = _net(tiny_config, f"model.activation={activation}", "model.bias=false")
    x, _ = _data(n=5, seed=4)
    n = _score_terms(net, [0, 1, 2])
    assert_close_reduced(net.label_scores(x), net.label_scores_naive(x), n)


def test_label_scores_are_the_goodness_of_each_labelled_input(
    tiny_config: Callable[..., RunConfig],
) -> None:
    """Independent of both implementations: score[b, c] is the summed goodness of image b with
    label c, pushed through the layers one by one."""
    net = _net(tiny_config, "model.goodness=mean_squares")
    x, _ = _data(n=3, seed=5)
    xf = net.flat(x)
    scores = net.label_scores(x)
    n = _score_terms(net, [0, 1, 2])  # the shared first product, another mean of squares
    for c in range(C):
        a = net.encoder.embed_labels(xf, torch.full((3,), c))
        total = torch.zeros(3)
        for layer in net.layers:
            a = layer(a)
            total += a.square().mean(1)
        assert_close_reduced(scores[:, c], total, n)


# ---------------------------------------------------------------------------------------------
# The first layer's product shared by an image's positive and negatives


@pytest.mark.parametrize("label", ["overwrite", "top_row", "concat"])
@pytest.mark.parametrize("norm", ["rms", "l2", "none"])
@pytest.mark.parametrize("value", ["one", "max", "norm"])
@pytest.mark.parametrize("bias", [True, False])
def test_forward_shared_equals_forward_on_the_embedded_inputs(
    tiny_config: Callable[..., RunConfig], label: str, norm: str, value: str, bias: bool
) -> None:
    net = _net(
        tiny_config,
        f"model.label={label}",
        f"model.norm={norm}",
        f"model.label_value={value}",
        f"model.bias={str(bias).lower()}",
    )
    x, _ = _data(n=7, seed=6)
    xf, enc = net.flat(x), net.encoder
    g = torch.Generator().manual_seed(1)
    rows = torch.randint(0, 7, (19,), generator=g)  # images repeated, in any order
    q = torch.rand(19, C, generator=g)  # any label code, not only one-hot
    first = net.layers[0]
    assert isinstance(first, FFLinear)
    embedded = enc.embed(xf[rows], q)
    codes = q * enc.value(xf)[rows, None]
    shared = first.forward_shared(enc.base(xf), rows, codes, enc.patterns)
    # one layer's two forms: the bound of the longer, on the terms of the plain product
    scale = linear_scale(normalize(embedded, norm), first.weight, first.bias)
    n = shared_first_terms(first, C)
    assert_close_reduced(shared, first(embedded), n, scale=scale)


@pytest.mark.parametrize("negatives", ["random_wrong", "all_wrong", "hard", "inverse"])
@pytest.mark.parametrize("value", ["one", "max", "norm"])
def test_a_step_with_the_shared_first_product_equals_the_stacked_step(
    tiny_config: Callable[..., RunConfig], negatives: str, value: str
) -> None:
    """Same negatives drawn, same losses, same weights after a few steps: sharing the first
    layer's product only reorders the arithmetic."""
    opts = [f"negatives.kind={negatives}", f"model.label_value={value}", "model.peer_weight=0.03"]
    shared, stacked = _net(tiny_config, *opts), _net(tiny_config, *opts)
    stacked.shared_inputs = lambda *args: None  # type: ignore[method-assign]
    # a loss errs by its goodness's error, relative to the goodness (not to the loss): the
    # largest goodness of a step is part of the scale of its losses
    top = [0.0]
    score = stacked.objective.score

    def recorded(h: torch.Tensor) -> torch.Tensor:
        out = score(h)
        top[0] = max(top[0], float(out.detach().abs().max()))
        return out

    stacked.objective.score = recorded  # type: ignore[method-assign]
    gen_a, gen_b = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    steps, chain = 4, 0
    for s in range(steps):
        x, y = _data(seed=200 + s)
        chain = _step_terms(stacked, len(y), C if negatives == "all_wrong" else 2)
        idx = torch.arange(len(y))
        top[0] = 0.0
        got, want = shared.train_step(x, y, idx, gen_a), stacked.train_step(x, y, idx, gen_b)
        for key in want:  # a step's rounding reaches the weights and so every later step
            scale = float(want[key].abs()) + (top[0] if key.startswith("loss") else 0.0)
            assert_close_reduced(got[key], want[key], (s + 1) * chain, scale=scale, msg=key)
    # the weights move by lr times their gradients, far less than their own size: the scale of
    # each tensor is its own (the probe's, which starts from zero, too)
    for (name, a), b in zip(
        shared.state_dict().items(), stacked.state_dict().values(), strict=True
    ):
        assert_close_reduced(a, b, steps * chain, msg=name)


def test_the_shared_first_product_is_used_only_where_it_applies(
    tiny_config: Callable[..., RunConfig],
) -> None:
    x, y = _data(n=6)
    gen = torch.Generator().manual_seed(0)
    xf = _net(tiny_config).flat(x)
    assert _net(tiny_config).shared_inputs(xf, y, gen, None) is not None
    for opts in (
        ["model.norm=std"],
        ["train.schedule=greedy", "readout.probe_mode=after"],
        ["model.label=none", "negatives.kind=hybrid", "readout.kind=probe"],
    ):
        assert _net(tiny_config, *opts).shared_inputs(xf, y, gen, None) is None, opts


def test_a_bf16_net_evaluates_in_bf16_from_its_configuration(
    tiny_config: Callable[..., RunConfig],
) -> None:
    """A net built from a bf16 configuration (a loaded run, say) scores in bf16 before any
    configure(); its scores stay fp32 and close to the fp32 ones."""
    net = _net(tiny_config, "train.precision=bf16")
    fresh = FFNet(net.config, IN_SHAPE, C)
    assert fresh.autocast_dtype == torch.bfloat16
    fresh.load_state_dict(net.state_dict())
    x, _ = _data(n=6, seed=8)
    low = fresh.label_scores(x)
    fresh.autocast_dtype = None
    exact = fresh.label_scores(x)
    assert low.dtype == torch.float32 and not torch.equal(low, exact)
    torch.testing.assert_close(low, exact, rtol=0.03, atol=0.05)


def test_flat_scales_uint8_and_keeps_floats(tiny_config: Callable[..., RunConfig]) -> None:
    net = _net(tiny_config)
    x8 = torch.tensor([[[[0, 255], [51, 102]]]], dtype=torch.uint8)
    torch.testing.assert_close(net.flat(x8), torch.tensor([[0.0, 1.0, 0.2, 0.4]]))
    xf = torch.rand(2, 1, 6, 6)
    assert torch.equal(net.flat(xf), xf.reshape(2, 36))


# ---------------------------------------------------------------------------------------------
# predict


@pytest.mark.parametrize(
    ("select", "maximize", "expect"),
    [
        ("argmax", True, "argmax"),
        ("argmin", True, "argmin"),
        ("auto", True, "argmax"),
        ("auto", False, "argmin"),
        ("argmax", False, "argmax"),
    ],
)
def test_predict_select(
    tiny_config: Callable[..., RunConfig], select: str, maximize: bool, expect: str
) -> None:
    net = _net(
        tiny_config,
        "readout.kind=goodness",
        f"readout.select={select}",
        f"model.maximize={str(maximize).lower()}",
    )
    net.eval()
    x, _ = _data(n=40, seed=6)
    scores = net.label_scores(x)
    assert not torch.equal(scores.argmax(1), scores.argmin(1))
    want = scores.argmax(1) if expect == "argmax" else scores.argmin(1)
    assert torch.equal(net.predict(x), want)


def test_probe_readout_predicts_from_probe_features(tiny_config: Callable[..., RunConfig]) -> None:
    net = _net(tiny_config, "readout.kind=probe", "readout.layers=[1, 2]")
    net.eval()
    assert net.probe is not None
    assert net.probe.weight.shape == (C, 8 + 6)  # the widths of readout layers 1 and 2
    x, _ = _data(n=20, seed=7)

    def boom(*args: object, **kwargs: object) -> torch.Tensor:
        raise AssertionError("the probe readout must not try every label")

    net.label_scores = boom  # type: ignore[method-assign]
    feats = net.probe_features(x)
    assert feats.shape == (20, 14)
    with torch.no_grad():
        net.probe.weight.zero_()
        net.probe.weight[2] = 1.0  # features are non-negative: class 2 wins wherever any is on
    assert (feats.sum(1) > 0).all()
    assert net.predict(x).tolist() == [2] * 20
    with torch.no_grad():
        net.probe.weight.normal_()
    assert torch.equal(net.predict(x), (feats @ net.probe.weight.T).argmax(1))


def test_probe_features_use_the_neutral_label(tiny_config: Callable[..., RunConfig]) -> None:
    net = _net(tiny_config, "readout.kind=probe", "model.neutral_level=0.25")
    x, _ = _data(n=4, seed=8)
    xf = net.flat(x)
    a = net.encoder.neutral(xf, 0.25)
    expected = []
    for layer in net.layers:
        a = layer(a)
        expected.append(normalize(a, "rms"))
    torch.testing.assert_close(net.probe_features(x), torch.cat(expected, 1))


def test_probe_features_zero_input(tiny_config: Callable[..., RunConfig]) -> None:
    net = _net(tiny_config, "readout.kind=probe", "readout.probe_input=zero", "readout.layers=[0]")
    x, _ = _data(n=4, seed=8)
    a = net.encoder.embed(net.flat(x), torch.zeros(4, C))
    torch.testing.assert_close(net.probe_features(x), normalize(net.layers[0](a), "rms"))


def test_standardised_probe_features_have_zero_mean_and_unit_variance(
    tiny_config: Callable[..., RunConfig],
) -> None:
    net = _net(tiny_config, "readout.kind=probe", "readout.probe_norm=std", "readout.layers=[0, 2]")
    x, _ = _data(n=6, seed=9)
    a = net.encoder.neutral(net.flat(x), net.config.model.neutral_level)
    h0 = net.layers[0](a)
    h2 = net.layers[2](net.layers[1](h0))
    feats = net.probe_features(x)
    f32 = torch.float32
    for part, h in ((feats[:, :16], h0.detach()), (feats[:, 16:], h2.detach())):
        d = h.shape[1]
        centred = h - h.mean(1, keepdim=True)
        std = centred.square().mean(1, keepdim=True).sqrt()  # as standardize computes it
        # The rounded values against the exact identities. Their mean: the rounding of the
        # mean they were centred on (D terms, relative to mean |h| / std), the centring, the
        # division and their own mean (D terms, relative to mean |part| <= 1).
        drift = float((h.abs().mean(1, keepdim=True) / std).max())
        mean_tol = reduction_tol(f32, d + 2, 1 + drift, exact_reference=True)
        torch.testing.assert_close(part.mean(1), torch.zeros(6), **mean_tol)
        # Their variance: the std's D squares and mean and its root, the division, the
        # variance's own two passes, and the norm's EPS added to the std (2 EPS / std).
        var_tol = reduction_tol(f32, 2 * d + 9, 1.0, exact_reference=True)
        var_tol["atol"] += 2 * EPS / float(std.min())
        torch.testing.assert_close(part.var(1, unbiased=False), torch.ones(6), **var_tol)
        # the same centred activities divided by the same std: the addition of EPS, the
        # division and the product here, and EPS itself
        rtol = reduction_tol(f32, 3, exact_reference=True)["rtol"] + EPS / float(std.min())
        torch.testing.assert_close(part * std, centred, rtol=rtol, atol=0.0)


def test_probe_dropout_zeroes_features_while_training_only(
    tiny_config: Callable[..., RunConfig],
) -> None:
    net = _net(tiny_config, "readout.kind=probe", "readout.probe_dropout=0.5")
    assert net.probe is not None
    with torch.no_grad():
        net.probe.weight.normal_()
    feats = torch.rand(200, net.probe.weight.shape[1]) + 0.5
    logits = net._probe_logits(feats, torch.Generator().manual_seed(3))
    again = net._probe_logits(feats, torch.Generator().manual_seed(3))
    torch.testing.assert_close(logits, again)  # the mask comes from the generator
    plain = feats @ net.probe.weight.T
    assert not torch.allclose(logits, plain)
    # kept features are scaled by 1 / (1 - p), so the expectation is unchanged
    many = torch.stack(
        [net._probe_logits(feats, torch.Generator().manual_seed(s)) for s in range(400)]
    ).mean(0)
    assert (many - plain).abs().mean() < 0.1 * plain.abs().mean()
    x, _ = _data(n=8, seed=10)
    net.eval()
    torch.testing.assert_close(net.predict(x), net.probe(net.probe_features(x)).argmax(1))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("readout.probe_norm=l3", "readout.probe_norm"),
        ("readout.probe_dropout=1.0", "probe_dropout"),
    ],
)
def test_bad_probe_options_are_named(
    tiny_config: Callable[..., RunConfig], override: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        tiny_config("readout.kind=probe", override)


# ---------------------------------------------------------------------------------------------
# Module plumbing


def test_state_dict_holds_every_layer_and_the_probe(tiny_config: Callable[..., RunConfig]) -> None:
    net = _net(tiny_config, "readout.kind=probe")
    keys = set(net.state_dict())
    for i in range(3):
        for p in ("weight", "bias", "running_mean"):
            assert f"layers.{i}.{p}" in keys
    assert "probe.weight" in keys
    plain = _net(tiny_config, "readout.kind=goodness")
    assert not any(k.startswith("probe") for k in plain.state_dict())


def test_parameters_and_to_see_every_layer(tiny_config: Callable[..., RunConfig]) -> None:
    net = _net(tiny_config, "readout.kind=probe")
    params = {id(p) for p in net.parameters()}
    for layer in net.layers:
        assert id(layer.weight) in params and id(layer.bias) in params
    assert net.probe is not None and id(net.probe.weight) in params
    assert len(params) == 3 * 2 + 1
    net.to(torch.float64)
    for layer in net.layers:
        assert layer.weight.dtype == torch.float64
        assert layer.running_mean.dtype == torch.float64
    assert net.probe.weight.dtype == torch.float64


def test_one_optimizer_per_layer_plus_probe(tiny_config: Callable[..., RunConfig]) -> None:
    net = _net(tiny_config, "readout.kind=probe")
    assert len(net.optimizers) == len(net.schedulers) == 4
    for layer, opt in zip(net.layers, net.optimizers, strict=False):
        owned = {id(p) for group in opt.param_groups for p in group["params"]}
        assert owned == {id(layer.weight), id(layer.bias)}


# ---------------------------------------------------------------------------------------------
# Greedy schedule


@pytest.mark.parametrize("inputs", ["cached", "fresh"])
@pytest.mark.parametrize("phase", [0, 1, 2])
def test_greedy_trains_only_the_current_layer(
    tiny_config: Callable[..., RunConfig], phase: int, inputs: str
) -> None:
    net = _net(
        tiny_config,
        "train.schedule=greedy",
        "readout.kind=goodness",
        f"train.greedy_inputs={inputs}",
    )
    assert net.phases() == 3
    x, y = _data(n=30, seed=9)
    net.begin_phase(phase, x, y)
    before = copy.deepcopy(net.state_dict())
    gen = torch.Generator().manual_seed(0)
    metrics = net.train_step(x[:10], y[:10], torch.arange(10), gen)
    assert set(metrics) == {f"loss{phase}"}
    after = net.state_dict()
    for i in range(3):
        changed = not torch.equal(before[f"layers.{i}.weight"], after[f"layers.{i}.weight"])
        assert changed == (i == phase), f"layer {i} in phase {phase}"


def test_greedy_cache_feeds_layer_k_the_output_of_the_frozen_layers_below(
    tiny_config: Callable[..., RunConfig],
) -> None:
    net = _net(tiny_config, "train.schedule=greedy", "readout.kind=goodness")
    x, y = _data(n=30, seed=9)
    net.begin_phase(2, x, y)
    assert net._cache is not None
    a_pos = net._cache[0]
    expected = net.encoder.embed_labels(net.flat(x), y)
    for layer in list(net.layers)[:2]:
        expected = layer(expected)
    torch.testing.assert_close(a_pos, expected)
    assert net._cache[1].shape == (1, *a_pos.shape)


def test_greedy_fresh_inputs_draw_this_batchs_negatives_through_the_frozen_layers(
    tiny_config: Callable[..., RunConfig],
) -> None:
    net = _net(
        tiny_config, "train.schedule=greedy", "readout.kind=goodness", "train.greedy_inputs=fresh"
    )
    x, y = _data(n=30, seed=9)
    net.begin_phase(1, x, y)
    assert net._cache is None  # nothing computed ahead
    ref = copy.deepcopy(net)
    xb, yb = x[:10], y[:10]
    a_pos, a_neg = ref.inputs(ref.flat(xb), yb, torch.Generator().manual_seed(5), None)
    a_pos, a_neg = ref.layers[0](a_pos), ref.layers[0](a_neg)
    expected = ref.layer_loss(1, ref.layers[1](torch.cat([a_pos, a_neg])), 10)
    metrics = net.train_step(xb, yb, torch.arange(10), torch.Generator().manual_seed(5))
    torch.testing.assert_close(metrics["loss1"], expected.detach())


@pytest.mark.parametrize(("readout", "scored"), [("[0, 1, 2]", [[0], [0, 1]]), ("[2]", [[0], [1]])])
def test_greedy_hard_negatives_come_from_the_goodness_of_the_layers_trained_so_far(
    tiny_config: Callable[..., RunConfig], readout: str, scored: list[list[int]]
) -> None:
    """Layer k's hard negatives are drawn from every label's goodness in the readout's layers up
    to k (layer k alone when the readout has none of them), through the frozen layers below."""
    net = _net(
        tiny_config,
        "train.schedule=greedy",
        "readout.kind=goodness",
        f"readout.layers={readout}",
        "train.greedy_inputs=fresh",
        "negatives.kind=hard",
    )
    x, y = _data(n=30, seed=9)
    xf = net.flat(x)
    for k, layers in enumerate(scored):
        expected = net.label_scores_naive(x, layers)
        assert_close_reduced(net.greedy_scores(xf, k), expected, _score_terms(net, layers))
    net.begin_phase(1, x, y)
    a_pos, a_neg = net._frozen_inputs(x, y, torch.Generator().manual_seed(3), 1)
    ref_pos, ref_neg = net.inputs(xf, y, torch.Generator().manual_seed(3), net.greedy_scores(xf, 1))
    torch.testing.assert_close(a_pos, net.layers[0](ref_pos))
    torch.testing.assert_close(a_neg, net.layers[0](ref_neg))
    # the scores decide the draw: a sharp softmax picks the best-scoring wrong label
    sharp = _net(
        tiny_config,
        "train.schedule=greedy",
        "readout.kind=goodness",
        "train.greedy_inputs=fresh",
        "negatives.kind=hard",
        "negatives.temperature=1e-6",
    )
    scores = sharp.greedy_scores(xf, 0)
    best_wrong = scores.scatter(1, y[:, None], float("-inf")).argmax(1)
    _, codes = sharp.sampler(y, C, torch.Generator().manual_seed(0), scores)
    assert torch.equal(codes.argmax(1), best_wrong)


def test_greedy_hard_negatives_train_every_phase(tiny_config: Callable[..., RunConfig]) -> None:
    net = _net(
        tiny_config,
        "train.schedule=greedy",
        "readout.kind=goodness",
        "train.greedy_inputs=fresh",
        "negatives.kind=hard",
    )
    x, y = _data(n=30, seed=9)
    for phase in range(3):
        net.begin_phase(phase, x, y)
        metrics = net.train_step(x[:10], y[:10], torch.arange(10), torch.Generator())
        assert torch.isfinite(metrics[f"loss{phase}"])


def test_greedy_all_wrong_negatives(tiny_config: Callable[..., RunConfig]) -> None:
    """Greedy training with ``all_wrong`` negatives caches C-1 negatives per image; a batch must
    get them (validation may instead refuse the combination with a ConfigError)."""
    try:
        tiny_config("train.schedule=greedy", "negatives.kind=all_wrong")
    except ConfigError:
        return  # refused up front, with a clear message: fine
    net = _net(tiny_config, "train.schedule=greedy", "negatives.kind=all_wrong")
    x, y = _data(n=30, seed=9)
    net.begin_phase(0, x, y)
    metrics = net.train_step(x[:10], y[:10], torch.arange(10), torch.Generator().manual_seed(0))
    assert torch.isfinite(metrics["loss0"])


# ---------------------------------------------------------------------------------------------
# Hard negatives use the signed score


@pytest.mark.parametrize("maximize", [True, False])
def test_hard_negatives_get_scores_that_are_higher_for_more_positive_labels(
    tiny_config: Callable[..., RunConfig], maximize: bool
) -> None:
    """Samplers take per-label *scores* (higher = the model believes the label more). With the
    inverted objective (maximize = false) low goodness means positive, so the sampler must get
    the negated goodness, or hard negatives become the easiest ones."""
    net = _net(
        tiny_config,
        "negatives.kind=hard",
        "readout.kind=goodness",
        f"model.maximize={str(maximize).lower()}",
    )
    seen: list[torch.Tensor] = []
    real = net.sampler

    class Recorder:
        needs_scores = True

        def __call__(self, y, num_classes, generator, scores):  # type: ignore[no-untyped-def]
            seen.append(scores.clone())
            return real(y, num_classes, generator, scores)

    net.sampler = Recorder()
    x, y = _data(n=16, seed=10)
    goodness = net.label_scores(x)
    net.train_step(x, y, torch.arange(16), torch.Generator().manual_seed(0))
    (scores,) = seen
    believed = goodness.argmax(1) if maximize else goodness.argmin(1)
    assert torch.equal(scores.argmax(1), believed)


# ---------------------------------------------------------------------------------------------
# Divergence


def test_nan_input_raises_training_diverged_naming_layer_and_step(
    tiny_config: Callable[..., RunConfig],
) -> None:
    net = _net(tiny_config, "model.peer_weight=0.0")
    x, y = _data(n=8, seed=11)
    xf = net.flat(x)
    xf[0, 20] = float("nan")
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(TrainingDiverged) as info:
        net.train_step(xf, y, torch.arange(8), torch.Generator().manual_seed(0))
    msg = str(info.value)
    assert "layer 0" in msg
    assert re.search(r"\bstep 0\b", msg), msg
    after = net.state_dict()
    for k, v in before.items():  # nothing was stepped with the bad loss
        assert torch.equal(v, after[k]), k


def test_huge_lr_diverges_on_the_next_step(tiny_config: Callable[..., RunConfig]) -> None:
    net = _net(tiny_config, "optim.name=adam", "optim.lr=1e30", "optim.schedule=constant")
    gen = torch.Generator().manual_seed(0)
    x, y = _data(n=8, seed=12)
    net.train_step(x, y, torch.arange(8), gen)  # weights become ~1e30
    with pytest.raises(TrainingDiverged) as info:
        net.train_step(x, y, torch.arange(8), gen)
    msg = str(info.value)
    assert "layer 0" in msg and re.search(r"\bstep 1\b", msg), msg
    assert "learning rate" in msg


def test_greedy_divergence_names_the_layer_and_the_global_step(
    tiny_config: Callable[..., RunConfig],
) -> None:
    """In greedy training the message names the phase's layer and the run's optimisation step
    (steps of the earlier phases included), not layer 0's own step count."""
    net = _net(tiny_config, "train.schedule=greedy", "readout.kind=goodness")
    x, y = _data(n=30, seed=9)
    gen = torch.Generator().manual_seed(0)
    net.begin_phase(0, x, y)
    for _ in range(3):
        net.train_step(x[:10], y[:10], torch.arange(10), gen)
    net.begin_phase(1, x, y)
    net.train_step(x[:10], y[:10], torch.arange(10), gen)  # global step 3 (0-based)
    second = net.layers[1]
    assert isinstance(second, FFLinear)
    with torch.no_grad():
        second.weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged) as info:
        net.train_step(x[:10], y[:10], torch.arange(10), gen)  # global step 4
    msg = str(info.value)
    assert "layer 1" in msg, msg
    assert re.search(r"\bstep 4\b", msg), msg


def test_input_standardisation_reaches_ff_net_and_twin(
    tiny_config: Callable[..., RunConfig],
) -> None:
    from forwardforward.nets.backprop import BackpropNet
    from forwardforward.nets.base import pixels

    x = torch.tensor([[0, 51, 255]], dtype=torch.uint8)
    assert torch.allclose(pixels(x), torch.tensor([[0.0, 0.2, 1.0]]))
    assert torch.allclose(pixels(x, 0.2, 0.5), torch.tensor([[-0.4, 0.0, 1.6]]))
    floats = torch.rand(2, 3)
    assert pixels(floats, 0.2, 0.5) is floats  # prepared inputs pass through

    config = tiny_config("model.input_mean=0.1307", "model.input_std=0.3081")
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    expected = (images.float().flatten(1) / 255 - 0.1307) / 0.3081
    ff = FFNet(config, (1, 28, 28), 10)
    assert torch.allclose(ff.flat(images), expected)
    twin = BackpropNet(config, (1, 28, 28), 10)
    first = twin.layers[0]
    assert isinstance(first, torch.nn.Linear)
    seen: list[torch.Tensor] = []
    first.register_forward_hook(lambda _m, inp, _out: seen.append(inp[0]))
    twin(images)
    assert torch.allclose(seen[0], expected)
    with pytest.raises(ConfigError, match="input_std must be positive"):
        FFNet(tiny_config("model.input_std=0"), (1, 28, 28), 10)
