"""Figures as PNG files.

Most figures here are grids of grey-level tiles (images, masks, receptive fields), written
without a plotting library; the PNG encoder is the standard one (zlib-compressed scanlines).
Training curves (:func:`plot_curves`) are drawn by matplotlib when it is installed (the
``plots`` extra), else by a small built-in rasteriser with axes, ticks, labels and a legend.
"""

from __future__ import annotations

import io
import json
import math
import re
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from forwardforward.checkpoint import atomic_write_bytes
from forwardforward.errors import ConfigError, DataError


def encode_png(image: npt.NDArray[np.uint8]) -> bytes:
    """A grey ``(H, W)`` or RGB ``(H, W, 3)`` uint8 image as PNG bytes."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(
            f"expected a uint8 (H, W) or (H, W, 3) image, got {image.dtype} {image.shape}"
        )
    h, w = image.shape[:2]
    color = 0 if image.ndim == 2 else 2
    rows = image.reshape(h, -1)
    raw = b"".join(b"\x00" + rows[i].tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def write_png(path: Path, image: npt.NDArray[np.uint8]) -> Path:
    """Write ``image`` to ``path`` atomically."""
    data = encode_png(image)
    atomic_write_bytes(path, lambda f: f.write(data))
    return path


def grid(tiles: Tensor, cols: int, pad: int = 2, scale: int = 1) -> npt.NDArray[np.uint8]:
    """Tiles ``(N, H, W)`` with values in ``[0, 1]`` -> one uint8 image, ``cols`` per row."""
    n, h, w = tiles.shape
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), 255, dtype=np.uint8)
    pix = (tiles.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    for k in range(n):
        r, c = divmod(k, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[y : y + h, x : x + w] = pix[k]
    return np.kron(out, np.ones((scale, scale), dtype=np.uint8)) if scale > 1 else out


def normalise_each(t: Tensor) -> Tensor:
    """Scale every tile ``(N, H, W)`` to ``[0, 1]`` on its own range."""
    flat = t.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).view_as(t)


def masks_figure(
    images: Tensor, seed: int = 0, n: int = 8, blurs: int = 6
) -> npt.NDArray[np.uint8]:
    """Rows: image a, image b, the mask, the hybrid negative, for ``n`` pairs of images
    ``(N, 1, H, W)`` in ``[0, 1]``."""
    from forwardforward.negatives import hybrid, other_samples, smooth_masks

    gen = torch.Generator().manual_seed(seed)
    a = images[:n].float()
    b = a[other_samples(a.shape[0], gen, a.device)]
    m = smooth_masks(a.shape[0], (a.shape[-2], a.shape[-1]), gen, blurs)
    h = hybrid(a, b, m)
    rows = torch.cat([a[:, 0], b[:, 0], m[:, 0], h[:, 0]])
    return grid(rows, cols=a.shape[0], scale=3)


def fields_figure(
    layer: torch.nn.Module, in_shape: tuple[int, ...], n: int = 64
) -> npt.NDArray[np.uint8]:
    """The first layer's receptive fields: the input weights of its first ``n`` units (fully
    connected), the filters at the centre location (locally connected) or the shared filters
    (convolutional), each scaled to its own range; the label slots of the input are left out."""
    from forwardforward.layers import FFConv2d, FFLinear, FFLocallyConnected2d

    c, h, w = in_shape[0], in_shape[-2], in_shape[-1]
    if isinstance(layer, FFConv2d):  # the shared filters, first input channel
        filt = layer.weight[:n, 0]
        return grid(normalise_each(filt), cols=min(8, filt.shape[0]), scale=8)
    if isinstance(layer, FFLocallyConnected2d):
        loc = (layer.out_h // 2) * layer.out_w + layer.out_w // 2
        k = layer.kernel_size
        filt = layer.weight[loc, :n].view(-1, layer.in_shape[0], k, k)[:, 0]
        return grid(normalise_each(filt), cols=min(8, filt.shape[0]), scale=8)
    if not isinstance(layer, FFLinear):
        raise TypeError(f"no receptive fields for {type(layer).__name__}")
    weights = layer.weight[:n, : c * h * w].view(-1, c, h, w)[:, 0]
    return grid(normalise_each(weights), cols=8, scale=3)


def _use_matplotlib(backend: str) -> bool:
    """Whether a figure is drawn by matplotlib: ``backend`` is ``auto`` (when it is installed),
    ``matplotlib`` (an error names the missing package) or ``builtin``."""
    if backend not in ("auto", "matplotlib", "builtin"):
        raise ConfigError(f"backend must be auto, matplotlib or builtin, got {backend!r}")
    if backend == "builtin":
        return False
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if backend == "matplotlib":
            raise ConfigError(
                "matplotlib is not installed: pip install 'forwardforward[plots]'"
            ) from None
        return False
    return True


def _column_scaled(goodness: Tensor) -> Tensor:
    """``(N, C, T)`` goodness with every iteration's column scaled to ``[0, 1]`` over the labels."""
    g = goodness.float()
    lo, hi = g.amin(1, keepdim=True), g.amax(1, keepdim=True)
    return (g - lo) / (hi - lo).clamp_min(1e-12)


def settling_figure(images: Tensor, goodness: Tensor, cell: int = 6) -> npt.NDArray[np.uint8]:
    """For a few images ``(N, 1, H, W)``: the image above a heat map of its goodness per
    candidate label (rows) and iteration (columns), ``goodness`` ``(N, C, T)``; every column is
    scaled to its own range, so the brightest cell is the label that wins at that step."""
    n, c, t = goodness.shape
    h, w = images.shape[-2:]
    tile_w = max(w * 2, t * cell)
    tile_h = h * 2 + 4 + c * cell
    out = np.full((tile_h + 4, n * (tile_w + 4) + 4), 255, dtype=np.uint8)
    maps = _column_scaled(goodness)
    for k in range(n):
        x0 = 4 + k * (tile_w + 4)
        img = (images[k, 0].float().clamp(0, 1).cpu().numpy() * 255).astype(np.uint8)
        out[2 : 2 + 2 * h, x0 : x0 + 2 * w] = np.kron(img, np.ones((2, 2), dtype=np.uint8))
        heat = (maps[k].cpu().numpy() * 255).round().astype(np.uint8)
        block = np.kron(heat, np.ones((cell, cell), dtype=np.uint8))
        out[6 + 2 * h : 6 + 2 * h + c * cell, x0 : x0 + t * cell] = block
    return out


def settling_png(
    images: Tensor,
    goodness: Tensor,
    labels: Tensor,
    window: tuple[int, int],
    backend: str = "auto",
) -> tuple[bytes, str]:
    """The settling figure as PNG bytes, and the backend that drew it. For each image ``(N, 1,
    H, W)`` (pixels in ``[0, 1]``) with its true label ``(N,)``: the goodness of every candidate
    label (rows) at every iteration (columns), ``goodness`` ``(N, C, T)``, each column scaled to
    its own range; the iterations ``window = (start, stop)`` (0-based, ``stop`` excluded) are
    the ones the prediction sums. matplotlib draws it with axes, the window outlined, the true
    label marked and the label predicted; without matplotlib, :func:`settling_figure`."""
    n, c, t = goodness.shape
    if images.shape[0] != n or labels.shape[0] != n:
        raise ValueError(
            f"{images.shape[0]} images and {labels.shape[0]} labels for {n} goodness maps"
        )
    if _use_matplotlib(backend):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Rectangle

        g = goodness.float().cpu()
        maps = _column_scaled(g).numpy()
        start, stop = window
        picked = g[:, :, start:stop].sum(2).argmax(1)
        fig = Figure(figsize=(1.9 * n + 0.9, 4.6), dpi=110, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(2, n, squeeze=False, height_ratios=[1, 1.6])
        heat = None
        for k in range(n):
            top, ax = axes[0, k], axes[1, k]
            top.imshow(images[k, 0].float().clamp(0, 1).cpu().numpy(), cmap="gray_r")
            top.set_axis_off()
            y, p = int(labels[k]), int(picked[k])
            mark = "" if p == y else "  (wrong)"
            top.set_title(f"label {y}, FF says {p}{mark}", fontsize=8)
            heat = ax.imshow(maps[k], aspect="auto", cmap="viridis", vmin=0, vmax=1,
                             extent=(0.5, t + 0.5, c - 0.5, -0.5))  # fmt: skip
            ax.add_patch(
                Rectangle(
                    (start + 0.5, -0.5),
                    stop - start,
                    c,
                    fill=False,
                    ec="white",
                    lw=1.5,
                    ls="--",
                )
            )
            ax.set_xticks(range(1, t + 1, max(1, t // 8)))
            ax.set_yticks(range(c))
            ax.tick_params(labelsize=7)
            ax.get_yticklabels()[y].set_fontweight("bold")
            ax.get_yticklabels()[y].set_color("crimson")
            ax.set_xlabel("iteration", fontsize=8)
            if k == 0:
                ax.set_ylabel("candidate label", fontsize=8)
        if heat is not None:
            bar = fig.colorbar(heat, ax=axes[1, :].tolist(), shrink=0.9)
            bar.set_label("goodness, each iteration\nscaled to its range", fontsize=7)
            bar.ax.tick_params(labelsize=7)
        fig.suptitle(
            f"Settling: goodness of every label per iteration (dashed: iterations "
            f"{start + 1}-{stop}, summed to predict; red: the true label)",
            fontsize=9,
        )
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue(), "matplotlib"
    return encode_png(settling_figure(images, goodness)), "builtin"


# -- training curves -------------------------------------------------------------------------
#
# ``ff plot curves RUN ...`` reads each run's metrics.jsonl (one JSON object per epoch, written
# by the trainer) and draws panels of curves, one line per run. matplotlib draws them when it is
# installed (``pip install 'forwardforward[plots]'``); otherwise the small rasteriser below does,
# with axes, ticks, labels and a legend in a built-in 5x8 bitmap font.

MATPLOTLIB_MISSING = (
    "matplotlib not installed: drawing with the built-in writer "
    "(pip install 'forwardforward[plots]' for better figures)"
)

_NOT_METRICS = {"phase", "epoch", "step"}
DEFAULT_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Evaluation accuracy", ("test_acc", "val_acc")),
    ("Training losses", ("loss[0-9]*", "probe", "loss")),
    ("Accuracy on the training batches", ("ff_acc", "probe_acc")),
)
"""The panels drawn by default: a title and the metric names (shell-style patterns) it holds."""

_NAMES = {
    "test_acc": "test",
    "val_acc": "validation",
    "loss": "cross-entropy (backprop)",
    "probe": "probe",
    "ff_acc": "positive > negative",
    "probe_acc": "probe",
}


@dataclass(frozen=True)
class CurveRun:
    """One run folder's metrics: ``records`` are the lines of its metrics.jsonl."""

    path: Path
    label: str
    records: list[dict[str, Any]]


@dataclass(frozen=True)
class Series:
    """One line: run number ``run`` (its colour), metric ``key`` (its line style ``style``)."""

    run: int
    key: str
    style: int
    xs: list[float]
    ys: list[float]


@dataclass(frozen=True)
class Panel:
    title: str
    ylabel: str
    series: list[Series]
    styles: list[str]  # the legend of the line styles, by style index ([] for a single metric)
    boundaries: list[tuple[int, float]] = field(default_factory=list)  # (run, x) phase ends


def read_run(path: str | Path) -> CurveRun:
    """A run folder (or its metrics.jsonl), labelled from its config.json: the preset name and
    ``FF`` or ``backprop twin``."""
    from forwardforward.train import CONFIG, METRICS

    path = Path(path)
    if path.is_file() and path.name == METRICS:
        path = path.parent
    if not path.is_dir():
        raise DataError(f"{path}: no such run folder")
    metrics = path / METRICS
    if not metrics.is_file():
        raise DataError(f"{path}: not a run folder (no {METRICS}; `ff train` writes one)")
    records: list[dict[str, Any]] = []
    for n, line in enumerate(metrics.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{metrics}: line {n} is not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{metrics}: line {n} is not a JSON object of an epoch's metrics")
        records.append(record)
    if not records:
        raise DataError(f"{metrics}: holds no epochs (the run has not finished one yet)")
    label = path.resolve().name
    if (path / CONFIG).is_file():
        try:
            meta = json.loads((path / CONFIG).read_text())
            name, kind = meta["config"]["name"], meta.get("kind")
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"{path / CONFIG}: not a run's config.json ({exc})") from None
        label = f"{name} " + {"ff": "FF", "backprop": "backprop twin"}.get(kind, str(kind))
    return CurveRun(path, label.strip(), records)


def _natural(key: str) -> list[Any]:
    return [(0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", key) if t]


def _name(key: str) -> str:
    if key in _NAMES:
        return _NAMES[key]
    layer = re.fullmatch(r"loss(\d+)", key)
    return f"layer {layer[1]}" if layer else key


def _unit(keys: list[str]) -> str:
    if all(k.endswith("_acc") for k in keys):
        return "%"
    return "s" if all(k.endswith("seconds") for k in keys) else ""


def _ylabel(title: str, keys: list[str]) -> str:
    unit = _unit(keys)
    if len(keys) == 1 and keys[0] in ("test_acc", "val_acc"):
        title = f"{_name(keys[0])} accuracy"
    elif all(re.fullmatch(r"loss\d*|probe", k) for k in keys):
        title = "loss (mean over the epoch)"
    elif all(k.endswith("_acc") for k in keys):
        title = "accuracy"
    elif len(keys) == 1:
        title = keys[0]
    return f"{title} ({unit})" if unit else title


def _xvalue(record: dict[str, Any], index: int, x: str) -> float | None:
    if x == "epoch":
        return float(index + 1)  # a running count over the phases: monotone for greedy runs
    v = record.get("elapsed_seconds")
    return float(v) if isinstance(v, (int, float)) else None


def curve_panels(
    runs: Sequence[CurveRun], metrics: Sequence[str] | None = None, x: str = "epoch"
) -> list[Panel]:
    """The panels to draw: the default ones that some run has data for, or one per entry of
    ``metrics`` (comma-separated metric names or shell patterns, e.g. ``loss*,probe``)."""
    if x not in ("epoch", "time"):
        raise ConfigError(f"x must be 'epoch' or 'time', got {x!r}")
    present = sorted({k for r in runs for rec in r.records for k in rec} - _NOT_METRICS)
    if metrics:
        specs = [(m, tuple(p.strip() for p in m.split(",") if p.strip())) for m in metrics]
    else:
        specs = [(title, patterns) for title, patterns in DEFAULT_PANELS]
    panels = []
    for title, patterns in specs:
        keys: list[str] = []
        for p in patterns:
            keys += [k for k in sorted(present, key=_natural) if fnmatch(k, p) and k not in keys]
        if not keys:
            if metrics:
                raise ConfigError(
                    f"no run has a metric {title!r}; the metrics logged are: {', '.join(present)}"
                )
            continue
        series, used = [], []
        for i, run in enumerate(runs):
            for key in keys:
                pts = [
                    (xv, float(rec[key]) * (100 if key.endswith("_acc") else 1))
                    for j, rec in enumerate(run.records)
                    if isinstance(rec.get(key), (int, float))
                    and math.isfinite(rec[key])
                    and (xv := _xvalue(rec, j, x)) is not None
                ]
                if pts:
                    series.append(
                        Series(i, key, keys.index(key), *map(list, zip(*pts, strict=True)))
                    )
                    used.append(key)
        if not series:
            continue
        keys = [k for k in keys if k in used]
        series = [Series(s.run, s.key, keys.index(s.key), s.xs, s.ys) for s in series]
        bounds = []
        for i, run in enumerate(runs):
            for j in range(len(run.records) - 1):
                if run.records[j].get("phase") != run.records[j + 1].get("phase"):
                    xv = _xvalue(run.records[j], j, x)
                    if xv is not None:
                        bounds.append((i, xv + 0.5 if x == "epoch" else xv))
        styles = [_name(k) for k in keys] if len(keys) > 1 else []
        panels.append(Panel(title, _ylabel(title, keys), series, styles, bounds))
    if not panels:
        raise DataError(
            f"{runs[0].path}: nothing to draw: no metrics logged besides {', '.join(present)}"
        )
    return panels


def _labels(runs: Sequence[CurveRun]) -> list[str]:
    """Run labels, made unique with the folder names where two runs share one."""
    first = [r.label for r in runs]
    labels = [f"{r.label} ({r.path.name})" if first.count(r.label) > 1 else r.label for r in runs]
    return [lab if labels.count(lab) == 1 else f"{lab} #{i + 1}" for i, lab in enumerate(labels)]


def _xlabel(runs: Sequence[CurveRun], x: str) -> str:
    if x == "time":
        return "wall-clock time (s)"
    phases = any(len({rec.get("phase") for rec in r.records}) > 1 for r in runs)
    return "epoch (counted across the layer-by-layer phases)" if phases else "epoch"


def curves_png(
    runs: Sequence[CurveRun],
    metrics: Sequence[str] | None = None,
    x: str = "epoch",
    backend: str = "auto",
) -> tuple[bytes, str]:
    """The curves figure as PNG bytes, and the backend that drew it (``matplotlib`` or
    ``builtin``). ``backend="auto"``: matplotlib when it is installed, else the built-in one."""
    use_matplotlib = _use_matplotlib(backend)
    if not runs:
        raise ConfigError("give at least one run folder")
    panels = curve_panels(runs, metrics, x)
    labels, xlabel = _labels(runs), _xlabel(runs, x)
    if use_matplotlib:
        return _matplotlib_png(panels, labels, xlabel, x == "epoch"), "matplotlib"
    return encode_png(builtin_curves(panels, labels, xlabel)), "builtin"


def plot_curves(
    runs: Sequence[CurveRun | str | Path],
    out: str | Path,
    metrics: Sequence[str] | None = None,
    x: str = "epoch",
    backend: str = "auto",
) -> str:
    """Write the curves of ``runs`` (folders or :class:`CurveRun`) to the PNG file ``out``;
    returns the backend that drew them."""
    loaded = [r if isinstance(r, CurveRun) else read_run(r) for r in runs]
    data, used = curves_png(loaded, metrics, x, backend)
    atomic_write_bytes(Path(out), lambda f: f.write(data))
    return used


_COLORS = [
    "1f77b4",
    "ff7f0e",
    "2ca02c",
    "d62728",
    "9467bd",
    "8c564b",
    "e377c2",
    "7f7f7f",
    "bcbd22",
    "17becf",
]  # matplotlib's tab10, in both backends
_LINESTYLES: tuple[Literal["-", "--", ":", "-."], ...] = ("-", "--", ":", "-.")
_DASHES: tuple[tuple[int, ...], ...] = ((), (10, 6), (3, 5), (12, 5, 3, 5))  # the same, in px


def _matplotlib_png(panels: list[Panel], labels: list[str], xlabel: str, integer_x: bool) -> bytes:
    # the object-oriented API on an Agg canvas: no pyplot, no global backend switch, no window
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(5.2 * cols, 4.1 * rows + 0.4), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    for ax, panel in zip(axes, panels, strict=False):
        for run, bx in panel.boundaries:
            ax.axvline(bx, color=f"#{_COLORS[run % 10]}", linestyle=":", linewidth=0.9, alpha=0.6)
        for s in panel.series:
            ax.plot(
                s.xs,
                s.ys,
                color=f"#{_COLORS[s.run % 10]}",
                linestyle=_LINESTYLES[s.style % 4],
                marker="o" if len(s.xs) <= 25 else None,
                markersize=3.5,
                linewidth=1.7,
            )
        ax.set_title(panel.title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
        if integer_x:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if panel.styles:
            handles = [
                Line2D([], [], color="0.3", linestyle=_LINESTYLES[i % 4], label=name)
                for i, name in enumerate(panel.styles)
            ]
            ax.legend(
                handles=handles,
                loc="upper center",
                bbox_to_anchor=(0.5, -0.17),
                ncol=len(handles) if len(handles) <= 4 else 3,
                frameon=False,
                fontsize="small",
            )
    runs = [Line2D([], [], color=f"#{_COLORS[i % 10]}", linewidth=2.5) for i in range(len(labels))]
    fig.legend(runs, labels, loc="outside upper center", ncol=min(len(labels), 4), frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# The built-in writer's font: printable ASCII from " " to "z", 5 columns of 8 bits per glyph
# (bit 0 the top row, bit 7 the descender), the classic 5x7 LCD font.
_FONT = (
    "0000000000"
    "00005f0000"
    "0007000700"
    "147f147f14"
    "242a7f2a12"
    "2313086462"
    "3649552250"
    "0005030000"
    "001c224100"
    "0041221c00"
    "2a1c7f1c2a"
    "08083e0808"
    "0050300000"
    "0808080808"
    "0060600000"
    "2010080402"
    "3e5149453e"
    "00427f4000"
    "4261514946"
    "2141454b31"
    "1814127f10"
    "2745454539"
    "3c4a494930"
    "0171090503"
    "3649494936"
    "064949291e"
    "0036360000"
    "0056360000"
    "0814224100"
    "1414141414"
    "0041221408"
    "0201510906"
    "324979413e"
    "7e1111117e"
    "7f49494936"
    "3e41414122"
    "7f4141221c"
    "7f49494941"
    "7f09090901"
    "3e41494a3a"
    "7f0808087f"
    "00417f4100"
    "2040413f01"
    "7f08142241"
    "7f40404040"
    "7f020c027f"
    "7f0408107f"
    "3e4141413e"
    "7f09090906"
    "3e4151215e"
    "7f09192946"
    "4649494931"
    "01017f0101"
    "3f4040403f"
    "1f2040201f"
    "3f4038403f"
    "6314081463"
    "0708700807"
    "6151494543"
    "007f414100"
    "0204081020"
    "0041417f00"
    "0402010204"
    "4040404040"
    "0001020400"
    "2054545478"
    "7f48444438"
    "3844444420"
    "384444487f"
    "3854545418"
    "087e090102"
    "0ca4a4a47c"
    "7f08040478"
    "00447d4000"
    "2040443d00"
    "7f10284400"
    "00417f4000"
    "7c04180478"
    "7c08040478"
    "3844444438"
    "fc24242418"
    "18242418fc"
    "7c08040408"
    "4854545420"
    "043f444020"
    "3c4040207c"
    "1c2040201c"
    "3c4030403c"
    "4428102844"
    "1ca0a0a07c"
    "4464544c44"
)


def _glyph(ch: str) -> npt.NDArray[np.bool_]:
    i = ord(ch) - 32 if 32 <= ord(ch) < 32 + len(_FONT) // 10 else ord("?") - 32
    cols = np.frombuffer(bytes.fromhex(_FONT[10 * i : 10 * i + 10]), dtype=np.uint8)
    return ((cols[None, :] >> np.arange(8, dtype=np.uint8)[:, None]) & 1).astype(bool)


def text_mask(text: str, scale: int = 2) -> npt.NDArray[np.bool_]:
    """``text`` in the built-in font: a boolean ``(8 * scale, 6 * len(text) * scale)`` mask."""
    cells = [np.pad(_glyph(c), ((0, 0), (0, 1))) for c in text] or [np.zeros((8, 0), bool)]
    return np.concatenate(cells, axis=1).repeat(scale, 0).repeat(scale, 1)


def _rgb(hex6: str) -> npt.NDArray[np.uint8]:
    return np.frombuffer(bytes.fromhex(hex6), dtype=np.uint8)


def _stamp(
    pix: npt.NDArray[np.uint8],
    mask: npt.NDArray[np.bool_],
    x: float,
    y: float,
    color: npt.NDArray[np.uint8],
    ha: str = "left",
    va: str = "top",
) -> None:
    """Paint ``mask`` on ``pix`` anchored at ``(x, y)``: ``ha`` left/center/right, ``va``
    top/center/bottom; clipped at the edges."""
    h, w = mask.shape
    x0 = round(x - {"left": 0, "center": w / 2, "right": w}[ha])
    y0 = round(y - {"top": 0, "center": h / 2, "bottom": h}[va])
    ys, xs = np.nonzero(mask)
    ys, xs = ys + y0, xs + x0
    keep = (ys >= 0) & (ys < pix.shape[0]) & (xs >= 0) & (xs < pix.shape[1])
    pix[ys[keep], xs[keep]] = color


def _polyline(
    pix: npt.NDArray[np.uint8],
    xs: Sequence[float],
    ys: Sequence[float],
    color: npt.NDArray[np.uint8],
    width: int = 2,
    dash: tuple[int, ...] = (),
) -> None:
    """A line through the points, ``width`` px thick, dashed by the on/off lengths ``dash``."""
    px, py = np.asarray(xs, float), np.asarray(ys, float)
    if len(px) == 1:
        pts_x, pts_y, arc = px, py, np.zeros(1)
    else:
        seg = np.hypot(np.diff(px), np.diff(py))
        steps = np.maximum(np.ceil(seg * 2).astype(int), 1)  # two samples per pixel
        t = np.concatenate([np.arange(n) / n for n in steps] + [np.ones(1)])
        i = np.concatenate([np.full(n, k) for k, n in enumerate(steps)] + [[len(seg) - 1]])
        pts_x = px[i] + t * (px[i + 1] - px[i])
        pts_y = py[i] + t * (py[i + 1] - py[i])
        arc = np.concatenate([[0.0], np.cumsum(seg)])[i] + t * seg[i]
    if dash:
        ends = np.cumsum(dash)
        on = np.searchsorted(ends, arc % ends[-1], side="right") % 2 == 0
        pts_x, pts_y = pts_x[on], pts_y[on]
    r = np.arange(width) - (width - 1) // 2
    mask = np.ones((width, width), bool)
    for x, y in {(round(a), round(b)) for a, b in zip(pts_x, pts_y, strict=True)}:
        _stamp(pix, mask, x + r[0], y + r[0], color)


def nice_ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> list[float]:
    """About ``n`` round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) in
    ``[lo, hi]``."""
    raw = (hi - lo) / max(n, 1)
    if not raw > 0:
        return [lo]
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    if integer:
        step = max(1, round(step))
    first = math.ceil(lo / step - 1e-9) * step
    return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


def _tick_text(values: list[float]) -> list[str]:
    step = values[1] - values[0] if len(values) > 1 else 1.0
    digits = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
    digits += 1 if step > 0 and round(step / 10**-digits, 6) % 1 else 0  # steps of 2.5
    return [f"{v:.{digits}f}" for v in values]


def _limits(values: list[float], pad: float = 0.05) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        span = abs(lo) * 0.05 or 1.0
        return lo - span, hi + span
    return lo - pad * (hi - lo), hi + pad * (hi - lo)


_INK, _GREY, _GRID, _WHITE = _rgb("262626"), _rgb("777777"), _rgb("e6e6e6"), _rgb("ffffff")


def _legend_strip(
    entries: list[tuple[str, npt.NDArray[np.uint8], tuple[int, ...]]], width: int, scale: int
) -> npt.NDArray[np.uint8]:
    """Legend entries (label, colour, dash) flowed left to right in rows, centred."""
    ch, sample, gap = 8 * scale, 16 * scale, 10 * scale
    widths = [sample + 4 * scale + text_mask(lab, scale).shape[1] for lab, _, _ in entries]
    rows: list[list[int]] = [[]]
    for k, w in enumerate(widths):
        used = sum(widths[j] + gap for j in rows[-1])
        if rows[-1] and used + w > width - 2 * gap:
            rows.append([])
        rows[-1].append(k)
    line_h = ch + 4 * scale
    strip = np.full((len(rows) * line_h + 2 * scale, width, 3), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        x = (width - sum(widths[k] + gap for k in row) + gap) / 2
        y = r * line_h + 2 * scale + ch / 2
        for k in row:
            label, color, dash = entries[k]
            _polyline(strip, [x, x + sample], [y, y], color, width=scale + 1, dash=dash)
            _stamp(strip, text_mask(label, scale), x + sample + 4 * scale, y, _INK, va="center")
            x += widths[k] + gap
    return strip


def _builtin_panel(
    panel: Panel, xlabel: str, width: int, height: int, scale: int
) -> npt.NDArray[np.uint8]:
    ch = 8 * scale
    xs = [v for s in panel.series for v in s.xs]
    ys = [v for s in panel.series for v in s.ys]
    xlo, xhi = _limits(xs + [b for _, b in panel.boundaries], 0.03)
    ylo, yhi = _limits(ys)
    integer_x = all(float(v).is_integer() for v in xs) and "epoch" in xlabel
    yticks = nice_ticks(ylo, yhi)
    xticks = nice_ticks(xlo, xhi, integer=integer_x)
    ytext = _tick_text(yticks)
    ytext_w = max(int(text_mask(t, scale).shape[1]) for t in ytext)
    left = ytext_w + 2 * ch + 6 * scale
    top, right, bottom = 2 * ch, 6 * scale, 3 * ch + 4 * scale
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    pix = np.full((height, width, 3), 255, dtype=np.uint8)

    def px(v: float) -> float:
        return x0 + (v - xlo) / (xhi - xlo) * (x1 - x0)

    def py(v: float) -> float:
        return y1 - (v - ylo) / (yhi - ylo) * (y1 - y0)

    for v in xticks:
        pix[y0:y1, round(px(v))] = _GRID
    for v in yticks:
        pix[round(py(v)), x0:x1] = _GRID
    for run, b in panel.boundaries:
        _polyline(pix, [px(b), px(b)], [y0, y1], _rgb(_COLORS[run % 10]), 1, (2, 3))
    for s in panel.series:
        color = _rgb(_COLORS[s.run % 10])
        cx, cy = [px(v) for v in s.xs], [py(v) for v in s.ys]
        _polyline(pix, cx, cy, color, width=scale, dash=_DASHES[s.style % 4])
        if len(s.xs) <= 25:  # markers where the points are few (evaluated epochs)
            dot = np.ones((2 * scale + 2, 2 * scale + 2), bool)
            for a, b in zip(cx, cy, strict=True):
                _stamp(pix, dot, a, b, color, "center", "center")
    pix[y0:y1, [x0, x1]] = _INK  # the frame
    pix[[y0, y1], x0 : x1 + 1] = _INK
    for v, t in zip(xticks, _tick_text(xticks), strict=True):
        pix[y1 : y1 + 2 * scale, round(px(v))] = _INK
        _stamp(pix, text_mask(t, scale), px(v), y1 + 3 * scale, _INK, "center")
    for v, t in zip(yticks, ytext, strict=True):
        pix[round(py(v)), x0 - 2 * scale : x0] = _INK
        _stamp(pix, text_mask(t, scale), x0 - 3 * scale, py(v), _INK, "right", "center")
    _stamp(pix, text_mask(xlabel, scale), (x0 + x1) / 2, height - ch - scale, _INK, "center")
    ylab = np.rot90(text_mask(panel.ylabel, scale))
    _stamp(pix, ylab, scale, (y0 + y1) / 2, _INK, "left", "center")
    _stamp(pix, text_mask(panel.title, scale), (x0 + x1) / 2, ch / 2, _INK, "center")
    if panel.styles:
        dashes = [(name, _GREY, _DASHES[i % 4]) for i, name in enumerate(panel.styles)]
        gap = np.full((2 * scale, width, 3), 255, dtype=np.uint8)
        pix = np.concatenate([pix, gap, _legend_strip(dashes, width, scale)])
    return pix


def builtin_curves(
    panels: list[Panel], labels: list[str], xlabel: str, scale: int = 2
) -> npt.NDArray[np.uint8]:
    """The curves figure drawn without a plotting library, as an RGB uint8 image: panels in
    rows of up to three, the runs' legend above them, each panel's line styles below it."""
    cols = min(3, len(panels))
    width, height = 290 * scale, 210 * scale
    tiles = [_builtin_panel(p, xlabel, width, height, scale) for p in panels]
    tiles += [np.full((height, width, 3), 255, np.uint8)] * (-len(tiles) % cols)
    rows = []
    for r in range(0, len(tiles), cols):
        row = tiles[r : r + cols]
        h = max(t.shape[0] for t in row)
        rows.append(
            np.concatenate(
                [
                    np.pad(t, ((0, h - t.shape[0]), (0, 0), (0, 0)), constant_values=255)
                    for t in row
                ],
                axis=1,
            )
        )
    body = np.concatenate(rows)
    solid: tuple[int, ...] = ()
    runs = [(lab, _rgb(_COLORS[i % 10]), solid) for i, lab in enumerate(labels)]
    legend = _legend_strip(runs, body.shape[1], scale)
    return np.concatenate([legend, body])
