"""The convolutional FF layer: shared filters over the image, then an optional max-pool."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from forwardforward.errors import ConfigError
from forwardforward.layers.core import FFLayer, normalize
from forwardforward.layers.kinds import (
    LayerKind,
    LayerSettings,
    Shape,
    image_shape,
    register_layer_kind,
)


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """The output length of a convolution (or pooling) along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


OUT_NORMS = ("none", "batch", "group")
POOL_KINDS = ("max", "avg")


class FFConv2d(FFLayer):
    """A convolutional FF layer: ``out_norm(pool(act(conv(norm(detach(x))))))``.

    Input and output are flat, so it stacks with the other FF layers: ``(B, C H W) -> (B, O H'
    W')``, channel-major like ``flatten(1)`` of ``(B, O, H', W')``. The input is detached and
    normalised over all its features (as :class:`~forwardforward.layers.FFLinear`); its goodness
    is computed on what it passes on (after pooling), or on ``relu`` of the convolution.

    Args:
        in_shape: ``(C, H, W)`` of the input.
        out_channels: ``O``, the number of filters.
        kernel_size, stride, padding, groups: as in ``nn.Conv2d``.
        pool: a ``pool x pool`` pool (stride ``pool``) after the activation; 0 or 1: none.
        pool_kind: ``max`` (CwComp) or ``avg`` (DeeperForward).
        out_norm: a normalisation of what the layer passes on: ``none``; ``batch``, a
            ``BatchNorm2d`` with its affine parameters (CwComp, eps 1e-4); ``group``, a
            ``GroupNorm`` of ``classes`` groups without parameters, i.e. a LayerNorm inside
            every class's channel group (DeeperForward).
        classes: the number of class channel groups (``out_norm = "group"``).
        detach: False lets gradients through the input (only for a backprop twin).
        norm, activation, bias, init, peer_weight, peer_momentum, peer_form: as for
            :class:`~forwardforward.layers.FFLinear`; ``init`` ``normal_fan_in`` draws
            ``N(0, 1/sqrt(C k k / groups))``, ``normal_fan_out`` ``N(0, 1/sqrt(O k k))``.
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        pool: int = 0,
        *,
        pool_kind: str = "max",
        out_norm: str = "none",
        classes: int = 0,
        detach: bool = True,
        norm: str = "rms",
        activation: str = "relu",
        bias: bool = True,
        init: str = "torch",
        peer_weight: float = 0.0,
        peer_momentum: float = 0.9,
        peer_form: str = "loss",
    ) -> None:
        c, h, w = in_shape
        if c % groups or out_channels % groups:
            raise ValueError(
                f"groups={groups} must divide the input's {c} and the output's {out_channels} "
                "channels"
            )
        out_h, out_w = (
            conv_out(h, kernel_size, stride, padding),
            conv_out(w, kernel_size, stride, padding),
        )
        if out_h < 1 or out_w < 1:
            raise ValueError(
                f"a {kernel_size}x{kernel_size} kernel with stride {stride} and padding {padding} "
                f"does not fit a {h}x{w} input"
            )
        if pool_kind not in POOL_KINDS:
            raise ValueError(f"unknown pool_kind {pool_kind!r}; choose one of: max, avg")
        if out_norm not in OUT_NORMS:
            raise ValueError(
                f"unknown out_norm {out_norm!r}; choose one of: {', '.join(OUT_NORMS)}"
            )
        if out_norm == "group" and (classes < 1 or out_channels % classes):
            raise ValueError(
                f"out_norm = 'group' splits the {out_channels} channels into one group per "
                f"class: {classes} classes do not divide them"
            )
        conv_h, conv_w = out_h, out_w
        if pool > 1:
            out_h, out_w = conv_out(out_h, pool, pool, 0), conv_out(out_w, pool, pool, 0)
            if out_h < 1 or out_w < 1:
                raise ValueError(f"a {pool}x{pool} pool does not fit a {conv_h}x{conv_w} map")
        super().__init__(
            c * h * w, out_channels * out_h * out_w, norm, activation, init, peer_weight,
            peer_momentum, peer_form,
        )  # fmt: skip
        self.in_shape = (c, h, w)
        self.conv_h, self.conv_w = conv_h, conv_w
        self.out_channels, self.out_h, self.out_w = out_channels, out_h, out_w
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.groups, self.pool, self.pool_kind = groups, pool, pool_kind
        self.out_norm, self.classes, self.detach = out_norm, classes, detach
        self.post: nn.Module | None = None
        if out_norm == "batch":
            self.post = nn.BatchNorm2d(out_channels, eps=1e-4)
        elif out_norm == "group":
            self.post = nn.GroupNorm(classes, out_channels, eps=1e-5, affine=False)
        self.weight = nn.Parameter(torch.empty(out_channels, c // groups, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    @property
    def out_shape(self) -> tuple[int, int, int]:
        """``(O, H', W')`` of the output (after pooling)."""
        return self.out_channels, self.out_h, self.out_w

    def reset_parameters(self) -> None:
        fan_in = math.prod(self.weight.shape[1:])
        if self.init == "torch":
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
            if self.bias is not None:
                bound = 1 / math.sqrt(fan_in)
                nn.init.uniform_(self.bias, -bound, bound)
        else:
            fan = (
                fan_in if self.init == "normal_fan_in" else self.out_channels * self.kernel_size**2
            )
            nn.init.normal_(self.weight, 0.0, 1.0 / math.sqrt(fan))
            if self.bias is not None:
                nn.init.zeros_(self.bias)
        self.running_mean.fill_(0.5)

    def preactivation(self, x: Tensor) -> Tensor:
        """The convolution of the normalised input, ``(B, C H W) -> (B, O, H_conv, W_conv)``."""
        b = x.shape[0]
        x = x.detach() if self.detach else x
        xn = normalize(x.reshape(b, -1), self.norm).view(b, *self.in_shape)
        return F.conv2d(xn, self.weight, self.bias, self.stride, self.padding, 1, self.groups)

    def activate(self, z: Tensor) -> Tensor:
        """``out_norm(pool(act(z)))``, flat: ``(B, O, H_conv, W_conv) -> (B, O H' W')``."""
        return self.activate_scored(z)[0]

    def activate_scored(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """What the layer passes on, flat, and its activities before ``out_norm`` (pooled),
        flat too: ``(B, O, H_conv, W_conv) -> ((B, O H' W'), (B, O H' W'))``."""
        h = self.act(z)
        if self.pool > 1:
            pool = F.max_pool2d if self.pool_kind == "max" else F.avg_pool2d
            h = pool(h, self.pool)
        out = h if self.post is None else self.post(h)
        return out.flatten(1), h.flatten(1)

    def extra_repr(self) -> str:
        return (
            f"in_shape={self.in_shape}, out_channels={self.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"groups={self.groups}, pool={self.pool}, pool_kind={self.pool_kind}, "
            f"out_norm={self.out_norm}, norm={self.norm}, "
            f"activation={self.activation}, peer_weight={self.peer_weight}"
        )


# ---------------------------------------------------------------------------------------------
# The kind presets name: [[model.stack]] kind = "conv"


@dataclass
class ConvOptions:
    """``channels`` filters of ``kernel`` x ``kernel``, then an optional pool (``max`` or
    ``avg``) and an optional normalisation of the output (``none``, ``batch``, ``group``)."""

    channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    pool: int = 0
    pool_kind: str = "max"
    out_norm: str = "none"

    def check(self) -> None:
        if min(self.channels, self.kernel, self.stride, self.groups) < 1:
            raise ValueError("channels, kernel, stride and groups must be >= 1")
        if self.padding < 0 or self.pool < 0:
            raise ValueError(f"padding and pool must be >= 0, got {self.padding}, {self.pool}")
        if self.pool_kind not in POOL_KINDS:
            raise ValueError(f"unknown pool_kind {self.pool_kind!r}; choose one of: max, avg")
        if self.out_norm not in OUT_NORMS:
            raise ValueError(
                f"unknown out_norm {self.out_norm!r}; choose one of: {', '.join(OUT_NORMS)}"
            )


def _build(options: ConvOptions, in_shape: Shape, settings: LayerSettings, first: bool) -> FFLayer:
    o = options
    try:
        shape = image_shape(in_shape, "convolutional")
        return FFConv2d(
            shape, o.channels, o.kernel, o.stride, o.padding, o.groups, o.pool,
            pool_kind=o.pool_kind, out_norm=o.out_norm, classes=settings.classes,
            **settings.layer_args(),
        )  # fmt: skip
    except ValueError as exc:
        raise ConfigError(f"conv layer on a {in_shape} input: {exc}") from None


def _twin(options: ConvOptions, in_shape: Shape) -> tuple[nn.Module, Shape]:
    """``nn.Conv2d``, its pool and its batch norm (the activation follows, as in every twin);
    a ``group`` out_norm has no parameters and no counterpart in a plain CNN."""
    o = options
    c, h, w = image_shape(in_shape, "convolutional")
    parts: list[nn.Module] = [
        nn.Conv2d(c, o.channels, o.kernel, o.stride, o.padding, groups=o.groups)
    ]
    out_h, out_w = (
        conv_out(h, o.kernel, o.stride, o.padding),
        conv_out(w, o.kernel, o.stride, o.padding),
    )
    if o.pool > 1:
        out_h, out_w = out_h // o.pool, out_w // o.pool
        parts.append(nn.MaxPool2d(o.pool) if o.pool_kind == "max" else nn.AvgPool2d(o.pool))
    if o.out_norm == "batch":
        parts.append(nn.BatchNorm2d(o.channels, eps=1e-4))
    twin = parts[0] if len(parts) == 1 else nn.Sequential(*parts)
    return twin, (o.channels, out_h, out_w)


CONV = register_layer_kind(
    LayerKind("conv", ConvOptions, _build, _twin, "convolution: shared filters, optional max-pool")
)
