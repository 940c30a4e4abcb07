"""What every Forward-Forward layer shares: input normalisation, activations, the
:class:`FFLayer` base with peer normalisation.

A layer owns its parameters and its input normalisation. Its input is always *detached* before
use, so no gradient crosses a layer boundary: the only gradient a layer sees is the one of its own
local loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from forwardforward.registry import Registry
from forwardforward.stepping import batch_mean

EPS = 1e-8

# ---------------------------------------------------------------------------------------------
# Normalisation of a layer's input: (B, D) -> (B, D), and the same expressed as a scale factor
# computed from the per-sample sum of squares (used to share work across candidate labels).


def rms_scale(sum_sq: Tensor, dim: int) -> Tensor:
    """``1 / (sqrt(mean x^2) + eps)`` from ``sum x^2`` over ``dim`` features (loeweX, Hinton)."""
    return 1.0 / (torch.sqrt(sum_sq / dim) + EPS)


def l2_scale(sum_sq: Tensor, dim: int) -> Tensor:
    """``1 / (||x|| + eps)`` from ``sum x^2`` (mohammadpz, FFLib, nebullvm)."""
    return 1.0 / (torch.sqrt(sum_sq) + EPS)


def no_scale(sum_sq: Tensor, dim: int) -> Tensor:
    """No normalisation."""
    return torch.ones_like(sum_sq)


def std_scale(sum_sq: Tensor, dim: int) -> Tensor:
    """Per-sample standardisation subtracts the mean: it is not a scale factor."""
    raise ValueError("the 'std' norm subtracts each sample's mean: it has no scale form")


NORMS: Registry[Callable[[Tensor, int], Tensor]] = Registry(
    "norm", {"rms": rms_scale, "l2": l2_scale, "none": no_scale, "std": std_scale}
)


def standardize(x: Tensor) -> Tensor:
    """Per-sample standardisation of ``x`` ``(B, D)``: zero mean and unit (population) variance
    over the ``D`` features (SCFF's readout features)."""
    mean = x.mean(1, keepdim=True)
    centred = x - mean
    std = torch.sqrt(centred.square().mean(1, keepdim=True))
    return centred / (std + EPS)


def normalize(x: Tensor, norm: str) -> Tensor:
    """Normalise each row of ``x`` ``(B, D)`` by the named norm: ``rms``, ``l2``, ``none`` or
    ``std`` (zero mean and unit variance per sample, SCFF's layer inputs)."""
    if norm == "none":
        return x
    if norm == "std":
        return standardize(x)
    # one pass over x, no squared temporary
    sum_sq = torch.linalg.vector_norm(x, dim=1, keepdim=True).square()
    scale = NORMS[norm](sum_sq, x.shape[1])
    return x * scale


# ---------------------------------------------------------------------------------------------
# Activations


class _ReLUStraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad


def relu_straight_through(x: Tensor) -> Tensor:
    """ReLU forward, identity backward: units that are off still learn (loeweX ``ReLU_full_grad``,
    Hinton's "pretend there is a gradient"). One pass each way."""
    out: Tensor = _ReLUStraightThrough.apply(x)  # type: ignore[no-untyped-call]
    return out


def _leaky_relu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.01)


def triangle(x: Tensor) -> Tensor:
    """SCFF's "triangle" activation: ``relu(x - mean(x))``, the mean over the units (the last
    dimension), so that only the units above the layer's average pass on."""
    return F.relu(x - x.mean(-1, keepdim=True))


ACTIVATIONS: Registry[Callable[[Tensor], Tensor]] = Registry(
    "activation",
    {
        "relu": F.relu,
        "relu_st": relu_straight_through,
        "leaky_relu": _leaky_relu,
        "gelu": F.gelu,
        "silu": F.silu,
        "triangle": triangle,
    },
)

INITS = ("torch", "normal_fan_in", "normal_fan_out")
PEER_FORMS = ("loss", "pull")


class FFLayer(nn.Module):
    """What every FF layer shares: its input normalisation and peer normalisation (with a
    ``running_mean`` buffer ``(H,)``)."""

    running_mean: Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        norm: str,
        activation: str,
        init: str,
        peer_weight: float,
        peer_momentum: float,
        peer_form: str = "loss",
    ) -> None:
        super().__init__()
        NORMS[norm]  # validate now, not on the first batch
        if peer_form not in PEER_FORMS:
            raise ValueError(
                f"unknown peer_form {peer_form!r}; choose one of: {', '.join(PEER_FORMS)}"
            )
        self.act = ACTIVATIONS[activation]
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; choose one of: {', '.join(INITS)}")
        self.in_features, self.out_features = in_features, out_features
        self.norm, self.activation, self.init = norm, activation, init
        self.peer_weight, self.peer_momentum = peer_weight, peer_momentum
        self.peer_form = peer_form
        self.register_buffer("running_mean", torch.full((out_features,), 0.5))

    @property
    def out_shape(self) -> tuple[int, ...]:
        """The output of one example as the next layer sees it (``(H,)`` unless a layer says
        otherwise, e.g. ``(O, H', W')`` for spatial layers)."""
        return (self.out_features,)

    def preactivation(self, x: Tensor) -> Tensor:
        """``z``, the layer's output before its activation: ``forward(x) = act(z)``. A goodness
        of ``relu(z)`` (SCFF) is computed on it while ``act(z)`` is passed on."""
        raise NotImplementedError

    def activate(self, z: Tensor) -> Tensor:
        """What the layer passes on, from its pre-activation: ``act(z)`` (a layer may pool it)."""
        return self.act(z)

    def forward(self, x: Tensor) -> Tensor:
        """``activate(preactivation(x))``: ``(B, D) -> (B, H)``."""
        return self.activate(self.preactivation(x))

    def scale(self, sum_sq: Tensor) -> Tensor:
        """The normalisation factor of an input whose per-sample sum of squares is ``sum_sq``."""
        return NORMS[self.norm](sum_sq, self.in_features)

    def peer_loss(self, h_pos: Tensor) -> Tensor:
        """Peer normalisation: pull every unit's running mean activity on positive data
        ``(B, H)`` towards the layer's average. Updates the running mean in training mode.

        ``peer_form = "loss"`` (loeweX): the weight times the mean squared deviation of the
        running means from their average, differentiated through this batch's share of them.
        ``"pull"`` (Hinton's Matlab code): every positive activity ``h[b, c]`` gets the constant
        gradient ``weight (r_c - mean(r)) / B``; about ``H / (2 (1 - momentum))`` times stronger.
        """
        running = self.peer_momentum * self.running_mean + (1 - self.peer_momentum) * batch_mean(
            h_pos
        )
        if self.training:
            self.running_mean.copy_(running.detach())
        if self.peer_form == "pull":
            pull = (running - running.mean()).detach()
            return self.peer_weight * (h_pos @ pull).mean()
        return self.peer_weight * (running.mean() - running).square().mean()
