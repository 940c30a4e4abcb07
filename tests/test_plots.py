"""PNG figures: the encoder is valid PNG, and the plot commands write their files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from forwardforward.cli import main
from forwardforward.plots import encode_png, grid


def _decode(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, color = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        if kind == b"IHDR":
            width, height, _, color = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    channels = 1 if color == 0 else 3
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, -1)
    assert (raw[:, 0] == 0).all()  # filter type 0 on every scanline
    return raw[:, 1:].reshape(height, width, channels).squeeze(-1 if channels == 1 else ())


@pytest.mark.parametrize("shape", [(5, 7), (4, 3, 3)])
def test_png_round_trip(shape: tuple[int, ...]) -> None:
    image = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    assert np.array_equal(_decode(encode_png(image)), image)


def test_png_rejects_floats() -> None:
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((2, 2)))  # type: ignore[arg-type]


def test_grid_places_tiles() -> None:
    import torch

    tiles = torch.stack([torch.zeros(2, 2), torch.ones(2, 2)])
    img = grid(tiles, cols=2, pad=1)
    assert img.shape == (4, 7)
    assert (img[1:3, 1:3] == 0).all() and (img[1:3, 4:6] == 255).all()


def test_plot_commands_write_pngs(tmp_path: Path) -> None:
    masks = tmp_path / "masks.png"
    assert main(["plot", "masks", "--out", str(masks), "--dataset", "mnist"]) == 0
    assert _decode(masks.read_bytes()).shape[0] > 28
    run = tmp_path / "run"
    args = ["train", "mnist-quick", "--out", str(run), "--quiet"]
    for s in ["data.dataset=synthetic", "model.layers=[16]", "train.epochs=1", "train.threads=1"]:
        args += ["--set", s]
    assert main(args) == 0
    assert main(["plot", "fields", str(run), "--units", "8"]) == 0
    assert _decode((run / "fields.png").read_bytes()).ndim == 2


def test_plot_settling_of_a_recurrent_run(tmp_path: Path) -> None:
    run = tmp_path / "rec"
    sets = [
        "data.dataset=synthetic",
        "model.kind=recurrent",
        "model.layers=[16]",
        "negatives.kind=random_wrong",
        "negatives.scores=goodness",
        "readout.kind=goodness",
        "train.epochs=1",
        "train.threads=1",
    ]
    args = ["train", "mnist-quick", "--out", str(run), "--quiet"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    assert main(["plot", "settling", str(run), "--images", "3"]) == 0
    assert _decode((run / "settling.png").read_bytes()).ndim == 2


def test_plot_settling_refuses_a_feedforward_run(tmp_path: Path) -> None:
    run = tmp_path / "ff"
    args = ["train", "mnist-quick", "--out", str(run), "--quiet"]
    for s in ["data.dataset=synthetic", "model.layers=[8]", "train.epochs=1", "train.threads=1"]:
        args += ["--set", s]
    assert main(args) == 0
    assert main(["plot", "settling", str(run)]) == 1
