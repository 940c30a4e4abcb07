"""Forward-Forward layers.

A layer owns its parameters and its input normalisation. Its input is always *detached* before
use, so no gradient crosses a layer boundary: the only gradient a layer sees is the one of its own
local loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from forwardforward.registry import Registry

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
        self.keep_pre = False
        """Keep the last forward's pre-activation in ``pre`` (for a goodness of ``relu(z)``)."""
        self.pre: Tensor | None = None

    def _activate(self, z: Tensor) -> Tensor:
        if self.keep_pre:
            self.pre = z
        return self.act(z)

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
        running = self.peer_momentum * self.running_mean + (1 - self.peer_momentum) * h_pos.mean(0)
        if self.training:
            self.running_mean.copy_(running.detach())
        if self.peer_form == "pull":
            pull = (running - running.mean()).detach()
            return self.peer_weight * (h_pos @ pull).mean()
        return self.peer_weight * (running.mean() - running).square().mean()


class FFLinear(FFLayer):
    """A fully connected FF layer: ``act(W norm(detach(x)) + b)``.

    Args:
        in_features: ``D``, the width of the input ``(B, D)``.
        out_features: ``H``, the width of the output ``(B, H)``.
        norm: input normalisation, ``rms`` (Hinton, loeweX), ``l2`` (mohammadpz) or ``none``.
        activation: one of :data:`ACTIVATIONS`; ``relu_st`` is the straight-through ReLU.
        bias: whether the layer has a bias.
        init: ``torch`` (``nn.Linear``'s), ``normal_fan_in`` (N(0, 1/sqrt(D)), Hinton's Matlab) or
            ``normal_fan_out`` (N(0, 1/sqrt(H)), loeweX).
        peer_weight: weight of the peer-normalisation loss (0 disables it).
        peer_momentum: momentum of the running mean activity used by peer normalisation.
        peer_form: ``loss`` (loeweX) or ``pull`` (Hinton's Matlab code); see :meth:`peer_loss`.
        halves: the input is two halves ``[a, b]`` normalised together, and one weight matrix
            ``(H, D / 2)`` takes both: ``W (n_a + n_b) + bias`` (SCFF's paired layer).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        norm: str = "rms",
        activation: str = "relu",
        bias: bool = True,
        init: str = "torch",
        peer_weight: float = 0.0,
        peer_momentum: float = 0.9,
        peer_form: str = "loss",
        halves: bool = False,
    ) -> None:
        super().__init__(
            in_features, out_features, norm, activation, init, peer_weight, peer_momentum,
            peer_form,
        )  # fmt: skip
        if halves and in_features % 2:
            raise ValueError(f"halves needs an even input width, got {in_features}")
        self.halves = halves
        fan_in = in_features // 2 if halves else in_features
        self.weight = nn.Parameter(torch.empty(out_features, fan_in))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.init == "torch":
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
            if self.bias is not None:
                bound = 1 / math.sqrt(self.weight.shape[1])
                nn.init.uniform_(self.bias, -bound, bound)
        else:
            fan = self.weight.shape[1] if self.init == "normal_fan_in" else self.out_features
            nn.init.normal_(self.weight, 0.0, 1.0 / math.sqrt(fan))
            if self.bias is not None:
                nn.init.zeros_(self.bias)
        self.running_mean.fill_(0.5)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, D) -> (B, H)``; ``x`` is detached and normalised first."""
        xn = normalize(x.detach(), self.norm)
        if self.halves:
            half = xn.shape[1] // 2
            xn = xn[:, :half] + xn[:, half:]
        return self._activate(F.linear(xn, self.weight, self.bias))

    @property
    def shares_products(self) -> bool:
        """Whether :meth:`forward_shared` applies: the input norm is a scale (not ``std``) and
        the input is one image (not SCFF's pair of halves)."""
        return not self.halves and self.norm != "std"

    def forward_shared(self, base: Tensor, rows: Tensor, codes: Tensor, patterns: Tensor) -> Tensor:
        """:meth:`forward` of ``R`` inputs that share their images: input ``r`` is
        ``base[rows[r]] + codes[r] @ patterns``, ``(R, D) -> (R, H)``.

        ``base`` ``(B, D)`` holds the images with their label slots cleared, ``codes`` ``(R, C)``
        the label codes (times the label's value) and ``patterns`` ``(C, D)`` the label slots,
        disjoint from the image part. The product with the images is computed once per image
        (``B`` rows, not ``R``) and each input adds its label's part, ``codes @ (W patterns^T)``:
        positives and negatives of the same image (or every candidate label at evaluation)
        share it. Its weight gradient is a ``B``-row product too. Equal to ``forward`` on the
        embedded inputs up to rounding.
        """
        if not self.shares_products:
            raise ValueError("forward_shared needs a scale norm and a single input")
        base, codes = base.detach(), codes.detach().to(patterns.dtype)
        # the slots are disjoint from the image: the squared norms add
        label_sq = ((codes @ (patterns @ patterns.T)) * codes).sum(1)
        scale = self.scale(base.square().sum(1).index_select(0, rows) + label_sq)  # (R,)
        z_img = F.linear(base, self.weight)  # (B, H)
        z_lab = F.linear(patterns, self.weight)  # (C, H)
        z = torch.addmm(z_img.index_select(0, rows), codes.to(z_lab.dtype), z_lab)
        scale = scale[:, None].to(z.dtype)
        if self.bias is None:
            return self._activate(z * scale)
        return self._activate(torch.addcmul(self.bias.to(z.dtype), z, scale))

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"norm={self.norm}, activation={self.activation}, bias={self.bias is not None}, "
            f"peer_weight={self.peer_weight}" + (", halves=True" if self.halves else "")
        )


def locally_connected(
    x: Tensor, weight: Tensor, bias: Tensor | None, kernel_size: int, stride: int, padding: int
) -> Tensor:
    """Local receptive fields without weight sharing: ``(B, C, H, W) -> (B, O, L)``.

    ``weight`` is ``(L, O, C k k)``, one filter bank per output location, ``bias`` ``(O, L)``.
    All locations run as one batched product over the unfolded patches.
    """
    patches = F.unfold(x, kernel_size, padding=padding, stride=stride)  # (B, C k k, L)
    z = torch.bmm(patches.permute(2, 0, 1), weight.transpose(1, 2))  # (L, B, O)
    z = z.permute(1, 2, 0)  # (B, O, L)
    return z + bias if bias is not None else z


class FFLocallyConnected2d(FFLayer):
    """A locally connected FF layer: local receptive fields without weight sharing.

    Every output location ``l`` has its own filter bank ``weight[l]`` ``(O, C k k)``, applied to
    its own input patch; all ``L`` locations run as one batched matrix product over unfolded
    patches. Input and output are flat, so it stacks with :class:`FFLinear`:
    ``(B, C H W) -> (B, O H' W')``, channel-major like ``flatten(1)`` of ``(B, O, H', W')``.
    The input is detached and normalised over all its features, as in :class:`FFLinear`.

    Args:
        in_shape: ``(C, H, W)`` of the input.
        out_channels: ``O``, filters per location.
        kernel_size: ``k``, the receptive field is ``k x k``.
        stride, padding: as in ``nn.Unfold``.
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        *,
        norm: str = "rms",
        activation: str = "relu",
        bias: bool = True,
        init: str = "torch",
        peer_weight: float = 0.0,
        peer_momentum: float = 0.9,
        peer_form: str = "loss",
    ) -> None:
        c, h, w = in_shape
        out_h = (h + 2 * padding - kernel_size) // stride + 1
        out_w = (w + 2 * padding - kernel_size) // stride + 1
        if out_h < 1 or out_w < 1:
            raise ValueError(
                f"a {kernel_size}x{kernel_size} receptive field with stride {stride} and padding "
                f"{padding} does not fit a {h}x{w} input"
            )
        super().__init__(
            c * h * w, out_channels * out_h * out_w, norm, activation, init, peer_weight,
            peer_momentum, peer_form,
        )  # fmt: skip
        self.in_shape = (c, h, w)
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.out_h, self.out_w, self.out_channels = out_h, out_w, out_channels
        locations, fan_in = out_h * out_w, c * kernel_size * kernel_size
        self.weight = nn.Parameter(torch.empty(locations, out_channels, fan_in))
        self.bias = nn.Parameter(torch.empty(out_channels, locations)) if bias else None
        self.reset_parameters()

    @property
    def out_shape(self) -> tuple[int, int, int]:
        """``(O, H', W')`` of the output."""
        return self.out_channels, self.out_h, self.out_w

    def reset_parameters(self) -> None:
        fan_in = self.weight.shape[2]
        if self.init == "normal_fan_out":
            std = 1.0 / math.sqrt(self.out_channels)
        else:  # torch's default for a linear layer has std 1/sqrt(3 fan_in); normal: 1/sqrt(fan_in)
            std = 1.0 / math.sqrt(fan_in * (3 if self.init == "torch" else 1))
        nn.init.normal_(self.weight, 0.0, std)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        self.running_mean.fill_(0.5)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C H W) -> (B, O H' W')``."""
        b = x.shape[0]
        xn = normalize(x.detach().reshape(b, -1), self.norm).view(b, *self.in_shape)
        z = locally_connected(
            xn, self.weight, self.bias, self.kernel_size, self.stride, self.padding
        )
        return self._activate(z.reshape(b, self.out_features))

    def extra_repr(self) -> str:
        return (
            f"in_shape={self.in_shape}, out_channels={self.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"norm={self.norm}, activation={self.activation}, peer_weight={self.peer_weight}"
        )


class LocallyConnected2d(nn.Module):
    """A plain locally connected layer (for the backprop twin): ``(B, C, H, W) -> (B, O, H', W')``
    with the parameter layout and initialisation of :class:`FFLocallyConnected2d`."""

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
    ) -> None:
        super().__init__()
        shaped = FFLocallyConnected2d(in_shape, out_channels, kernel_size, stride, padding)
        self.weight = nn.Parameter(shaped.weight.detach().clone())
        self.bias = nn.Parameter(torch.zeros(out_channels, shaped.weight.shape[0]))
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.out_shape = shaped.out_shape

    def forward(self, x: Tensor) -> Tensor:
        z = locally_connected(
            x, self.weight, self.bias, self.kernel_size, self.stride, self.padding
        )
        return z.view(x.shape[0], *self.out_shape)
