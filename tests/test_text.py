"""Aesop's fables as next-character data."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from forwardforward.data import resolve_data_dir
from forwardforward.data.text import (
    ALPHABET,
    START,
    aesop_strings,
    book_text,
    decode,
    encode,
    load_aesop,
    normalise,
    windows,
)
from forwardforward.errors import DataError


def test_alphabet_has_30_symbols() -> None:
    assert len(ALPHABET) == len(set(ALPHABET)) == 30


@given(st.text())
def test_normalise_lands_in_the_alphabet_and_round_trips(text: str) -> None:
    clean = normalise(text)
    assert set(clean) <= set(ALPHABET)
    assert "  " not in clean
    assert decode(encode(clean)) == clean
    assert normalise(clean) == clean


def test_normalise_maps_punctuation() -> None:
    assert normalise("Hello!  World?\r\nIt's: a-b") == "hello. world. its; a b"


def test_encode_rejects_foreign_characters() -> None:
    with pytest.raises(ValueError, match="not in the alphabet"):
        encode("abc!")


def test_windows_and_targets_line_up() -> None:
    strings = torch.arange(2 * 14).view(2, 14) % 30
    ctx, tgt = windows(strings, context=10)
    assert ctx.shape == (2 * 4, 10) and tgt.shape == (8,)
    for k in range(8):
        s, t = divmod(k, 4)
        assert torch.equal(ctx[k], strings[s, t : t + 10])
        assert tgt[k] == strings[s, t + 10]


def test_strings_are_deterministic_and_disjoint() -> None:
    text = normalise("the quick brown fox jumps over the lazy dog. " * 200)
    a, b = aesop_strings(text, 20, 5, 50), aesop_strings(text, 20, 5, 50)
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test)
    assert a.train.shape == (20, 50) and a.test.shape == (5, 50)
    with pytest.raises(DataError, match="strings"):
        aesop_strings(text, 1000, 5, 50)


def test_book_text_needs_the_markers() -> None:
    with pytest.raises(DataError, match="markers"):
        book_text("no gutenberg here")
    end = "*** END OF THIS PROJECT GUTENBERG EBOOK AESOP'S FABLES ***"
    with pytest.raises(DataError, match="start of the fables"):
        book_text(START + "\nsome text\n" + end)


@pytest.mark.integration
def test_real_aesop_strings() -> None:
    root = resolve_data_dir()
    if not (root / "text" / "aesop.txt").is_file():
        pytest.skip(f"Aesop's Fables not found in {root}/text: set FORWARDFORWARD_DATA")
    data = load_aesop(root)
    assert data.train.shape == (248, 100) and data.test.shape == (62, 100)
    train = [decode(s) for s in data.train]
    test = [decode(s) for s in data.test]
    assert not set(train) & set(test)
    assert any("fox" in s for s in train)
    assert not any("chesterton" in s or "gutenberg" in s for s in train + test)
