"""Layer kinds: the names a preset's ``[[model.stack]]`` tables use, each with its own options.

A layer kind is registered by the file that defines the layer (see :func:`register_layer_kind`),
with a dataclass of its options, a builder of the FF layer and a builder of its backprop twin.
Every module of this package is imported when the package is, so a new kind is one new file
here (plus its preset and its test): the configuration, the networks and the twins need no
change. A kind defined elsewhere (a user's script) registers the same way before a net is built.

In a preset::

    [[model.stack]]
    kind = "local"
    channels = 16
    kernel = 5

The stack a feed-forward net is built from is ``model.local`` (locally connected layers), then
``model.stack``, then the fully connected ``model.layers``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from forwardforward.layers.core import FFLayer
from forwardforward.registry import Registry

__all__ = [
    "LAYER_KINDS",
    "LayerKind",
    "LayerSettings",
    "Shape",
    "image_shape",
    "layer_stack",
    "register_layer_kind",
]

#: The shape of one example as a layer sees it: ``(C, H, W)`` for images, ``(D,)`` when flat.
Shape = tuple[int, ...]


@dataclass(frozen=True)
class LayerSettings:
    """What every FF layer of a net shares, from the ``model`` section: input normalisation,
    activation, bias, initialisation, peer normalisation; ``pairs``: the first layer takes
    SCFF's pair of images normalised side by side (``negatives.pairing = "shared"``);
    ``classes``: the number of class channel groups (a ``group`` out_norm)."""

    norm: str = "rms"
    activation: str = "relu"
    bias: bool = True
    init: str = "torch"
    peer_weight: float = 0.0
    peer_momentum: float = 0.9
    peer_form: str = "loss"
    pairs: bool = False
    classes: int = 0

    def layer_args(self) -> dict[str, Any]:
        """The keyword arguments every FF layer takes."""
        return {
            "norm": self.norm,
            "activation": self.activation,
            "bias": self.bias,
            "init": self.init,
            "peer_weight": self.peer_weight,
            "peer_momentum": self.peer_momentum,
            "peer_form": self.peer_form,
        }


#: ``(options, in_shape, settings, first) -> the FF layer``
BuildFF = Callable[[Any, Shape, LayerSettings, bool], FFLayer]
#: ``(options, in_shape) -> (the backprop twin's layer, its out_shape)``
BuildTwin = Callable[[Any, Shape], tuple[nn.Module, Shape]]


@dataclass(frozen=True)
class LayerKind:
    """One kind of layer a preset can name.

    Attributes:
        name: the ``kind`` of a ``[[model.stack]]`` table.
        options: a dataclass of the kind's options (the table's other keys); its fields'
            defaults are the options' defaults, and ``check(options, in_shape)`` may add rules.
        build: ``(options, in_shape, settings, first) -> FFLayer``; the layer's ``out_shape``
            is the next layer's ``in_shape``.
        twin: ``(options, in_shape) -> (module, out_shape)``: the same layer for the backprop
            twin, mapping ``(B, *in_shape)`` to ``(B, *out_shape)`` (the twin adds the
            activation).
        summary: one line for ``docs``.
    """

    name: str
    options: type[Any]
    build: BuildFF
    twin: BuildTwin
    summary: str = ""


LAYER_KINDS: Registry[LayerKind] = Registry("layer kind", {})


def image_shape(in_shape: Shape, layer: str) -> tuple[int, int, int]:
    """``in_shape`` as ``(C, H, W)`` for a spatial layer (named ``layer`` in the error)."""
    if len(in_shape) != 3:
        from forwardforward.errors import ConfigError

        raise ConfigError(
            f"a {layer} layer needs an image input (C, H, W), got shape {in_shape} "
            "(it cannot follow a fully connected layer or take a concatenated label)"
        )
    return in_shape[0], in_shape[1], in_shape[2]


def register_layer_kind(kind: LayerKind) -> LayerKind:
    """Make ``kind`` available to presets; returns it."""
    if not dataclasses.is_dataclass(kind.options):
        raise TypeError(f"layer kind {kind.name!r}: options must be a dataclass")
    LAYER_KINDS.add(kind.name, kind)
    return kind


def layer_stack(
    local: list[list[int]], stack: list[dict[str, Any]], widths: list[int]
) -> list[tuple[LayerKind, Any]]:
    """The layers of a feed-forward net, in order, each kind with its parsed options:
    ``model.local`` entries ``[channels, kernel, stride, padding]``, then the ``model.stack``
    tables, then one fully connected layer per ``model.layers`` width.

    Raises:
        ConfigError: an unknown kind, an unknown or ill-typed option (named with its place in
            the stack), or a bad ``model.local`` entry.
    """
    from forwardforward.config import from_dict
    from forwardforward.errors import ConfigError

    tables: list[tuple[str, dict[str, Any]]] = []
    for i, spec in enumerate(local):
        if len(spec) != 4:
            raise ConfigError(
                f"model.local[{i}] is [channels, kernel, stride, padding], got {spec}"
            )
        table = dict(zip(("channels", "kernel", "stride", "padding"), spec, strict=True))
        tables.append((f"model.local[{i}]", {"kind": "local", **table}))
    tables += [(f"model.stack[{i}]", dict(t)) for i, t in enumerate(stack)]
    tables += [(f"model.layers[{i}]", {"kind": "linear", "width": w}) for i, w in enumerate(widths)]
    out: list[tuple[LayerKind, Any]] = []
    for where, table in tables:
        name = table.pop("kind", None)
        if not isinstance(name, str):
            raise ConfigError(f"{where}: give the layer's kind, one of: {', '.join(LAYER_KINDS)}")
        try:
            kind = LAYER_KINDS[name]
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        options = from_dict(kind.options, table, prefix=f"{where}.")
        check: Callable[[], None] | None = getattr(options, "check", None)
        if check is not None:
            try:
                check()
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        out.append((kind, options))
    return out
