"""How a label enters the input.

Every encoder writes a *label code* ``q`` ``(B, C)`` into a flattened image ``x`` ``(B, D)`` as

    embed(x, q) = base(x) + value(x)[:, None] * (q @ patterns)        # (B, D')

where ``base`` is the image with the label slots cleared, ``value`` the per-image strength of the
label, and ``patterns`` ``(C, D')`` the slots of each class (disjoint from the image part). A
one-hot ``q`` gives a labelled image, ``q = 1/C`` (or 0.1) the neutral label, ``1 - onehot`` the
inverse code of FFLib. Because the label slots are disjoint from ``base``, the first layer's
product with ``base`` is shared by all candidate labels (see
:meth:`forwardforward.nets.feedforward.FFNet.label_scores`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from forwardforward.registry import Registry

VALUES = ("one", "max", "norm")


class LabelEncoder(nn.Module):
    """Base class: subclasses set ``patterns`` and implement :meth:`base`.

    Args:
        num_classes: ``C``.
        in_features: ``D``, the width of a flattened image.
        value: ``one`` writes 1 in the label slots; ``max`` writes the image's maximum
            (mohammadpz's ``x.max()``, taken per image here); ``norm`` writes the image's L2
            norm, so that a one-hot label carries as much energy as the image (a label of 1
            next to an MNIST digit, whose norm is about 9, is about 1% of the layer's input).
    """

    patterns: Tensor

    def __init__(self, num_classes: int, in_features: int, value: str = "one") -> None:
        super().__init__()
        if value not in VALUES:
            raise ValueError(f"unknown label value {value!r}; choose one of: {', '.join(VALUES)}")
        self.num_classes = num_classes
        self.in_features = in_features
        self.value_kind = value

    @property
    def out_features(self) -> int:
        """``D'``, the width of an embedded input."""
        return int(self.patterns.shape[1])

    def base(self, x: Tensor) -> Tensor:
        """The image part ``(B, D')``: ``x`` ``(B, D)`` with every label slot zero."""
        raise NotImplementedError

    def value(self, x: Tensor) -> Tensor:
        """The strength of the label per image, ``(B,)``."""
        if self.value_kind == "max":
            return x.amax(dim=1)
        if self.value_kind == "norm":
            return x.square().sum(dim=1).sqrt()
        return torch.ones(x.shape[0], dtype=x.dtype, device=x.device)

    def embed(self, x: Tensor, q: Tensor) -> Tensor:
        """Write label codes ``q`` ``(B, C)`` into images ``x`` ``(B, D)`` -> ``(B, D')``."""
        return self.base(x) + self.value(x)[:, None] * (q.to(x.dtype) @ self.patterns)

    def onehot(self, y: Tensor) -> Tensor:
        """Label indices ``(B,)`` -> one-hot codes ``(B, C)`` (float)."""
        return F.one_hot(y, self.num_classes).float()

    def embed_labels(self, x: Tensor, y: Tensor) -> Tensor:
        """Images ``(B, D)`` with label indices ``(B,)`` -> ``(B, D')``."""
        return self.embed(x, self.onehot(y))

    def neutral(self, x: Tensor, level: float) -> Tensor:
        """Images with every label slot at ``level`` (``1/C``, or 0.1 as in loeweX)."""
        q = torch.full((x.shape[0], self.num_classes), level, device=x.device)
        return self.embed(x, q)


class OverwritePixels(LabelEncoder):
    """The first ``C`` pixels are replaced by the label code (Hinton, loeweX, mohammadpz)."""

    def __init__(self, num_classes: int, in_features: int, value: str = "one") -> None:
        super().__init__(num_classes, in_features, value)
        patterns = torch.zeros(num_classes, in_features)
        patterns[:, :num_classes] = torch.eye(num_classes)
        self.register_buffer("patterns", patterns, persistent=False)

    def base(self, x: Tensor) -> Tensor:
        return F.pad(x[:, self.num_classes :], (self.num_classes, 0))


class TopRow(LabelEncoder):
    """The top image row is split into ``C`` equal segments; the label lights its segment.

    Args:
        width: the image width ``W`` (the top row is ``x[:, :W]``); ``W >= C``.
    """

    def __init__(
        self, num_classes: int, in_features: int, value: str = "one", width: int = 28
    ) -> None:
        super().__init__(num_classes, in_features, value)
        if width < num_classes:
            raise ValueError(f"top-row labels need width >= {num_classes} classes, got {width}")
        self.width = width
        seg = width // num_classes
        patterns = torch.zeros(num_classes, in_features)
        for c in range(num_classes):
            patterns[c, c * seg : (c + 1) * seg] = 1.0
        self.register_buffer("patterns", patterns, persistent=False)

    def base(self, x: Tensor) -> Tensor:
        return F.pad(x[:, self.width :], (self.width, 0))


class Concatenate(LabelEncoder):
    """The label code is appended after the image (nebullvm, FFLib): ``D' = D + C``."""

    def __init__(self, num_classes: int, in_features: int, value: str = "one") -> None:
        super().__init__(num_classes, in_features, value)
        patterns = torch.zeros(num_classes, in_features + num_classes)
        patterns[:, in_features:] = torch.eye(num_classes)
        self.register_buffer("patterns", patterns, persistent=False)

    def base(self, x: Tensor) -> Tensor:
        return F.pad(x, (0, self.num_classes))


class LabelPlanes(LabelEncoder):
    """The label as a spatial pattern for conv nets: ``C`` extra image planes after the image's
    channels, the label's plane all ones and the others zero, so that every position of a
    convolution sees it (its filters' weights on the planes are a learned class embedding).
    ``D' = D + C H W``; an image of shape ``(K, H, W)`` becomes ``(K + C, H, W)``.

    Args:
        plane: ``H W``, the number of pixels of one image plane.
    """

    def __init__(
        self, num_classes: int, in_features: int, value: str = "one", plane: int = 784
    ) -> None:
        super().__init__(num_classes, in_features, value)
        if plane < 1 or in_features % plane:
            raise ValueError(f"label planes of {plane} pixels do not tile {in_features} features")
        patterns = torch.zeros(num_classes, in_features + num_classes * plane)
        for c in range(num_classes):
            start = in_features + c * plane
            patterns[c, start : start + plane] = 1.0
        self.register_buffer("patterns", patterns, persistent=False)
        self.plane = plane

    def base(self, x: Tensor) -> Tensor:
        return F.pad(x, (0, self.num_classes * self.plane))


class NoLabel(LabelEncoder):
    """No label in the input (unsupervised FF): ``embed(x, q) = x``."""

    def __init__(self, num_classes: int, in_features: int, value: str = "one") -> None:
        super().__init__(num_classes, in_features, value)
        self.register_buffer("patterns", torch.zeros(num_classes, in_features), persistent=False)

    def base(self, x: Tensor) -> Tensor:
        return x


LABEL_ENCODERS: Registry[type[LabelEncoder]] = Registry(
    "label encoder",
    {
        "overwrite": OverwritePixels,
        "top_row": TopRow,
        "concat": Concatenate,
        "planes": LabelPlanes,
        "none": NoLabel,
    },
)
