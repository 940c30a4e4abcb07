"""Moving MNIST and sequential MNIST, and the recurrent nets on sequences."""

from __future__ import annotations

from pathlib import Path

import pytest
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
    net = RecurrentFFNet(config, (28, 1, 28), 10, frames=True)
    x = torch.rand(3, 28, 1, 28)
    y = torch.zeros(3, dtype=torch.long)
    changed = x.clone()
    changed[:, 10:] = 0  # rows the first 4 iterations never see
    assert torch.equal(net.settle(x, y), net.settle(changed, y))
    changed[:, 3] = 0  # a row that iteration 3 sees
    assert not torch.equal(net.settle(x, y), net.settle(changed, y))
    twin = RecurrentBackpropNet(config, (28, 1, 28), 10, frames=True)
    assert twin(x).shape == (3, 10)
    torch.testing.assert_close(twin(x), twin(x.clone().index_fill_(1, torch.arange(10, 28), 0)))


def test_cached_moving_mnist_is_written_once_and_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from forwardforward.data import video

    first = video.cached_moving_mnist(_digits(), tmp_path, frames=6, size=40, seed=5)
    files = list((tmp_path / "moving_mnist").iterdir())
    assert len(files) == 1 and files[0].suffix == ".bin"  # no temporary file left beside it

    def refuse(*args: object, **kwargs: object) -> Split:
        raise AssertionError("generated again instead of read from the cache")

    monkeypatch.setattr(video, "moving_mnist", refuse)
    again = video.cached_moving_mnist(_digits(), tmp_path, frames=6, size=40, seed=5)
    assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)
    assert torch.equal(first.images, moving_mnist(_digits(), frames=6, size=40, seed=5).images)


def test_other_settings_or_digits_get_their_own_cache_file(tmp_path: Path) -> None:
    from forwardforward.data.video import cached_moving_mnist

    cached_moving_mnist(_digits(), tmp_path, frames=6, size=40, seed=5)
    cached_moving_mnist(_digits(), tmp_path, frames=6, size=40, seed=6)
    cached_moving_mnist(_digits(seed=1), tmp_path, frames=6, size=40, seed=5)
    assert len(list((tmp_path / "moving_mnist").iterdir())) == 3


def test_a_corrupt_or_truncated_cache_file_is_caught_and_made_again(tmp_path: Path) -> None:

    from forwardforward.data.video import cached_moving_mnist, read_video_cache
    from forwardforward.errors import DataError

    good = cached_moving_mnist(_digits(), tmp_path, frames=6, size=40, seed=5)
    (path,) = (tmp_path / "moving_mnist").iterdir()
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum mismatch"):
        read_video_cache(path)
    with pytest.warns(UserWarning, match="generating it again"):
        again = cached_moving_mnist(_digits(), tmp_path, frames=6, size=40, seed=5)
    assert torch.equal(again.images, good.images)
    assert torch.equal(read_video_cache(path), good.images)  # the file was repaired

    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated"):
        read_video_cache(path)
    with pytest.raises(DataError, match=r"holds shape \[12, 6, 40, 40\], expected"):
        path.write_bytes(bytes(data))
        read_video_cache(path, (12, 6, 64, 64))
    path.write_bytes(b"something else entirely")
    with pytest.raises(DataError, match="not a forwardforward video cache"):
        read_video_cache(path)


def test_data_cache_option_keeps_moving_mnist_under_the_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from forwardforward.data.fetch import resolve_cache_dir
    from forwardforward.train import sequence_dataset

    monkeypatch.setenv("FORWARDFORWARD_CACHE", str(tmp_path / "gen"))
    assert resolve_cache_dir() == tmp_path / "gen"
    monkeypatch.delenv("FORWARDFORWARD_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_cache_dir() == tmp_path / "xdg" / "forwardforward" / "generated"

    # through a run configuration, on the real MNIST digits (when the data is present)

    from forwardforward.data.catalog import CATALOG
    from forwardforward.data.fetch import resolve_data_dir

    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("FORWARDFORWARD_CACHE", str(tmp_path / "gen"))
    folder = resolve_data_dir() / CATALOG["mnist"].folder
    if not all((folder / f.name).is_file() for f in CATALOG["mnist"].files.values()):
        pytest.skip(f"mnist not found in {folder} (set FORWARDFORWARD_DATA)")
    config = load_preset(
        "rff-moving-mnist", ["data.fraction=0.002", "data.frames=3", "data.canvas=32"]
    )
    assert config.data.cache
    ds = sequence_dataset(config, None, torch.device("cpu"))
    assert ds.train.images.shape == (120, 3, 32, 32) and ds.test.images.shape == (20, 3, 32, 32)
    assert len(list((tmp_path / "gen" / "moving_mnist").iterdir())) == 2
    again = sequence_dataset(config, None, torch.device("cpu"))
    assert torch.equal(again.train.images, ds.train.images)
