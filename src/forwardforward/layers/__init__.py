"""Forward-Forward layers, and the layer kinds presets name.

A layer owns its parameters and its input normalisation. Its input is always *detached* before
use, so no gradient crosses a layer boundary: the only gradient a layer sees is the one of its
own local loss. One file per layer kind (``linear.py``, ``local.py``, ...), each registering
its kind (see :mod:`forwardforward.layers.kinds`); every module of this package is imported
here, so a new kind's file is all the package needs.
"""

import importlib
import pkgutil

from forwardforward.layers.conv import FFConv2d
from forwardforward.layers.core import (
    ACTIVATIONS,
    EPS,
    INITS,
    NORMS,
    PEER_FORMS,
    FFLayer,
    l2_scale,
    no_scale,
    normalize,
    relu_straight_through,
    rms_scale,
    standardize,
    std_scale,
    triangle,
)
from forwardforward.layers.kinds import (
    LAYER_KINDS,
    LayerKind,
    LayerSettings,
    layer_stack,
    register_layer_kind,
)
from forwardforward.layers.linear import FFLinear
from forwardforward.layers.local import FFLocallyConnected2d, LocallyConnected2d, locally_connected


def import_kinds(paths: list[str], package: str) -> list[str]:
    """Import every module in ``paths`` (a package's ``__path__``), so that each layer file
    registers its kind; returns the modules' names."""
    names = [m.name for m in pkgutil.iter_modules(paths)]
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names


import_kinds(list(__path__), __name__)

__all__ = [
    "ACTIVATIONS",
    "EPS",
    "INITS",
    "LAYER_KINDS",
    "NORMS",
    "PEER_FORMS",
    "FFConv2d",
    "FFLayer",
    "FFLinear",
    "FFLocallyConnected2d",
    "LayerKind",
    "LayerSettings",
    "LocallyConnected2d",
    "import_kinds",
    "l2_scale",
    "layer_stack",
    "locally_connected",
    "no_scale",
    "normalize",
    "register_layer_kind",
    "relu_straight_through",
    "rms_scale",
    "standardize",
    "std_scale",
    "triangle",
]
