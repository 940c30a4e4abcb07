"""Moving MNIST and sequential MNIST, and the recurrent nets on sequences."""

from __future__ import annotations

import torch

from forwardforward.config import load_preset
from forwardforward.data.video import moving_mnist, sequential_mnist
from forwardforward.data.vision import Split
from forwardforward.nets.backprop import RecurrentBackpropNet
from forwardforward.nets.recurrent import RecurrentFFNet


def _digits(n: int = 12, seed: int = 0) -> Split:
    gen = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 1, 28, 28, dtype=torch.uint8)
    images[:, :, 4:24, 8:20] = torch.randint(1, 256, (n, 1, 20, 12), generator=gen).to(torch.uint8)
    return Split(images, torch.arange(n) % 10)


def test_moving_mnist_is_deterministic_for_a_seed() -> None:
    a = moving_mnist(_digits(), frames=15, size=48, seed=3)
    b = moving_mnist(_digits(), frames=15, size=48, seed=3)
    c = moving_mnist(_digits(), frames=15, size=48, seed=4)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)
    assert a.images.shape == (12, 15, 48, 48) and torch.equal(a.labels, _digits().labels)


def test_the_digit_stays_whole_inside_the_canvas() -> None:
    digits = _digits()
    video = moving_mnist(digits, frames=40, size=40, seed=1, max_speed=5.0)
    mass = digits.images.flatten(1).sum(1, dtype=torch.long)
    for t in range(40):
        assert torch.equal(video.images[:, t].flatten(1).sum(1, dtype=torch.long), mass)


def test_the_digit_moves() -> None:
    video = moving_mnist(_digits(), frames=10, size=64, seed=2)
    assert all(not torch.equal(v[0], v[-1]) for v in video.images)


def test_sequential_mnist_is_row_by_row() -> None:
    digits = _digits()
    seq = sequential_mnist(digits)
    assert seq.images.shape == (12, 28, 1, 28)
    assert torch.equal(seq.images[:, 5, 0], digits.images[:, 0, 5])


def test_recurrent_nets_read_frame_t_at_iteration_t() -> None:
    config = load_preset(
        "mnist-quick",
        [
            "data.dataset=sequential_mnist",
            "model.kind=recurrent",
            "model.layers=[8]",
            "negatives.kind=random_wrong",
            "negatives.scores=goodness",
            "readout.kind=goodness",
            "recurrent.steps=4",
            "recurrent.window=[0, 4]",
        ],
    )
    net = RecurrentFFNet(config, (28, 1, 28), 10)
    x = torch.rand(3, 28, 1, 28)
    y = torch.zeros(3, dtype=torch.long)
    changed = x.clone()
    changed[:, 10:] = 0  # rows the first 4 iterations never see
    assert torch.equal(net.settle(x, y), net.settle(changed, y))
    changed[:, 3] = 0  # a row that iteration 3 sees
    assert not torch.equal(net.settle(x, y), net.settle(changed, y))
    twin = RecurrentBackpropNet(config, (28, 1, 28), 10)
    assert twin(x).shape == (3, 10)
    torch.testing.assert_close(twin(x), twin(x.clone().index_fill_(1, torch.arange(10, 28), 0)))
