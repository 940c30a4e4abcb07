"""How each dataset frames its examples, so that a network is built for its input without
knowing dataset names: plain images, frames over time, or one-hot windows of symbols."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from forwardforward.data.text import ALPHABET
from forwardforward.data.video import SEQUENCES

__all__ = ["Framing", "framing"]


@dataclass(frozen=True)
class Framing:
    """What one example ``(C, H, W)`` of a dataset is.

    Attributes:
        kind: ``image``; ``frames``: the ``C`` channels are time steps, shown one per iteration
            of a recurrent net (Moving MNIST, sequential MNIST); ``text``: a window of ``H``
            symbols, one-hot over ``W`` (Aesop's fables), whose label is the next symbol.
        symbols: the alphabet's size for ``text`` (0 otherwise).
    """

    kind: Literal["image", "frames", "text"] = "image"
    symbols: int = 0

    @property
    def frames(self) -> bool:
        return self.kind == "frames"


def framing(dataset: str) -> Framing:
    """The framing of a dataset named in ``data.dataset``."""
    if dataset in SEQUENCES:
        return Framing("frames")
    if dataset == "aesop":
        return Framing("text", symbols=len(ALPHABET))
    return Framing()
