"""Goodness functions, the signed score, the layer losses and the name registries.

Expected values are worked out by hand with ``math`` (never by re-running the same torch
expression), so a wrong sign, a wrong pairing or a wrong mean shows up as a wrong number.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from _tolerance import reduction_tol

from forwardforward.errors import ConfigError
from forwardforward.goodness import GOODNESS, mean_squares, signed, sum_squares
from forwardforward.layers import ACTIVATIONS, NORMS
from forwardforward.losses import LOSSES, linear, log_sigmoid, symba, threshold_softplus
from forwardforward.negatives import NEGATIVES
from forwardforward.registry import Registry


def softplus(z: float) -> float:
    return math.log(1.0 + math.exp(z))


def log_sig(z: float) -> float:
    return -math.log(1.0 + math.exp(-z))


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# Goodness


def test_sum_and_mean_squares_by_hand() -> None:
    h = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    # a squared norm: its root is rounded and squared again, so within an ulp or two of the sum
    assert sum_squares(h).tolist() == pytest.approx([5.0, 9.0], rel=1e-6)
    assert mean_squares(h).tolist() == pytest.approx([2.5, 4.5], rel=1e-6)


@pytest.mark.parametrize("name", ["sum_squares", "mean_squares"])
def test_goodness_gradient_matches_the_formula(name: str) -> None:
    h = torch.randn(5, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(GOODNESS[name], (h,))
    weights = torch.randn(5, dtype=torch.float64)
    (GOODNESS[name](h) * weights).sum().backward()
    per_unit = 1.0 if name == "sum_squares" else 1.0 / 12
    assert h.grad is not None
    assert torch.allclose(h.grad, 2 * per_unit * h.detach() * weights[:, None, None])


def test_triangle_passes_only_the_units_above_the_mean() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 6.0], [0.0, 0.0, 4.0, -4.0]])
    y = ACTIVATIONS["triangle"](x)
    # means 3 and 0: what is left above them
    assert torch.equal(y, torch.tensor([[0.0, 0.0, 0.0, 3.0], [0.0, 0.0, 4.0, 0.0]]))
    # a batched (B, C, H) input takes the mean of each row of units, as (B C, H) would
    z = torch.randn(3, 4, 5)
    assert torch.equal(
        ACTIVATIONS["triangle"](z).flatten(0, 1), ACTIVATIONS["triangle"](z.flatten(0, 1))
    )


def test_straight_through_relu_is_relu_forward_and_identity_backward() -> None:
    x = torch.tensor([[-2.0, -0.5, 0.0, 0.5, 3.0]], requires_grad=True)
    y = ACTIVATIONS["relu_st"](x)
    assert torch.equal(y.detach(), torch.tensor([[0.0, 0.0, 0.0, 0.5, 3.0]]))
    upstream = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    y.backward(upstream)
    assert x.grad is not None and torch.equal(x.grad, upstream)


def test_goodness_flattens_every_dimension_after_the_batch() -> None:
    h = torch.tensor([[[1.0, 2.0], [0.0, 1.0]], [[-1.0, 0.0], [0.0, 3.0]]])  # (2, 2, 2)
    # a squared norm: within an ulp of the exact sum of squares
    assert sum_squares(h).tolist() == pytest.approx([6.0, 10.0], rel=1e-6)
    assert mean_squares(h).tolist() == pytest.approx([1.5, 2.5], rel=1e-6)
    assert sum_squares(h).shape == (2,)


def test_negative_activities_count_by_their_square() -> None:
    h = torch.tensor([[-3.0, 4.0]])
    assert sum_squares(h).tolist() == pytest.approx([25.0], rel=1e-6)
    assert mean_squares(h).tolist() == pytest.approx([12.5], rel=1e-6)


def test_signed_keeps_or_negates() -> None:
    g = torch.tensor([5.0, -1.0, 0.0])
    assert signed(g, True).tolist() == [5.0, -1.0, 0.0]
    assert signed(g, False).tolist() == [-5.0, 1.0, 0.0]


def test_goodness_registry() -> None:
    assert GOODNESS["sum_squares"] is sum_squares
    assert GOODNESS["mean_squares"] is mean_squares


# ---------------------------------------------------------------------------------------------
# Losses, by hand


def test_threshold_softplus_by_hand() -> None:
    pos, neg = t(3.0, 1.0), t(0.5)
    # mean over P + N = 3 terms: softplus(theta - pos) for positives, softplus(neg - theta)
    expected = (softplus(2 - 3) + softplus(2 - 1) + softplus(0.5 - 2)) / 3
    assert threshold_softplus(pos, neg, 2.0, 1.0).item() == pytest.approx(expected, rel=1e-12)


def test_threshold_softplus_alpha_scales_the_logits() -> None:
    pos, neg = t(3.0, 1.0), t(0.5, 2.5)
    a = 2.0
    expected = (
        softplus(a * (2 - 3))
        + softplus(a * (2 - 1))
        + softplus(a * (0.5 - 2))
        + softplus(a * (2.5 - 2))
    ) / 4
    assert threshold_softplus(pos, neg, 2.0, a).item() == pytest.approx(expected, rel=1e-12)


def test_symba_by_hand_one_negative_per_positive() -> None:
    pos, neg = t(3.0, 1.0), t(2.5, 0.0)
    expected = (softplus(-4 * (3 - 2.5)) + softplus(-4 * (1 - 0.0))) / 2
    assert symba(pos, neg, 0.0, 4.0).item() == pytest.approx(expected, rel=1e-12)


def test_symba_pairs_block_k_with_positive_i() -> None:
    """With K negatives per positive, negatives come as K blocks of P: negative k*P + i pairs
    with positive i (the layout of the ``all_wrong`` sampler)."""
    pos = t(3.0, 1.0)
    neg = t(2.5, 0.0, 1.5, 4.0)  # block 0: (2.5, 0.0), block 1: (1.5, 4.0)
    expected = (
        softplus(-4 * (3 - 2.5))  # block 0, positive 0
        + softplus(-4 * (1 - 0.0))  # block 0, positive 1
        + softplus(-4 * (3 - 1.5))  # block 1, positive 0
        + softplus(-4 * (1 - 4.0))  # block 1, positive 1
    ) / 4
    interleaved = (  # the wrong pairing (each positive's K negatives side by side)
        softplus(-4 * (3 - 2.5))
        + softplus(-4 * (3 - 0.0))
        + softplus(-4 * (1 - 1.5))
        + softplus(-4 * (1 - 4.0))
    ) / 4
    got = symba(pos, neg, 0.0, 4.0).item()
    assert got == pytest.approx(expected, rel=1e-12)
    assert got != pytest.approx(interleaved, rel=1e-3)


def test_symba_ignores_theta() -> None:
    pos, neg = t(3.0, 1.0), t(2.5, 0.0)
    assert symba(pos, neg, 0.0, 4.0).item() == symba(pos, neg, 123.0, 4.0).item()


@pytest.mark.parametrize(("p", "n"), [(2, 3), (3, 2), (4, 6)])
def test_symba_needs_a_multiple_of_the_positives(p: int, n: int) -> None:
    with pytest.raises(ValueError, match="multiple"):
        symba(torch.ones(p), torch.zeros(n))


def test_linear_by_hand() -> None:
    pos, neg = t(3.0, 1.0), t(0.5, 1.5, 2.5)
    # alpha * (mean(neg) - mean(pos)) = 2 * (1.5 - 2.0)
    assert linear(pos, neg, 0.0, 2.0).item() == pytest.approx(-1.0, rel=1e-12)


def test_log_sigmoid_by_hand() -> None:
    pos, neg = t(3.0, 1.0), t(0.5, 4.0)
    theta = 2.0
    expected = (
        -(log_sig(3 - theta) + log_sig(1 - theta)) / 2
        + (log_sig(0.5 - theta) + log_sig(4 - theta)) / 2
    )
    assert log_sigmoid(pos, neg, theta, 1.0).item() == pytest.approx(expected, rel=1e-12)


def test_log_sigmoid_alpha() -> None:
    pos, neg = t(3.0), t(0.5)
    a = 3.0
    expected = -log_sig(a * (3 - 2)) + log_sig(a * (0.5 - 2))
    assert log_sigmoid(pos, neg, 2.0, a).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", ["threshold_softplus", "symba", "linear", "log_sigmoid"])
def test_every_loss_pushes_positives_up_and_negatives_down(name: str) -> None:
    pos = t(3.0, 1.0).requires_grad_()
    neg = t(0.5, 2.5).requires_grad_()
    LOSSES[name](pos, neg, 2.0, 1.0).backward()
    assert pos.grad is not None and neg.grad is not None
    assert (pos.grad < 0).all(), pos.grad  # raising a positive score lowers the loss
    assert (neg.grad > 0).all(), neg.grad  # raising a negative score raises the loss


def test_losses_registry_holds_the_four_losses() -> None:
    assert set(LOSSES) == {"threshold_softplus", "symba", "linear", "log_sigmoid"}
    assert LOSSES["symba"] is symba
    assert len(LOSSES) == 4


# ---------------------------------------------------------------------------------------------
# Registries


@pytest.mark.parametrize(
    ("registry", "kind"),
    [
        (LOSSES, "loss"),
        (GOODNESS, "goodness"),
        (NORMS, "norm"),
        (ACTIVATIONS, "activation"),
        (NEGATIVES, "negatives"),
    ],
)
def test_unknown_name_is_a_config_error_listing_the_names(
    registry: Registry[Any], kind: str
) -> None:
    with pytest.raises(ConfigError) as info:
        registry["no_such_thing"]
    msg = str(info.value)
    assert "no_such_thing" in msg and kind in msg
    for name in registry:
        assert name in msg


def test_registry_membership_and_get_follow_the_mapping_contract() -> None:
    """A Registry is a Mapping: ``in`` answers False and ``get`` returns the default for an
    unknown name (Mapping's mixins catch KeyError, so the lookup error must be one)."""
    assert "symba" in LOSSES
    assert "no_such_loss" not in LOSSES
    assert LOSSES.get("no_such_loss") is None
    assert LOSSES.get("symba") is symba


def test_a_negative_threshold_compares_negatives_with_it() -> None:
    """SCFF's two thresholds: softplus(theta - pos) for positives, softplus(neg - theta_neg)
    for negatives, per layer; the inverted objective mirrors both."""
    from forwardforward.losses import LocalObjective

    h = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 3.0], [1.0, 2.0]])  # goodness 4, 2, 9, 5
    obj = LocalObjective("sum_squares", "threshold_softplus", True, [4.0, 1.0], 1.0, [2, 2], 6.0)
    loss, pos, neg = obj(0, h, 2)
    sp = torch.nn.functional.softplus
    expected = sp(torch.tensor([4.0 - 4.0, 4.0 - 2.0, 9.0 - 6.0, 5.0 - 6.0])).mean()
    assert torch.allclose(loss, expected)
    # the scores themselves (a squared norm: within an ulp of the exact sum)
    assert pos.tolist() == pytest.approx([4.0, 2.0], rel=1e-6)
    assert neg.tolist() == pytest.approx([9.0, 5.0], rel=1e-6)
    loss1, _, _ = obj(1, h, 2)  # layer 2: theta 1, theta_neg 6
    assert torch.allclose(loss1, sp(torch.tensor([-3.0, -1.0, 3.0, -1.0])).mean())
    inverted = LocalObjective("sum_squares", "threshold_softplus", False, 4.0, 1.0, [2, 2], 6.0)
    # low goodness is positive: softplus(pos_goodness - 4) and softplus(6 - neg_goodness)
    loss_inv, _, _ = inverted(0, h, 2)
    assert torch.allclose(loss_inv, sp(torch.tensor([0.0, -2.0, -3.0, 1.0])).mean())
    same = LocalObjective("sum_squares", "threshold_softplus", True, 4.0, 1.0, [2, 2])
    assert torch.allclose(same(0, h, 2)[0], threshold_softplus(pos, neg, 4.0, 1.0))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_goodness_of_low_precision_activities_is_summed_in_fp32(dtype: torch.dtype) -> None:
    """Under autocast a layer's output is bf16; its goodness (about the layer's width, compared
    with a threshold) must not be rounded to bf16's 8 bits, and its gradient keeps the dtype."""
    g = torch.Generator().manual_seed(0)
    h = (torch.rand(5, 2000, generator=g) * 2).to(dtype).requires_grad_()
    got = sum_squares(h)
    assert got.dtype == torch.float32
    want = h.detach().double().square().sum(1)
    # an fp32 sum of 2000 squares (exact in fp32), its root and its square, against the exact
    # sum: gamma_2002 = 1.2e-4, far below bf16's rounding (up to 2^-9 = 2e-3)
    tol = reduction_tol(torch.float32, h.shape[1] + 2, exact_reference=True)
    torch.testing.assert_close(got.double(), want, **tol)
    got.sum().backward()
    assert h.grad is not None and h.grad.dtype == dtype
    torch.testing.assert_close(h.grad.float(), 2 * h.detach().float(), rtol=1e-2, atol=0.0)
