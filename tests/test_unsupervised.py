"""Unsupervised FF: hybrid-image masks, self-contrastive pairs, locally connected layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from forwardforward.config import load_preset
from forwardforward.layers import FFLocallyConnected2d, LocallyConnected2d, normalize
from forwardforward.negatives import (
    HybridImages,
    SelfContrastive,
    hybrid,
    other_samples,
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


def test_self_contrastive_pairs() -> None:
    x = torch.rand(5, 1, 4, 4)
    pos, neg = SelfContrastive().pair(x, torch.Generator().manual_seed(0))
    flat = x.flatten(1)
    assert torch.equal(pos, torch.cat([flat, flat], 1))
    assert torch.equal(neg[:, :16], flat)
    assert not any(torch.equal(neg[i, 16:], flat[i]) for i in range(5))


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
            expected = F.relu(patch @ layer.weight[loc].T + layer.bias[:, loc])
            torch.testing.assert_close(out[:, :, i, j], expected)


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
