"""Unsupervised FF: hybrid-image masks, self-contrastive pairs, locally connected layers."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from _tolerance import assert_close_reduced, ff_layer_terms, linear_scale, reduction_tol
from hypothesis import given
from hypothesis import strategies as st

from forwardforward.config import load_preset
from forwardforward.errors import ConfigError
from forwardforward.layers import (
    FFLinear,
    FFLocallyConnected2d,
    LocallyConnected2d,
    locally_connected,
    normalize,
)
from forwardforward.negatives import (
    HybridImages,
    SelfContrastive,
    hybrid,
    other_samples,
    shift_images,
    smooth_masks,
)
from forwardforward.nets.feedforward import FFNet
from forwardforward.train import Trainer


def _mean_run_length(m: torch.Tensor) -> float:
    """Mean length of the horizontal runs of equal values in 0/1 images ``(N, H, W)``."""
    changes = (m[..., 1:] != m[..., :-1]).sum().item()
    rows = m.shape[0] * m.shape[1]
    return m.shape[0] * m.shape[1] * m.shape[2] / (changes + rows)


def test_masks_are_half_ones_with_large_regions() -> None:
    gen = torch.Generator().manual_seed(0)
    masks = smooth_masks(256, (28, 28), gen)
    assert masks.shape == (256, 1, 28, 28)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert abs(masks.mean().item() - 0.5) < 0.05
    noise = (torch.rand(256, 28, 28, generator=gen) < 0.5).float()
    # white noise has runs of about 2 pixels; blurred-and-thresholded masks far longer ones
    assert _mean_run_length(noise) < 2.5
    assert _mean_run_length(masks[:, 0]) > 3 * _mean_run_length(noise)


@given(st.integers(0, 8), st.integers(0, 2**31 - 1))
def test_masks_are_the_thresholded_blur_of_a_random_bit_image(blurs: int, seed: int) -> None:
    # the reference: the same bits blurred by explicit 1-D convolutions with [1/4, 1/2, 1/4],
    # edges replicated, then thresholded at 0.5
    bits = (torch.rand(3, 1, 9, 11, generator=torch.Generator().manual_seed(seed)) < 0.5).double()
    k = torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64)
    m = bits
    for _ in range(blurs):
        m = F.conv2d(F.pad(m, (1, 1, 0, 0), mode="replicate"), k.view(1, 1, 1, 3))
        m = F.conv2d(F.pad(m, (0, 0, 1, 1), mode="replicate"), k.view(1, 1, 3, 1))
    blurred = m
    ours = smooth_masks(3, (9, 11), torch.Generator().manual_seed(seed), blurs)
    # float32 rounding can only flip pixels whose blurred value is within 1e-5 of 0.5
    clear = (blurred - 0.5).abs() > 1e-5
    assert torch.equal(ours[clear], (blurred > 0.5).float()[clear])


def test_one_mask_per_sample() -> None:
    masks = smooth_masks(8, (28, 28), torch.Generator().manual_seed(1))
    assert len({tuple(m.flatten().tolist()) for m in masks}) == 8


def test_hybrid_is_exactly_the_masked_mix() -> None:
    gen = torch.Generator().manual_seed(2)
    a, b = torch.rand(4, 3, 8, 8, generator=gen), torch.rand(4, 3, 8, 8, generator=gen)
    m = smooth_masks(4, (8, 8), gen)
    assert torch.equal(hybrid(a, b, m), m * a + (1 - m) * b)
    pos, neg = HybridImages().pair(a, torch.Generator().manual_seed(3))
    assert torch.equal(pos, a.flatten(1))
    # the same draws, by hand: one mask per sample, then a different image per sample
    gen = torch.Generator().manual_seed(3)
    masks = smooth_masks(4, (8, 8), gen)
    other = a[other_samples(4, gen, a.device)]
    assert torch.equal(neg, hybrid(a, other, masks).flatten(1))


def test_other_samples_never_picks_itself() -> None:
    gen = torch.Generator().manual_seed(4)
    for n in (2, 3, 17):
        idx = other_samples(n, gen, torch.device("cpu"))
        assert bool((idx != torch.arange(n)).all())


def test_self_contrastive_pairs_side_by_side() -> None:
    x = torch.rand(5, 1, 4, 4)
    pos, neg = SelfContrastive(pairing="concat").pair(x, torch.Generator().manual_seed(0))
    flat = x.flatten(1)
    assert torch.equal(pos, torch.cat([flat, flat], 1))
    assert torch.equal(neg[:, :16], flat)
    assert not any(torch.equal(neg[i, 16:], flat[i]) for i in range(5))


def test_self_contrastive_sum_is_shared_weights_on_the_two_images() -> None:
    x = torch.rand(5, 1, 4, 4)
    pos, neg = SelfContrastive(pairing="sum").pair(x, torch.Generator().manual_seed(0))
    flat = x.flatten(1)
    assert torch.equal(pos, 2 * flat)
    others = neg - flat  # the second image of each negative pair
    # the pair's sum and this difference each round once, against the exact second image
    tol = reduction_tol(torch.float32, 2, float(neg.abs().max()), exact_reference=True)
    assert all(
        not torch.allclose(others[i], flat[i], **tol)
        and any(torch.allclose(others[i], f, **tol) for f in flat)
        for i in range(5)
    )
    # a trained net sees an image paired with itself
    assert torch.equal(SelfContrastive().present(x), 2 * flat)


def test_shared_pairing_feeds_both_images_to_one_weight_matrix() -> None:
    config = load_preset(
        "scff-mnist",
        ["negatives.pairing=shared", "negatives.shift=0", "model.layers=[6, 5]", "model.norm=std"],
    )
    net = FFNet(config, (1, 4, 4), 10)
    first = net.layers[0]
    assert isinstance(first, FFLinear) and first.halves and first.weight.shape == (6, 16)
    assert not net.layers[1].halves
    x = torch.rand(3, 1, 4, 4)
    pos, neg = net.inputs(x.flatten(1), torch.zeros(3, dtype=torch.long), torch.Generator(), None)
    assert pos.shape == neg.shape == (3, 32)
    flat = x.flatten(1)
    n = normalize(torch.cat([flat, flat], 1), "std")
    assert first.bias is not None
    both = n[:, :16] + n[:, 16:]
    expected = first.act(both @ first.weight.T + first.bias)
    # the layer's F.linear against a product and an addition (16 terms and the bias); the
    # triangle's mean over the 6 units doubles that error and adds its own (6 terms, the
    # division) and the subtraction's
    scale = linear_scale(both, first.weight, first.bias)
    assert_close_reduced(first(pos), expected, 2 * (16 + 1) + 6 + 2, scale=scale)
    with pytest.raises(ConfigError, match="fully connected"):
        load_preset(
            "scff-mnist",
            ["negatives.pairing=shared", "model.local=[[4, 3, 1, 1]]", "model.layers=[6]"],
        )


@given(st.integers(0, 3), st.integers(0, 2**31 - 1))
def test_shifted_views_are_translations_of_the_image(max_shift: int, seed: int) -> None:
    x = torch.rand(4, 2, 6, 7) + 0.1  # no zero pixels: a zero is a filled border
    out = shift_images(x, max_shift, torch.Generator().manual_seed(seed))
    assert out.shape == x.shape
    for i in range(4):
        found = False
        for dy in range(-max_shift, max_shift + 1):
            for dx in range(-max_shift, max_shift + 1):
                ref = torch.zeros_like(x[i])
                ys, xs = slice(max(dy, 0), 6 + min(dy, 0)), slice(max(dx, 0), 7 + min(dx, 0))
                yd, xd = slice(max(-dy, 0), 6 + min(-dy, 0)), slice(max(-dx, 0), 7 + min(-dx, 0))
                ref[:, yd, xd] = x[i][:, ys, xs]
                found = found or torch.equal(out[i], ref)
        assert found, i


def test_self_contrastive_views_are_shifted_independently() -> None:
    x = torch.rand(64, 1, 8, 8)
    pos, _ = SelfContrastive(shift=2).pair(x, torch.Generator().manual_seed(1))
    assert not torch.allclose(pos, 2 * x.flatten(1))  # the two views differ for most images
    pos0, _ = SelfContrastive(shift=0).pair(x, torch.Generator().manual_seed(1))
    assert torch.equal(pos0, 2 * x.flatten(1))


def test_locally_connected_equals_a_loop_over_locations() -> None:
    torch.manual_seed(0)
    layer = FFLocallyConnected2d((2, 7, 6), 3, kernel_size=3, stride=2, padding=1, norm="none")
    x = torch.rand(4, 2 * 7 * 6)
    out = layer(x).view(4, 3, layer.out_h, layer.out_w)
    xi = F.pad(x.view(4, 2, 7, 6), (1, 1, 1, 1))
    assert layer.bias is not None
    for i in range(layer.out_h):
        for j in range(layer.out_w):
            patch = xi[:, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].reshape(4, -1)
            loc = i * layer.out_w + j
            w, b = layer.weight[loc], layer.bias[:, loc]
            expected = F.relu(patch @ w.T + b)
            # one batched product against one per location: 2 * 3 * 3 terms and the bias
            scale = linear_scale(patch, w, b)
            assert_close_reduced(out[:, :, i, j], expected, 2 * 3 * 3 + 1, scale=scale)


def test_locally_connected_normalises_its_detached_input() -> None:
    layer = FFLocallyConnected2d((1, 5, 5), 2, kernel_size=3, norm="rms")
    plain = LocallyConnected2d((1, 5, 5), 2, kernel_size=3)
    plain.weight.data.copy_(layer.weight.data)
    assert layer.bias is not None
    plain.bias.data.copy_(layer.bias.data)
    x = torch.rand(3, 25, requires_grad=True)
    out = layer(x)
    ref = F.relu(plain(normalize(x.detach(), "rms").view(3, 1, 5, 5))).flatten(1)
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    assert x.grad is None  # nothing flows back into the input


def test_no_gradient_reaches_an_earlier_layer_in_an_unsupervised_net() -> None:
    config = load_preset(
        "mnist-quick",
        [
            "model.local=[[4, 5, 2, 0]]",
            "model.layers=[16]",
            "model.label=none",
            "negatives.kind=hybrid",
        ],
    )
    net = FFNet(config, (1, 12, 12), 10)
    x = torch.rand(6, 1, 12, 12)
    pos, neg = net.inputs(x.flatten(1), torch.zeros(6, dtype=torch.long), torch.Generator(), None)
    h0 = net.layers[0](torch.cat([pos, neg]))
    h1 = net.layers[1](h0)
    net.layer_loss(1, h1, 6).backward()
    assert net.layers[0].weight.grad is None
    assert net.layers[1].weight.grad is not None


def test_unsupervised_nets_learn_on_synthetic_data() -> None:
    for kind in ("hybrid", "self_contrastive"):
        config = load_preset(
            "mnist-quick",
            [
                "data.dataset=synthetic",
                "model.layers=[64]",
                "model.label=none",
                f"negatives.kind={kind}",
                "train.epochs=2",
                "train.threads=1",
            ],
        )
        results = Trainer(config, progress=False).fit()
        assert results["test_acc"] > 0.3, kind  # chance is 0.1


class _NotPresented:
    """Hybrid negatives that claim their positives differ from what the readout sees, so the
    network computes the probe's features in a separate pass."""

    def __init__(self) -> None:
        self.inner = HybridImages(blurs=2)
        self.positives_are_presented = False

    def pair(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        return self.inner.pair(x, generator)

    def present(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.present(x)

    def in_features(self, shape: tuple[int, ...]) -> int:
        return self.inner.in_features(shape)


@pytest.mark.parametrize("probe_norm", ["model", "std"])
def test_joint_probe_reuses_the_positive_pass_without_changing_training(probe_norm: str) -> None:
    overrides = [
        "model.layers=[12, 10, 8]",
        "model.label=none",
        "negatives.kind=hybrid",
        "negatives.blurs=2",
        "readout.kind=probe",
        "readout.probe_mode=joint",
        "readout.layers=[1, 2]",
        f"readout.probe_norm={probe_norm}",
    ]
    nets = []
    for separate in (False, True):
        torch.manual_seed(0)
        net = FFNet(load_preset("mnist-quick", overrides), (1, 8, 8), 10)
        net.configure(steps_per_epoch=5)
        if separate:
            net.image_negatives = _NotPresented()  # type: ignore[assignment]
        calls: list[int] = []

        def counted(
            x: torch.Tensor,
            level: float,
            calls: list[int] = calls,
            present: Callable[[torch.Tensor, float], torch.Tensor] = net.present,
        ) -> torch.Tensor:
            calls.append(1)  # a neutral pass of its own starts with what the readout sees
            return present(x, level)

        net.present = counted  # type: ignore[method-assign, assignment]
        gen = torch.Generator().manual_seed(1)
        for step in range(3):
            g = torch.Generator().manual_seed(step)
            x = torch.rand(16, 1, 8, 8, generator=g)
            y = torch.randint(0, 10, (16,), generator=g)
            metrics = net.train_step(x, y, None, gen)  # type: ignore[arg-type]
        assert len(calls) == (3 if separate else 0)
        nets.append((net, metrics))
    (a, ma), (b, mb) = nets
    # The probe's features come from the stacked positive and negative batch or from a pass of
    # their own. The chain of sums of a step: the forwards, a readout norm (the std one: two
    # means), the logits over the F features, the log-softmax over the 10 labels, the mean
    # over the 16 images and the gradient's sum over them; each of the 3 steps adds its own.
    fwd = 0
    for layer in a.layers:
        assert isinstance(layer, FFLinear)
        fwd += ff_layer_terms(layer)
    widths = [a.widths[i] for i in a.readout_layers]
    n = 3 * (fwd + 2 * max(widths) + 2 + sum(widths) + 10 + 2 * 16)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert_close_reduced(pa, pb, n)
    assert_close_reduced(ma["probe"], mb["probe"], n)


@pytest.mark.parametrize("local", [False, True])
def test_goodness_of_relu_scores_the_pre_activation_and_passes_the_activation_on(
    local: bool,
) -> None:
    overrides = [
        "model.layers=[12, 10]",
        "model.label=none",
        "negatives.kind=self_contrastive",
        "model.activation=triangle",
        "model.goodness=mean_squares",
        "model.goodness_of=relu",
        "model.loss=threshold_softplus",
        "model.theta=1.0",
        "model.alpha=1.0",
        "model.peer_weight=0",
    ]
    if local:
        overrides.append("model.local=[[3, 3, 1, 0]]")
    net = FFNet(load_preset("mnist-quick", overrides), (1, 6, 6), 10)
    torch.manual_seed(0)
    x = torch.rand(5, 1, 6, 6)
    pos, neg = net.inputs(x.flatten(1), torch.zeros(5, dtype=torch.long), torch.Generator(), None)
    a = torch.cat([pos, neg])
    for i, layer in enumerate(net.layers):
        xn = normalize(a, "rms")
        if isinstance(layer, FFLinear):
            z = F.linear(xn, layer.weight, layer.bias)
        else:
            assert isinstance(layer, FFLocallyConnected2d)
            k, st, pad = layer.kernel_size, layer.stride, layer.padding
            xi = xn.view(len(a), *layer.in_shape)
            z = locally_connected(xi, layer.weight, layer.bias, k, st, pad).flatten(1)
        out, scored = net.run_layer(i, a)
        torch.testing.assert_close(out, F.relu(z - z.mean(1, keepdim=True)))
        torch.testing.assert_close(out, layer(a))  # what the layer passes on
        torch.testing.assert_close(scored, F.relu(z))  # what its goodness is computed on
        with pytest.raises(ValueError, match="goodness_of = 'relu'"):
            net.layer_loss(i, out, 5)  # the output alone is not what is scored
        loss = net.layer_loss(i, out, 5, scored)
        g = F.relu(z).square().mean(1)
        expected = torch.cat([F.softplus(1.0 - g[:5]), F.softplus(g[5:] - 1.0)]).mean()
        # two means of H squares (the library's via a norm: a root squared again, then the
        # division), softplus's exp and log and the mean over the 10 rows; the loss errs by
        # the goodness's error, relative to the goodness
        width = z.shape[1]
        scale = float(expected.detach()) + float(g.detach().max())
        assert_close_reduced(loss, expected, width + 3 + 2 + len(a), scale=scale)
        # the output alone would give another loss: the scores really come from relu(z)
        g_out = out.square().mean(1)
        other = torch.cat([F.softplus(1.0 - g_out[:5]), F.softplus(g_out[5:] - 1.0)]).mean()
        assert not torch.allclose(loss, other)
        a = out


def test_pos_penalty_adds_the_positives_mean_goodness() -> None:
    base = ["model.layers=[12]", "model.label=none", "negatives.kind=hybrid", "model.peer_weight=0"]
    plain = FFNet(load_preset("mnist-quick", base), (1, 6, 6), 10)
    penalised = FFNet(load_preset("mnist-quick", [*base, "model.pos_penalty=0.01"]), (1, 6, 6), 10)
    penalised.load_state_dict(plain.state_dict())
    a = torch.rand(8, 36)
    h = plain.layers[0](a)
    g = h.square().mean(1)  # mnist-quick's goodness: the mean square
    # another mean of squares than the library's (a norm: its root squared again, the
    # division), the mean over the 4 positives, the product and the addition; the loss and
    # the penalty are both positive
    assert_close_reduced(
        penalised.layer_loss(0, h, 4),
        plain.layer_loss(0, h, 4) + 0.01 * g[:4].mean(),
        h.shape[1] + 3 + 4 + 2,
    )


def test_goodness_of_and_pos_penalty_are_validated() -> None:
    with pytest.raises(ConfigError, match="goodness_of"):
        load_preset("mnist-quick", ["model.goodness_of=tanh"])
    with pytest.raises(ConfigError, match="pos_penalty"):
        load_preset("mnist-quick", ["model.pos_penalty=-1"])
    with pytest.raises(ConfigError, match="recurrent"):
        load_preset("rff-mnist", ["model.goodness_of=relu"])
