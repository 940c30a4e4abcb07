"""Negative samplers: never the true label, the documented layouts, score-following hard
negatives, determinism under a seeded generator."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from forwardforward.negatives import (
    NEGATIVES,
    AllWrong,
    Hard,
    Inverse,
    RandomWrong,
    wrong_labels,
)

FAST = settings(max_examples=60, deadline=None)


@st.composite
def labels(draw: st.DrawFn) -> tuple[torch.Tensor, int, int]:
    """``(y (B,), C, seed)`` with B in 1..64, C in 2..20."""
    c = draw(st.integers(2, 20))
    b = draw(st.integers(1, 64))
    y = draw(st.lists(st.integers(0, c - 1), min_size=b, max_size=b))
    seed = draw(st.integers(0, 2**31 - 1))
    return torch.tensor(y, dtype=torch.long), c, seed


def _check_onehot_wrong(y: torch.Tensor, c: int, idx: torch.Tensor, q: torch.Tensor) -> None:
    assert q.shape == (idx.shape[0], c)
    assert q.dtype == torch.float32
    assert ((q == 0) | (q == 1)).all()
    assert (q.sum(1) == 1).all(), "every code must be one-hot"
    assert idx.dtype == torch.long
    assert ((idx >= 0) & (idx < len(y))).all()
    assert (q.argmax(1) != y[idx]).all(), "a negative carries the true label"


@FAST
@given(labels())
def test_wrong_labels_never_true(case: tuple[torch.Tensor, int, int]) -> None:
    y, c, seed = case
    w = wrong_labels(y, c, torch.Generator().manual_seed(seed))
    assert w.shape == y.shape and w.dtype == y.dtype
    assert ((w >= 0) & (w < c)).all()
    assert (w != y).all()


@FAST
@given(labels())
def test_random_wrong_never_true(case: tuple[torch.Tensor, int, int]) -> None:
    y, c, seed = case
    idx, q = RandomWrong()(y, c, torch.Generator().manual_seed(seed), None)
    assert idx.tolist() == list(range(len(y)))
    _check_onehot_wrong(y, c, idx, q)


@FAST
@given(labels())
def test_all_wrong_gives_every_wrong_label_once_in_blocks(
    case: tuple[torch.Tensor, int, int],
) -> None:
    y, c, seed = case
    b = len(y)
    idx, q = AllWrong()(y, c, torch.Generator().manual_seed(seed), None)
    assert idx.shape == ((c - 1) * b,)
    _check_onehot_wrong(y, c, idx, q)
    # C - 1 blocks of B: block k holds images 0..B-1 in order (so it pairs with the positives)
    assert idx.view(c - 1, b).tolist() == [list(range(b))] * (c - 1)
    # every image gets each wrong label exactly once
    per_image = q.view(c - 1, b, c).sum(0)  # (B, C): how often each label was used per image
    expected = 1.0 - torch.nn.functional.one_hot(y, c).float()
    assert torch.equal(per_image, expected)


@FAST
@given(labels(), st.sampled_from(["random", "favour_true", "tiny", "huge"]))
def test_hard_never_true(case: tuple[torch.Tensor, int, int], kind: str) -> None:
    y, c, seed = case
    g = torch.Generator().manual_seed(seed)
    b = len(y)
    if kind == "random":
        scores = torch.randn(b, c, generator=g) * 5
    elif kind == "favour_true":  # the model is very sure of the true label
        scores = torch.zeros(b, c)
        scores[torch.arange(b), y] = 1e6
    elif kind == "tiny":
        scores = torch.full((b, c), -1e30)
    else:  # huge goodness values, as sums of squares over wide layers produce
        scores = torch.rand(b, c, generator=g) * 1e4 + 1e6
    idx, q = Hard()(y, c, g, scores)
    assert idx.tolist() == list(range(b))
    _check_onehot_wrong(y, c, idx, q)


@FAST
@given(labels())
def test_inverse_is_one_minus_onehot(case: tuple[torch.Tensor, int, int]) -> None:
    y, c, seed = case
    idx, q = Inverse()(y, c, torch.Generator().manual_seed(seed), None)
    assert idx.tolist() == list(range(len(y)))
    expected = 1.0 - torch.nn.functional.one_hot(y, c).float()
    assert torch.equal(q, expected)
    assert (q[torch.arange(len(y)), y] == 0).all()


def test_hard_follows_the_scores() -> None:
    c, b = 10, 200
    y = torch.arange(b) % c
    favourite = (y + 3) % c  # a wrong label with a huge score
    scores = torch.zeros(b, c)
    scores[torch.arange(b), favourite] = 20.0
    scores[torch.arange(b), y] = 50.0  # the true label scores even higher, and is never picked
    _, q = Hard()(y, c, torch.Generator().manual_seed(0), scores)
    picked = q.argmax(1)
    assert (picked == favourite).float().mean() > 0.99


def test_hard_with_flat_scores_spreads_over_wrong_labels() -> None:
    c, b = 5, 4000
    y = torch.zeros(b, dtype=torch.long)
    _, q = Hard()(y, c, torch.Generator().manual_seed(0), torch.zeros(b, c))
    counts = q.sum(0)
    assert counts[0] == 0
    assert (counts[1:] > 0.2 * b / (c - 1)).all()  # roughly uniform over the 4 wrong labels


def test_hard_temperature_flattens() -> None:
    c, b = 4, 2000
    y = torch.zeros(b, dtype=torch.long)
    scores = torch.tensor([0.0, 2.0, 0.0, 0.0]).repeat(b, 1)
    sharp = Hard(temperature=0.1)(y, c, torch.Generator().manual_seed(0), scores)[1]
    soft = Hard(temperature=100.0)(y, c, torch.Generator().manual_seed(0), scores)[1]
    assert sharp[:, 1].mean() > 0.99
    assert 0.25 < soft[:, 1].mean() < 0.45  # near uniform over the 3 wrong labels


def test_hard_needs_scores() -> None:
    assert Hard().needs_scores and not RandomWrong().needs_scores
    with pytest.raises(ValueError, match="scores"):
        Hard()(torch.tensor([0]), 3, torch.Generator(), None)


@pytest.mark.parametrize("name", ["random_wrong", "all_wrong", "hard", "inverse"])
def test_seeded_generator_is_deterministic(name: str) -> None:
    sampler = NEGATIVES[name]
    y = torch.randint(0, 7, (50,), generator=torch.Generator().manual_seed(1))
    scores = torch.randn(50, 7, generator=torch.Generator().manual_seed(2))
    a = sampler(y, 7, torch.Generator().manual_seed(42), scores)
    b = sampler(y, 7, torch.Generator().manual_seed(42), scores)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("name", ["random_wrong", "hard"])
def test_random_samplers_use_the_generator(name: str) -> None:
    sampler = NEGATIVES[name]
    y = torch.zeros(200, dtype=torch.long)
    scores = torch.zeros(200, 7)
    g = torch.Generator().manual_seed(42)
    first = sampler(y, 7, g, scores)[1]
    second = sampler(y, 7, g, scores)[1]  # the generator moved on
    other_seed = sampler(y, 7, torch.Generator().manual_seed(43), scores)[1]
    assert not torch.equal(first, second)
    assert not torch.equal(first, other_seed)


def test_random_wrong_is_uniform_over_wrong_labels() -> None:
    y = torch.full((9000,), 2, dtype=torch.long)
    _, q = RandomWrong()(y, 4, torch.Generator().manual_seed(0), None)
    freq = q.mean(0)
    assert freq[2] == 0
    for k in (0, 1, 3):
        assert abs(freq[k].item() - 1 / 3) < 0.03
