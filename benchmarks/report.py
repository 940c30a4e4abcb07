"""BENCHMARKS.md from the stored benchmark results (``results/*.json``).

    python benchmarks/report.py

Each section shows its figures with the command that produced them and the device; a benchmark
that has not been run is listed as such.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from _common import RESULTS, ROOT

REPORT = ROOT / "BENCHMARKS.md"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _where(result: dict[str, Any], peaks_shown: bool = False) -> str:
    text = (
        f"Device: {result['device']}, {result['threads']} threads, torch {result['torch']}, "
        f"{result['date']}."
    )
    peaks = result.get("matmul_peak_flops_per_s")
    if isinstance(peaks, dict) and not peaks_shown:
        text += (
            " Matmul peak measured in the same process: "
            + ", ".join(
                f"{k} {v / 1e9:.{0 if v >= 1e10 else 1}f} GFLOP/s" for k, v in peaks.items()
            )
            + "."
        )
    if "peak_memory_mb" in result:  # results stored before peak memory was measured lack it
        text += f" Peak memory of the process: {result['peak_memory_mb']:.0f} MiB."
    return text


def speed_section(result: dict[str, Any] | None) -> list[str]:
    lines = ["## Step time: FF against its backprop twin", ""]
    if result is None:
        return [*lines, "Not run yet: `python benchmarks/speed.py`.", ""]
    peaks = ", ".join(
        f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in result["matmul_peak_flops_per_s"].items()
    )
    lines += [
        "FF and backprop steps alternate in one process (both see the same machine load); the",
        f"median of {result['steps']} steps is kept. Matmul peak (2048x2000 @ 2000x2000) measured",
        f"in the same process: {peaks}. {_where(result, peaks_shown=True)}",
        "",
        f"Command: `{result['command']}`",
        "",
        "| preset | layers | batch | dtype | FF step | backprop step | FF / backprop "
        "| FLOP ratio | FF GFLOP/s | % of peak |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        # the arithmetic bound: FF's matmul FLOPs over backprop's
        bound = (r["ff_flops_per_s"] * r["ff_step_s"]) / (
            r["backprop_flops_per_s"] * r["backprop_step_s"]
        )
        lines.append(
            f"| {r['preset']} | {r['layers']} | {r['batch']} | {r['dtype']} "
            f"| {r['ff_step_s'] * 1e3:.1f} ms | {r['backprop_step_s'] * 1e3:.1f} ms "
            f"| {r['ratio']:.2f} | {bound:.2f} | {r['ff_flops_per_s'] / 1e9:.0f} "
            f"| {100 * r['ff_fraction_of_peak']:.0f}% |"
        )
    lines += ["", *(f"Skipped {d}: {why}." for d, why in result.get("skipped", {}).items())]
    lines += [
        "",
        "The FF step is the bare step (random wrong labels, no probe): 2B rows forward and",
        "weight gradients, about 4/3 of a backprop step's matmul work on B rows, less the",
        "first layer's: a positive and its negative show the same image, so the first layer",
        "multiplies each image once and adds each row's label part (`FFLinear.forward_shared`).",
        "FLOPs are counted from the shapes of the products done; the FLOP ratio is FF's count",
        "over backprop's, the step-time ratio an implementation at the same fraction of peak as",
        "backprop would reach. The step-time ratio moves by a few hundredths from run to run on",
        "this shared machine.",
        "",
    ]
    return lines


def tta_section(
    result: dict[str, Any] | None, title: str = "Time to accuracy", how: str = ""
) -> list[str]:
    lines = [f"## {title}", ""]
    if result is None:
        return [*lines, f"Not run yet: `python benchmarks/time_to_accuracy.py{how}`.", ""]
    target = 100 * result["target"]
    lines += [
        "Wall time from start, data loading and per-epoch test evaluation included, until the",
        f"MNIST test accuracy first reaches {target:.1f}%: `{result['preset']}` and its backprop",
        f"twin. {_where(result)}",
        "",
        f"Command: `{result['command']}`",
        "",
        f"| run | time to {target:.1f}% | epoch | final test accuracy | whole run |",
        "|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        got = r["seconds_to_target"]
        lines.append(
            f"| {result['preset']} {r['kind']} | {f'{got:.1f} s' if got else 'not reached'} "
            f"| {r['epoch_reached'] or ''} | {100 * r['final_test_acc']:.2f}% "
            f"| {r['wall_seconds']:.0f} s |"
        )
    speedup = result.get("speedup_vs_reference")
    if speedup:
        lines += [
            "",
            f"Against the {result['reference_seconds'] / 60:.0f} minutes of the popular 3x1000 "
            f"recipe (100 epochs to 98.55% on this machine): {speedup:.0f}x faster.",
        ]
    return [*lines, ""]


def eval_section(result: dict[str, Any] | None) -> list[str]:
    lines = ["## Evaluation speed", ""]
    if result is None:
        return [*lines, "Not run yet: `python benchmarks/eval_speed.py`.", ""]
    peaks = result["matmul_peak_flops_per_s"]
    if not isinstance(peaks, dict):  # results stored before bf16 was timed: fp32 only
        peaks = {"fp32": peaks}
    accuracy = any("test_acc" in r for r in result["rows"])
    lines += [
        f"`{result['preset']}` ({result['layers']}, goodness read from layers "
        f"{result['readout_layers']}), {result.get('weights', 'freshly initialised nets')}; "
        f"{result['n_images']} images ({result['images']}), {result['batch']} per call. Matmul "
        "peak (2048x2000 @ 2000x2000) measured in the same process: "
        + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items())
        + f". {_where(result, peaks_shown=True)}",
        "",
        f"Command: `{result['command']}`",
        "",
        "| readout | dtype | time | time at the matmul peak | images/s | GFLOP/s | % of peak"
        + (" | test accuracy |" if accuracy else " |"),
        "|---|---|---|---|---|---|---|" + ("---|" if accuracy else ""),
    ]
    for r in result["rows"]:
        dtype = r.get("dtype", "fp32")
        # the readout's arithmetic (counted from the shapes) run at the dense-product peak of
        # its dtype: no implementation in that dtype on this device can be faster
        floor = r["flops_per_s"] * r["seconds"] / peaks[dtype]
        acc = f" {100 * r['test_acc']:.2f}% |" if "test_acc" in r else (" |" if accuracy else "")
        lines.append(
            f"| {r['readout']} | {dtype} | {r['seconds']:.2f} s | {floor:.2f} s "
            f"| {r['images_per_s']:.0f} | {r['flops_per_s'] / 1e9:.0f} "
            f"| {100 * r['fraction_of_peak']:.0f}% |{acc}"
        )
    lines += [
        "",
        "The batched try-all readout computes the first layer's product with the image once and",
        "adds each label's part; the deeper layers see every (image, label) pair. bf16 runs the",
        'products under autocast and sums goodness in fp32. "Time at the matmul peak" is the',
        "readout's FLOP count divided by the measured peak of its dtype: the floor for any",
        "implementation in that dtype on this device.",
        "",
    ]
    return lines


def memory_section(result: dict[str, Any] | None) -> list[str]:
    lines = ["## Memory against depth: a conv FF net and its backprop twin", ""]
    if result is None:
        return [*lines, "Not run yet: `python benchmarks/conv_memory.py`.", ""]
    rows = {(r["depth"], r["kind"]): r for r in result["rows"]}
    depths = sorted({r["depth"] for r in result["rows"]})
    one = result["rows"][0]["one_activation_mb"]
    lines += [
        f"Peak memory of three training steps, less what the process held before them; every "
        f"layer a 3x3 convolution of {result['channels']} channels (28x28, no pooling) and a "
        f"batch norm, batch {result['batch']}, {result['precision']}, channel-wise FF against "
        f"the same layers trained end to end. One layer's output is {one:.0f} MiB. "
        f"{_where(result)}",
        "",
        f"Command: `{result['command']}`",
        "",
        "| layers | FF peak | backprop peak | backprop / FF |",
        "|---|---|---|---|",
    ]
    for d in depths:
        ff, bp = rows[(d, "ff")]["peak_mb"], rows[(d, "backprop")]["peak_mb"]
        lines.append(f"| {d} | {ff:.0f} MiB | {bp:.0f} MiB | {bp / max(ff, 1e-9):.1f} |")
    lines += [
        "",
        "An FF layer's gradient is taken as soon as its loss is known and its graph is freed, so",
        "only one layer's activations are alive at a time; backprop keeps every layer's until",
        "the backward pass.",
        "",
    ]
    return lines


def conv_eval_section(result: dict[str, Any] | None) -> list[str]:
    lines = ["## Evaluation speed of a conv FF net: channel groups against try-all labels", ""]
    if result is None:
        return [*lines, "Not run yet: `python benchmarks/conv_eval_speed.py`.", ""]
    lines += [
        f"The 10,000 MNIST test images, 1,000 per call, {result['precision']}: {result['source']}"
        " against the classic FF conv net with the same conv layers and the label in its first "
        f"pixels (untrained: its speed does not depend on its weights). {_where(result)}",
        "",
        f"Command: `{result['command']}`",
        "",
        "| readout | time | images/s | test accuracy |",
        "|---|---|---|---|",
    ]
    for r in result["rows"]:
        acc = f"{100 * r['test_acc']:.2f}%" if r["test_acc"] is not None else "(untrained)"
        lines.append(f"| {r['readout']} | {r['seconds']:.2f} s | {r['images_per_s']:.0f} | {acc} |")
    return [*lines, "", f"The channel-group readout is {result['speedup']:.1f}x faster.", ""]


def distributed_section(
    mnist: dict[str, Any] | None, tput: dict[str, Any] | None, cont: dict[str, Any] | None
) -> list[str]:
    lines = ["## Distributed FF: two processes against one", ""]
    if mnist is None:
        lines += ["Not run yet: `python benchmarks/distributed.py mnist`.", ""]
    else:
        lines += [
            "mnist-quick (4 epochs) launched as a user launches it, one thread per process so "
            f"that two processes share the two cores fairly against one. {_where(mnist)}",
            "",
            f"Command: `{mnist['command']}`",
            "",
            "| run | test accuracy | wall time | command |",
            "|---|---|---|---|",
        ]
        for name, r in mnist["runs"].items():
            lines.append(
                f"| {name} | {100 * r['test_acc']:.2f}% | {r['wall_seconds']:.0f} s "
                f"| `{r['command']}` |"
            )
        lines += [
            "",
            "The pipeline is the one-process run with its scorer (hard negatives scored on layer",
            "0, the first stage) to the bit; data parallel is the one-process run to float",
            "rounding ([docs/distributed.md](docs/distributed.md)).",
            "",
        ]
    if tput is None:
        return [*lines, "Not run yet: `python benchmarks/distributed.py throughput`.", ""]
    runs = tput["runs"]
    lines += [
        "Throughput of 4x2000 (784-2000-2000-2000-2000, mnist-quick's step) at batch 1000: the",
        f"second of three epochs of 15 steps (15,000 MNIST images), one thread per process. "
        f"{_where(tput)}",
        "",
        f"Command: `{tput['command']}`",
        "",
        "| run | images/s | over one process | bytes per step (pipeline: sent; ddp: all-reduced) |",
        "|---|---|---|---|",
    ]
    one = runs["one process"]["images_per_second"]
    for name, r in runs.items():
        sent = r["bytes_sent_per_step"] or r["bytes_reduced_per_step"]
        what = "" if not sent else f"{sent / 2**20:.1f} MiB"
        lines.append(
            f"| {name} | {r['images_per_second']:.0f} | {r['images_per_second'] / one:.2f}x "
            f"| {what} |"
        )
    model = tput["model"]
    cut = model["stages"][0]
    lines += [
        "",
        f"The model (docs/distributed.md) predicts {model['predicted_speedup']:.2f}x for the "
        f"pipeline's cut (layers {cut['layers']} | the rest), with "
        f"{cut['ff_bytes_per_step'] / 2**20:.1f} MiB per step across it (measured: "
        f"{runs['pipeline, 2 processes']['bytes_sent_per_step'] / 2**20:.1f} MiB) at the "
        f"measured link of {tput['link_bytes_per_second'] / 2**30:.2f} GiB/s; measured "
        f"{tput['measured_speedup']:.2f}x.",
        "",
    ]
    if cont is not None:
        lines += [
            "The model's compute shares are shares of the `in x out` products: it leaves out the",
            "work that is not a product and what two processes cost each other on one machine.",
            "Two one-process runs of this net side by side ran at "
            f"{cont['speed_side_by_side']:.2f} of one alone "
            f"({cont['epoch_seconds_side_by_side']:.1f} s against "
            f"{cont['epoch_seconds_alone']:.1f} s per epoch; `{cont['command']}`; "
            f"{_where(cont)})",
            "",
        ]
    return lines


def render() -> str:
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python benchmarks/report.py` from `results/*.json`; "
        "`python benchmarks/suite.py` runs every benchmark and then this.",
        "",
    ]
    lines += speed_section(_load("speed"))
    lines += tta_section(_load("time_to_accuracy"))
    lines += eval_section(_load("eval_speed"))
    lines += tta_section(
        _load("time_to_accuracy_conv"),
        "Time to accuracy: conv FF",
        " --preset conv-mnist-quick --target 0.99 --name time_to_accuracy_conv",
    )
    lines += memory_section(_load("conv_memory"))
    lines += conv_eval_section(_load("conv_eval_speed"))
    lines += distributed_section(
        _load("distributed_mnist"),
        _load("distributed_throughput"),
        _load("distributed_contention"),
    )
    return "\n".join(lines)


def write(path: Path = REPORT) -> None:
    path.write_text(render())
    print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    write()
