"""The fully connected FF layer."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from forwardforward.layers.core import FFLayer, normalize
from forwardforward.layers.kinds import LayerKind, LayerSettings, Shape, register_layer_kind


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

    def preactivation(self, x: Tensor) -> Tensor:
        """``W norm(detach(x)) + b``: ``(B, D) -> (B, H)``."""
        xn = normalize(x.detach(), self.norm)
        if self.halves:
            half = xn.shape[1] // 2
            xn = xn[:, :half] + xn[:, half:]
        return F.linear(xn, self.weight, self.bias)

    @property
    def shares_products(self) -> bool:
        """Whether :meth:`forward_shared` applies: the input norm is a scale (not ``std``) and
        the input is one image (not SCFF's pair of halves)."""
        return not self.halves and self.norm != "std"

    def forward_shared(self, base: Tensor, rows: Tensor, codes: Tensor, patterns: Tensor) -> Tensor:
        """``act`` of :meth:`preactivation_shared`: :meth:`forward` of inputs that share images."""
        return self.activate(self.preactivation_shared(base, rows, codes, patterns))

    def preactivation_shared(
        self, base: Tensor, rows: Tensor, codes: Tensor, patterns: Tensor
    ) -> Tensor:
        """:meth:`preactivation` of ``R`` inputs that share their images: input ``r`` is
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
            return z * scale
        return torch.addcmul(self.bias.to(z.dtype), z, scale)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"norm={self.norm}, activation={self.activation}, bias={self.bias is not None}, "
            f"peer_weight={self.peer_weight}" + (", halves=True" if self.halves else "")
        )


# ---------------------------------------------------------------------------------------------
# The kind presets name: [[model.stack]] kind = "linear", width = ... (model.layers' entries)


@dataclass
class LinearOptions:
    """A fully connected layer: ``width`` units."""

    width: int

    def check(self) -> None:
        if self.width <= 0:
            raise ValueError(f"width must be positive, got {self.width}")


def _build(
    options: LinearOptions, in_shape: Shape, settings: LayerSettings, first: bool
) -> FFLayer:
    d = math.prod(in_shape)
    return FFLinear(d, options.width, halves=first and settings.pairs, **settings.layer_args())


def _twin(options: LinearOptions, in_shape: Shape) -> tuple[nn.Module, Shape]:
    # the twin's layer takes (B, *in_shape): flatten an image first
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), options.width)), (
        options.width,
    )


LINEAR = register_layer_kind(
    LayerKind("linear", LinearOptions, _build, _twin, "fully connected: act(W norm(x) + b)")
)
