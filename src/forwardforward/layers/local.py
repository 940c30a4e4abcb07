"""Locally connected layers: local receptive fields without weight sharing (Hinton's
unsupervised net), the FF layer and its plain twin."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from forwardforward.layers.core import FFLayer, normalize
from forwardforward.layers.kinds import (
    LayerKind,
    LayerSettings,
    Shape,
    image_shape,
    register_layer_kind,
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

    def preactivation(self, x: Tensor) -> Tensor:
        """``(B, C H W) -> (B, O H' W')``, before the activation."""
        b = x.shape[0]
        xn = normalize(x.detach().reshape(b, -1), self.norm).view(b, *self.in_shape)
        z = locally_connected(
            xn, self.weight, self.bias, self.kernel_size, self.stride, self.padding
        )
        return z.reshape(b, self.out_features)

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


# ---------------------------------------------------------------------------------------------
# The kind presets name: [[model.stack]] kind = "local" (model.local's entries)


@dataclass
class LocalOptions:
    """Local receptive fields without weight sharing: ``channels`` filters of ``kernel`` x
    ``kernel`` at every location."""

    channels: int
    kernel: int
    stride: int = 1
    padding: int = 0

    def check(self) -> None:
        if self.channels <= 0 or self.kernel <= 0 or self.stride <= 0 or self.padding < 0:
            raise ValueError(
                "channels, kernel and stride must be positive and padding >= 0, got "
                f"{self.channels}, {self.kernel}, {self.stride}, {self.padding}"
            )


def _build(options: LocalOptions, in_shape: Shape, settings: LayerSettings, first: bool) -> FFLayer:
    o = options
    return FFLocallyConnected2d(
        image_shape(in_shape, "locally connected"),
        o.channels,
        o.kernel,
        o.stride,
        o.padding,
        **settings.layer_args(),
    )


def _twin(options: LocalOptions, in_shape: Shape) -> tuple[nn.Module, Shape]:
    o = options
    twin = LocallyConnected2d(
        image_shape(in_shape, "locally connected"), o.channels, o.kernel, o.stride, o.padding
    )
    return twin, twin.out_shape


LOCAL = register_layer_kind(
    LayerKind("local", LocalOptions, _build, _twin, "locally connected: a filter bank per location")
)
