"""Tolerances for two floating-point computations of one quantity that sum in different orders.

A fast path and a naive loop, a shared first-layer product and the plain one, a stacked batch
and separate ones, the library and a hand-written reference: equal in exact arithmetic, they
round differently, and by how much depends on the CPU's kernels (vector width, blocking,
threads). A tolerance read off one machine's noise breaks on another, so these helpers take it
from the a-priori bound instead.

A sum of ``n`` terms in any order, a dot product of length ``n`` included, is within
``gamma_n = n u / (1 - n u)`` of the exact sum relative to the sum of the terms' magnitudes,
``u = eps / 2`` being the unit roundoff (Higham, *Accuracy and Stability of Numerical
Algorithms*, 2nd ed., section 3.1). Two computations of it in different orders are thus within
``2 gamma_n`` (about ``n eps``) of that magnitude of each other, and one computation within
``gamma_n`` of an exact (float64) reference.

For a value at the end of a chain of such steps (normalise, multiply, sum the goodness, average
the loss, back-propagate), ``n`` is the sum of the steps' lengths along the chain: to first order
the relative errors of well-conditioned steps add up. Each call site spells out its ``n``.
"""

from __future__ import annotations

from typing import TypedDict

import torch
from torch import Tensor

from forwardforward.layers import FFLinear


class Tolerance(TypedDict):
    """Keyword arguments of ``torch.testing.assert_close`` and ``torch.allclose``."""

    rtol: float
    atol: float


def reduction_bound(dtype: torch.dtype, n: int, *, exact_reference: bool = False) -> float:
    """``2 gamma_n`` for ``dtype``: how far, relative to the magnitude of the terms, two
    computations of a length-``n`` reduction in different orders can be apart (``gamma_n`` with
    ``exact_reference``: one computation against the exact value)."""
    if n < 1:
        raise ValueError(f"a reduction has at least one term, got n={n}")
    u = torch.finfo(dtype).eps / 2
    if n * u >= 1:
        raise ValueError(f"n={n} is too long for a bound in {dtype}")
    gamma = n * u / (1 - n * u)
    return gamma if exact_reference else 2 * gamma


def reduction_tol(
    dtype: torch.dtype, n: int, scale: float | None = None, *, exact_reference: bool = False
) -> Tolerance:
    """``rtol`` and ``atol`` (for ``torch.testing.assert_close``, ``torch.allclose``) from
    :func:`reduction_bound`.

    Without ``scale`` the bound is relative to each value (``atol = 0``): right when the terms
    of every compared value share a sign (sums of squares, means of positive losses), so that
    the sum of their magnitudes is the value itself. With ``scale`` the bound is absolute
    (``rtol = 0``): ``scale`` bounds the sum of the terms' magnitudes of every compared value,
    which cancellation can make much larger than the value (a dot product with mixed signs).
    """
    bound = reduction_bound(dtype, n, exact_reference=exact_reference)
    if scale is None:
        return {"rtol": bound, "atol": 0.0}
    return {"rtol": 0.0, "atol": bound * float(scale)}


def assert_close_reduced(
    actual: Tensor,
    expected: Tensor,
    n: int,
    *,
    scale: float | None = None,
    exact_reference: bool = False,
    msg: str | None = None,
) -> None:
    """``assert_close`` up to :func:`reduction_tol` of the coarser of the two dtypes.

    ``scale`` defaults to the largest magnitude in ``expected``: the normwise form of the bound,
    for a value at the end of a chain whose terms the caller cannot list (a gradient, a loss
    after some training steps). With ``exact_reference`` ``expected`` is an exact (float64)
    reference for ``actual`` and the tolerance is half as wide. ``msg`` is put before
    ``assert_close``'s own message.
    """
    dtype = max(actual.dtype, expected.dtype, key=lambda d: torch.finfo(d).eps)
    if scale is None:
        scale = float(expected.detach().abs().max()) if expected.numel() else 0.0
    tol = reduction_tol(dtype, n, scale, exact_reference=exact_reference)
    if exact_reference:
        actual = actual.to(expected.dtype)

    def message(detail: str) -> str:
        return detail if msg is None else f"{msg}: {detail}"

    torch.testing.assert_close(actual, expected, **tol, msg=message)


def linear_scale(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> float:
    """The largest sum of the terms' magnitudes in ``F.linear(x, weight, bias)``:
    ``max(|x| |W|^T + |b|)``, the ``scale`` of a dot product's bound."""
    mag = x.detach().abs() @ weight.detach().abs().T
    if bias is not None:
        mag = mag + bias.detach().abs()
    return float(mag.max())


def ff_layer_terms(layer: FFLinear) -> int:
    """The length of the chain of roundings in one :class:`FFLinear` forward on an input of
    width ``D``: the input norm (``rms``, ``l2``: the sum of ``D`` squares, its root squared
    again, the scale's few operations and the product, ``D + 7``; ``std``: two means of ``D``
    terms, the centring, the root, the epsilon and the division, ``2 D + 6``), the product with
    the bias (``D + 1``) and the activation (``triangle``: a mean of the ``H`` units and the
    subtraction; ``gelu``, ``silu``: within 2 ulps; ``leaky_relu``: a product)."""
    d, h = layer.in_features, layer.out_features
    norm = {"none": 0, "std": 2 * d + 6}.get(layer.norm, d + 7)
    act = {"triangle": h + 2, "gelu": 2, "silu": 2, "leaky_relu": 1}.get(layer.activation, 0)
    return norm + d + 1 + act


def shared_first_terms(layer: FFLinear, num_classes: int) -> int:
    """:func:`ff_layer_terms` of :meth:`FFLinear.forward_shared` with ``C`` label codes, the
    longer of the two forms: the squared norm adds the labels' part (a product with the codes,
    the product and its sum, the addition: ``2 C + 2``), the product adds the codes' ``C``
    terms and their addition (``C + 1``)."""
    return ff_layer_terms(layer) + 3 * num_classes + 3
