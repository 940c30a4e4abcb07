"""PNG figures: the encoder is valid PNG, and the plot commands write their files."""

from __future__ import annotations

import json
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from forwardforward.cli import main
from forwardforward.errors import ConfigError
from forwardforward.plots import (
    curve_panels,
    curves_png,
    encode_png,
    grid,
    nice_ticks,
    read_run,
    settling_figure,
    settling_png,
    text_mask,
)


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
    assert (run / "settling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _settling_inputs() -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(0)
    return (
        torch.rand(3, 1, 8, 8, generator=gen),
        torch.rand(3, 4, 6, generator=gen),
        torch.tensor([0, 3, 1]),
    )


def test_settling_png_builtin_is_the_grey_grid() -> None:
    images, goodness, labels = _settling_inputs()
    data, used = settling_png(images, goodness, labels, (2, 5), backend="builtin")
    assert used == "builtin"
    assert np.array_equal(_decode(data), settling_figure(images, goodness))


def test_settling_png_matplotlib_draws_a_larger_figure() -> None:
    pytest.importorskip("matplotlib")
    images, goodness, labels = _settling_inputs()
    data, used = settling_png(images, goodness, labels, (2, 5), backend="matplotlib")
    assert used == "matplotlib" and data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    assert width > 3 * 100 and height > 200


def test_settling_png_checks_its_inputs() -> None:
    images, goodness, labels = _settling_inputs()
    with pytest.raises(ValueError, match="2 labels for 3"):
        settling_png(images, goodness, labels[:2], (2, 5))
    with pytest.raises(ConfigError, match="backend"):
        settling_png(images, goodness, labels, (2, 5), backend="svg")


def test_plot_settling_refuses_a_feedforward_run(tmp_path: Path) -> None:
    run = tmp_path / "ff"
    args = ["train", "mnist-quick", "--out", str(run), "--quiet"]
    for s in ["data.dataset=synthetic", "model.layers=[8]", "train.epochs=1", "train.threads=1"]:
        args += ["--set", s]
    assert main(args) == 0
    assert main(["plot", "settling", str(run)]) == 1


# -- training curves ---------------------------------------------------------------------------

BLUE, ORANGE = (0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)  # the first two runs' colours


def _run(folder: Path, kind: str, records: list[dict[str, Any]], name: str = "tiny") -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"kind": kind, "config": {"name": name}}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def _ff_records(phases: int = 1, epochs: int = 3) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for phase in range(phases):
        for e in range(1, epochs + 1):
            rec: dict[str, Any] = {"phase": phase, "epoch": e, "step": 10 * e}
            rec |= {"epoch_seconds": 1.5, f"loss{phase}": 1 / e, "loss1": 0.8 / e}
            rec |= {"ff_acc": 0.8 + 0.05 * e, "probe": 2 / e, "probe_acc": 0.7 + 0.1 * e}
            if e % 2 == 1 or e == epochs:
                rec["test_acc"] = 0.85 + 0.03 * e + 0.01 * phase
            rec["elapsed_seconds"] = 2.0 * (len(out) + 1)
            out.append(rec)
    return out


def _bp_records() -> list[dict[str, Any]]:
    return [
        {"phase": 0, "epoch": e, "step": 10 * e, "epoch_seconds": 1.0, "loss": 0.5 / e}
        | {"test_acc": 0.9 + 0.02 * e, "elapsed_seconds": 1.2 * e}
        for e in range(1, 4)
    ]


@pytest.fixture
def twins(tmp_path: Path) -> tuple[Path, Path]:
    return (
        _run(tmp_path / "ff", "ff", _ff_records()),
        _run(tmp_path / "bp", "backprop", _bp_records()),
    )


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR")
    w, h = struct.unpack(">II", data[16:24])
    return w, h


def _has_colour(rgb: np.ndarray, colour: tuple[int, int, int], tol: int = 12) -> bool:
    return bool((np.abs(rgb[..., :3].astype(int) - colour).max(-1) <= tol).any())


def test_plot_curves_with_matplotlib(twins: tuple[Path, Path], tmp_path: Path) -> None:
    image = pytest.importorskip("matplotlib.image")
    png = tmp_path / "out" / "curves.png"
    assert main(["plot", "curves", str(twins[0]), str(twins[1]), "--out", str(png)]) == 0
    w, h = _png_size(png.read_bytes())
    assert w > 800 and h > 300
    rgb = (image.imread(png)[..., :3] * 255).round().astype(np.uint8)
    assert rgb.shape[:2] == (h, w)
    assert (rgb < 128).mean() > 0.003  # axes, labels, ticks: not blank
    assert _has_colour(rgb, BLUE) and _has_colour(rgb, ORANGE)  # one line per run


def test_plot_curves_falls_back_to_the_builtin_writer(
    twins: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    png = tmp_path / "fallback.png"
    assert main(["plot", "curves", str(twins[0]), str(twins[1]), "--out", str(png)]) == 0
    err = capsys.readouterr().err
    assert err.count("matplotlib not installed") == 1 and "forwardforward[plots]" in err
    rgb = _decode(png.read_bytes())
    assert rgb.shape[2] == 3 and rgb.shape[:2][::-1] == _png_size(png.read_bytes())
    assert (rgb < 255).any(-1).mean() > 0.02
    legend = rgb[: 8 * 2 + 8]  # the runs' legend: a strip above the panels
    assert _has_colour(legend, BLUE, 0) and _has_colour(legend, ORANGE, 0)
    assert _has_colour(legend, (0x26, 0x26, 0x26), 0)  # its labels' ink


def test_plot_curves_backend_matplotlib_when_it_is_missing(
    twins: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["plot", "curves", str(twins[0]), "--backend", "matplotlib"]) == 1
    assert "pip install 'forwardforward[plots]'" in capsys.readouterr().err


def test_plot_curves_default_out_time_axis_and_chosen_metrics(twins: tuple[Path, Path]) -> None:
    args = ["plot", "curves", str(twins[0] / "metrics.jsonl"), str(twins[1]), "--x", "time"]
    args += ["--metric", "test_acc", "--metric", "loss*,probe", "--backend", "builtin"]
    assert main(args) == 0
    rgb = _decode((twins[0] / "curves.png").read_bytes())
    assert _has_colour(rgb, BLUE, 0) and _has_colour(rgb, ORANGE, 0)


def test_curve_panels_labels_units_and_greedy_epochs(tmp_path: Path) -> None:
    greedy = read_run(_run(tmp_path / "g", "ff", _ff_records(phases=2), name="hinton-mnist"))
    twin = read_run(_run(tmp_path / "b", "backprop", _bp_records(), name="hinton-mnist"))
    assert (greedy.label, twin.label) == ("hinton-mnist FF", "hinton-mnist backprop twin")
    acc, losses, train_acc = curve_panels([greedy, twin])
    assert acc.ylabel == "test accuracy (%)" and acc.styles == []
    xs = acc.series[0].xs
    assert xs == sorted(xs) and xs[-1] == 6  # a running epoch count across the two phases
    assert acc.series[0].ys[0] == pytest.approx(88.0)  # accuracies in percent
    assert acc.boundaries == [(0, 3.5)]
    assert losses.styles == ["layer 0", "layer 1", "probe", "cross-entropy (backprop)"]
    assert {s.run for s in losses.series} == {0, 1}
    assert [s.run for s in train_acc.series] == [0, 0]  # the twin logs no training accuracy
    (timed,) = curve_panels([greedy], ["elapsed_seconds"], x="time")
    assert timed.ylabel == "elapsed_seconds (s)" and timed.series[0].xs[0] == 2.0


def test_same_labels_are_told_apart(tmp_path: Path) -> None:
    a = read_run(_run(tmp_path / "seed0", "ff", _ff_records()))
    b = read_run(_run(tmp_path / "seed1", "ff", _ff_records()))
    png, backend = curves_png([a, b], backend="builtin")
    assert backend == "builtin" and png.startswith(b"\x89PNG")
    from forwardforward.plots import _labels

    assert _labels([a, b]) == ["tiny FF (seed0)", "tiny FF (seed1)"]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "no such run folder"),
        ("no_metrics", "not a run folder (no metrics.jsonl"),
        ("empty", "metrics.jsonl: holds no epochs"),
        ("garbled", "metrics.jsonl: line 2 is not valid JSON"),
        ("not_object", "metrics.jsonl: line 1 is not a JSON object"),
    ],
)
def test_plot_curves_refuses_what_is_not_a_run(
    tmp_path: Path, capsys: Any, setup: str, message: str
) -> None:
    run = tmp_path / "run"
    if setup != "missing":
        run.mkdir()
    lines = {
        "empty": "\n",
        "garbled": '{"epoch": 1, "loss0": 1}\n{"epoch": 2, "lo',
        "not_object": "[1]",
    }
    if setup in lines:
        (run / "metrics.jsonl").write_text(lines[setup])
    assert main(["plot", "curves", str(run), "--out", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ff: error: ") and message in err and str(run) in err
    assert not (tmp_path / "x.png").exists()


def test_plot_curves_unknown_metric(twins: tuple[Path, Path], capsys: Any) -> None:
    assert main(["plot", "curves", str(twins[0]), "--metric", "nope"]) == 1
    err = capsys.readouterr().err
    assert "no run has a metric 'nope'" in err and "test_acc" in err


def test_builtin_font_and_ticks() -> None:
    assert text_mask("Ab 1", scale=2).shape == (16, 48)
    assert text_mask("?").sum() == text_mask("\u00e9").sum()  # unknown characters draw as ?
    assert not text_mask(" ").any()
    assert nice_ticks(0.0, 1.0) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert nice_ticks(0.7, 10.3, integer=True) == [2, 4, 6, 8, 10]
    assert nice_ticks(96.6, 98.6) == pytest.approx([97.0, 97.5, 98.0, 98.5])
