"""Aesop's fables as next-character data (Hinton 2022, section 5).

The fables are cut out of the Project Gutenberg file (eBook #11339: the header, licence,
introduction, contents, list of illustrations and title lines dropped) and normalised to a
30-symbol alphabet: the 26 lower-case letters, space, comma, full stop and semicolon. Upper
case is lowered; ``!`` and ``?`` become full stops, ``:`` a semicolon; line breaks, tabs and
hyphens become spaces; every other character (quotes, apostrophes, brackets, digits,
underscores) is dropped; runs of spaces collapse to one.

Strings are consecutive 100-character pieces of that text; Hinton's training set is 248 of
them, and a disjoint set of further pieces is held out for testing. Both are chosen by a seeded
permutation, so they are the same on every machine.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from forwardforward.data.fetch import resolve_data_dir
from forwardforward.data.vision import Split, VisionDataset
from forwardforward.errors import DataError

ALPHABET = "abcdefghijklmnopqrstuvwxyz ,.;"
"""The 30 symbols; a character's index here is its code."""
AESOP_FILE = "text/aesop.txt"
AESOP_SHA256 = "655566e8d3f5a977a3836d1635418b006ea4b92283fc6fc96460ac59e0b71c2a"
START = "*** START OF THIS PROJECT GUTENBERG EBOOK AESOP'S FABLES ***"
END = "*** END OF THIS PROJECT GUTENBERG EBOOK AESOP'S FABLES ***"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
_MAP = str.maketrans({"!": ".", "?": ".", ":": ";", "\n": " ", "\t": " ", "-": " "})


def book_text(raw: str, name: str = "aesop.txt") -> str:
    """The fables: the text between the Project Gutenberg markers, from the first fable on
    (Chesterton's introduction, the contents and the list of illustrations are dropped),
    without title lines (lines with no lower-case letter), with ``\\n`` line ends."""
    raw = raw.replace("\r\n", "\n")
    start, end = raw.find(START), raw.find(END)
    if start < 0 or end < 0 or end < start:
        raise DataError(f"{name}: the Project Gutenberg markers of Aesop's Fables are missing")
    book = raw[start + len(START) : end]
    illustrations = book.find("\nLIST OF ILLUSTRATIONS\n")
    first = book.find("\nAESOP'S FABLES\n", max(illustrations, 0))
    if illustrations < 0 or first < 0:
        raise DataError(f"{name}: the start of the fables was not found")
    kept = [line for line in book[first:].split("\n") if re.search("[a-z]", line)]
    return "\n".join(kept)


def normalise(text: str) -> str:
    """Map ``text`` onto :data:`ALPHABET` (see the module docstring)."""
    text = text.lower().translate(_MAP)
    text = "".join(c for c in text if c in _INDEX)
    return re.sub(" +", " ", text).strip()


def encode(text: str) -> Tensor:
    """Characters of the alphabet -> codes ``(len,)`` int64."""
    try:
        return torch.tensor([_INDEX[c] for c in text], dtype=torch.long)
    except KeyError as exc:
        raise ValueError(f"character {exc.args[0]!r} is not in the alphabet {ALPHABET!r}") from None


def decode(codes: Tensor) -> str:
    """Codes ``(len,)`` -> a string."""
    return "".join(ALPHABET[int(i)] for i in codes)


def windows(strings: Tensor, context: int = 10) -> tuple[Tensor, Tensor]:
    """Every (previous ``context`` characters, next character) pair of strings ``(N, L)``:
    contexts ``(N (L - context), context)`` and targets ``(N (L - context),)``, string by string."""
    ctx = strings.unfold(1, context, 1)[:, :-1]  # (N, L - context, context)
    return ctx.reshape(-1, context), strings[:, context:].reshape(-1)


@dataclass
class TextData:
    """Hinton's next-character strings: ``train`` ``(248, 100)`` and ``test`` codes."""

    train: Tensor
    test: Tensor
    alphabet: str = ALPHABET


def aesop_strings(
    text: str, n_train: int = 248, n_test: int = 62, length: int = 100, seed: int = 0
) -> TextData:
    """Split normalised ``text`` into consecutive ``length``-character pieces and choose
    ``n_train`` training and ``n_test`` held-out pieces by a seeded permutation."""
    codes = encode(text)
    pieces = codes[: len(codes) // length * length].view(-1, length)
    if n_train + n_test > pieces.shape[0]:
        raise DataError(
            f"the text gives {pieces.shape[0]} strings of {length} characters; "
            f"{n_train} + {n_test} were asked for"
        )
    order = torch.randperm(pieces.shape[0], generator=torch.Generator().manual_seed(seed))
    return TextData(pieces[order[:n_train]], pieces[order[n_train : n_train + n_test]])


def load_aesop(
    data_dir: str | os.PathLike[str] | None = None, *, verify: bool = True, **kwargs: int
) -> TextData:
    """Read ``<data dir>/text/aesop.txt`` (checked against its sha256) into :class:`TextData`."""
    path = Path(resolve_data_dir(data_dir)) / AESOP_FILE
    if not path.is_file():
        raise DataError(f"{path}: Aesop's Fables not found (Project Gutenberg eBook #11339)")
    raw = path.read_bytes()
    if verify and hashlib.sha256(raw).hexdigest() != AESOP_SHA256:
        raise DataError(f"{path}: sha256 mismatch: not the expected Project Gutenberg file")
    return aesop_strings(normalise(book_text(raw.decode("utf-8", "replace"), str(path))), **kwargs)


def one_hot_windows(contexts: Tensor) -> Tensor:
    """Contexts ``(N, K)`` -> one-hot "images" ``(N, 1, K, 30)`` uint8 (0 or 255)."""
    eye = torch.eye(len(ALPHABET), dtype=torch.uint8) * 255
    return eye[contexts][:, None]


def aesop_dataset(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    context: int = 10,
    device: str | torch.device = "cpu",
) -> VisionDataset:
    """Next-character windows as a dataset: inputs are the previous ``context`` characters
    one-hot ``(N, 1, context, 30)``, labels the next character. Training windows come from the
    248 training strings in order (string by string, so the first window of string ``s`` is
    ``s * (100 - context)``), test windows from the held-out strings."""
    data = load_aesop(data_dir)
    splits = []
    for strings in (data.train, data.test):
        ctx, nxt = windows(strings, context)
        splits.append(Split(one_hot_windows(ctx), nxt))
    return VisionDataset(
        name="aesop",
        num_classes=len(ALPHABET),
        classes=tuple(ALPHABET),
        train=splits[0],
        val=None,
        test=splits[1],
    ).to(device)
