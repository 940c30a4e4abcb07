"""BENCHMARKS.md is rendered from the stored results: every figure comes from a result file,
and a benchmark without one is listed as not run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import report  # type: ignore[import-not-found, unused-ignore]

ENV = {"device": "cpu (test)", "threads": 2, "torch": "x", "date": "2026-01-01"}


def test_missing_results_are_listed_as_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    text = report.render()
    assert text.count("Not run yet") == 8
    assert "`python benchmarks/eval_speed.py`" in text
    assert "`python benchmarks/distributed.py throughput`" in text
    assert "`python benchmarks/conv_memory.py`" in text
    assert "--preset conv-mnist-quick --target 0.99 --name time_to_accuracy_conv" in text


def test_figures_and_commands_come_from_the_result_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    (tmp_path / "time_to_accuracy.json").write_text(
        json.dumps(
            {
                **ENV,
                "command": "python benchmarks/time_to_accuracy.py --target 0.985",
                "preset": "mnist-quick",
                "target": 0.985,
                "reference_seconds": 1800.0,
                "speedup_vs_reference": 1800.0 / 61.5,
                "peak_memory_mb": 1234.0,
                "runs": [
                    {
                        "kind": "ff",
                        "seconds_to_target": 61.5,
                        "epoch_reached": 3,
                        "final_test_acc": 0.9861,
                        "wall_seconds": 80.2,
                    },
                    {
                        "kind": "backprop",
                        "seconds_to_target": None,
                        "epoch_reached": None,
                        "final_test_acc": 0.9845,
                        "wall_seconds": 50.0,
                    },
                ],
            }
        )
    )
    text = report.render()
    assert "`python benchmarks/time_to_accuracy.py --target 0.985`" in text
    assert "| mnist-quick ff | 61.5 s | 3 | 98.61% | 80 s |" in text
    assert "| mnist-quick backprop | not reached |  | 98.45% | 50 s |" in text
    assert "29x faster" in text and "1234 MiB" in text
    assert text.count("Not run yet") == 7


def test_the_conv_sections_show_memory_against_depth_and_readout_speed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    rows = [
        {"depth": d, "kind": k, "peak_mb": mb, "one_activation_mb": 30.6, "parameters": 1}
        for d, k, mb in [(4, "ff", 100.0), (4, "backprop", 400.0), (8, "ff", 101.0),
                         (8, "backprop", 800.0)]
    ]  # fmt: skip
    memory = {**ENV, "command": "python benchmarks/conv_memory.py", "channels": 40,
              "batch": 256, "precision": "fp32", "rows": rows}  # fmt: skip
    (tmp_path / "conv_memory.json").write_text(json.dumps(memory))
    speed = {
        **ENV, "command": "python benchmarks/conv_eval_speed.py", "source": "the run `r`",
        "precision": "bf16", "speedup": 9.5,
        "rows": [
            {"readout": "channel groups, one pass", "seconds": 1.0, "images_per_s": 10000.0,
             "test_acc": 0.991},
            {"readout": "try-all labels", "seconds": 9.5, "images_per_s": 1052.6,
             "test_acc": None},
        ],
    }  # fmt: skip
    (tmp_path / "conv_eval_speed.json").write_text(json.dumps(speed))
    text = report.render()
    assert "| 4 | 100 MiB | 400 MiB | 4.0 |" in text and "| 8 | 101 MiB | 800 MiB | 7.9 |" in text
    assert "| channel groups, one pass | 1.00 s | 10000 | 99.10% |" in text
    assert "| try-all labels | 9.50 s | 1053 | (untrained) |" in text
    assert "9.5x faster" in text and text.count("Not run yet") == 6


def test_the_distributed_section_shows_runs_throughput_and_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    run = {"test_acc": 0.9848, "wall_seconds": 77.4, "command": "torchrun ... dist.mode=pipeline"}
    mnist = {**ENV, "command": "python benchmarks/distributed.py mnist",
             "runs": {"pipeline, 2 processes": run}}  # fmt: skip
    stage = {"layers": [0, 1], "ff_bytes_per_step": 40008000}
    rate = {"bytes_sent_per_step": 0.0, "bytes_reduced_per_step": 0.0}
    tput = {
        **ENV, "command": "python benchmarks/distributed.py throughput",
        "runs": {"one process": {**rate, "images_per_second": 440.0},
                 "pipeline, 2 processes": {**rate, "images_per_second": 585.0,
                                           "bytes_sent_per_step": 40008000.0}},
        "model": {"stages": [stage], "predicted_speedup": 1.62},
        "link_bytes_per_second": 1.7 * 2**30, "measured_speedup": 1.33,
    }  # fmt: skip
    cont = {**ENV, "command": "c", "speed_side_by_side": 0.95, "epoch_seconds_alone": 37.2,
            "epoch_seconds_side_by_side": 39.1}  # fmt: skip
    for name, value in (("mnist", mnist), ("throughput", tput), ("contention", cont)):
        (tmp_path / f"distributed_{name}.json").write_text(json.dumps(value))
    text = report.render()
    assert "| pipeline, 2 processes | 98.48% | 77 s | `torchrun ... dist.mode=pipeline` |" in text
    assert "| pipeline, 2 processes | 585 | 1.33x | 38.2 MiB |" in text
    assert "predicts 1.62x" in text and "measured: 38.2 MiB" in text and "0.95 of one" in text


def test_presets_table_shows_every_seed_and_their_mean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import presets  # type: ignore[import-not-found, unused-ignore]

    monkeypatch.setattr(presets, "STORE", tmp_path)
    entry = {"test_error_pct": 0.5, "wall_seconds": 20.0, "reference": "ref", "command": "c"}
    seeds = {"ff:1": {**entry, "test_error_pct": 0.7}}
    (tmp_path / "a.json").write_text(json.dumps({"ff": entry, "backprop": entry, "seeds": seeds}))
    rows = {line.split(" | ")[0]: line for line in presets.table().splitlines()}
    assert rows["| a"] == "| a | 0.60% (mean of 2 seeds: 0.50%, 0.70%) | 0.50% | ref | 20 s | `c` |"


def test_presets_table_counts_the_time_of_the_run_a_preset_starts_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import presets  # type: ignore[import-not-found, unused-ignore]

    monkeypatch.setattr(presets, "STORE", tmp_path)
    entry = {"test_error_pct": 1.5, "wall_seconds": 20.0, "reference": "ref", "command": "c"}
    init = {"init_run": "runs/bench/a-ff", "init_wall_seconds": 100.0}
    (tmp_path / "b.json").write_text(json.dumps({"ff": {**entry, **init}}))
    (tmp_path / "a.json").write_text(json.dumps({"ff": entry, "backprop": entry}))
    rows = {line.split(" | ")[0]: line for line in presets.table().splitlines()}
    assert rows["| a"] == "| a | 1.50% | 1.50% | ref | 20 s | `c` |"
    assert "| not run | ref | 120 s (of which 100 s: `runs/bench/a-ff`) |" in rows["| b"]


def test_eval_rows_show_the_floor_set_by_the_matmul_peak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    row = {
        "readout": "try-all labels, batched",
        "seconds": 10.0,
        "images_per_s": 1000.0,
        "flops_per_s": 50e9,
        "fraction_of_peak": 0.5,
    }
    (tmp_path / "eval_speed.json").write_text(
        json.dumps(
            {
                **ENV,
                "command": "python benchmarks/eval_speed.py",
                "preset": "hinton-mnist",
                "layers": [2000, 2000],
                "readout_layers": [1],
                "images": "MNIST test set",
                "n_images": 10000,
                "batch": 1000,
                "matmul_peak_flops_per_s": 100e9,
                "rows": [row],
            }
        )
    )
    text = report.render()
    # 5e11 FLOP at a 1e11 FLOP/s peak: no implementation beats 5 s (an old result: fp32 only)
    assert "| try-all labels, batched | fp32 | 10.00 s | 5.00 s | 1000 | 50 | 50% |" in text


def test_eval_rows_use_their_dtypes_peak_and_show_accuracy_of_a_trained_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    rows = [
        {"readout": "probe", "dtype": "fp32", "seconds": 4.0, "images_per_s": 2500.0,
         "flops_per_s": 50e9, "fraction_of_peak": 0.5, "test_acc": 0.9812},
        {"readout": "probe", "dtype": "bf16", "seconds": 1.0, "images_per_s": 10000.0,
         "flops_per_s": 200e9, "fraction_of_peak": 0.5, "test_acc": 0.9811},
    ]  # fmt: skip
    (tmp_path / "eval_speed.json").write_text(
        json.dumps(
            {
                **ENV,
                "command": "python benchmarks/eval_speed.py --run runs/x",
                "preset": "hinton-mnist",
                "weights": "the trained run `runs/x`",
                "layers": [2000, 2000],
                "readout_layers": [1],
                "images": "MNIST test set",
                "n_images": 10000,
                "batch": 1000,
                "matmul_peak_flops_per_s": {"fp32": 100e9, "bf16": 400e9},
                "rows": rows,
            }
        )
    )
    text = report.render()
    # 2e11 FLOP: 2 s at the fp32 peak, 0.5 s at the bf16 peak
    assert "| probe | fp32 | 4.00 s | 2.00 s | 2500 | 50 | 50% | 98.12% |" in text
    assert "| probe | bf16 | 1.00 s | 0.50 s | 10000 | 200 | 50% | 98.11% |" in text
    assert "fp32 100 GFLOP/s, bf16 400 GFLOP/s" in text and "`runs/x`" in text


def test_text_presets_get_their_own_table_with_the_baselines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import presets

    store = tmp_path / "presets"
    store.mkdir()
    monkeypatch.setattr(presets, "STORE", store)
    monkeypatch.setattr(presets, "BASELINES", tmp_path / "baselines.json")
    (tmp_path / "baselines.json").write_text(
        json.dumps({"unigram": {"train_acc": 0.196, "test_acc": 0.197, "test_perplexity": 17.56}})
    )
    text = {
        "dataset": "aesop",
        "train_acc": 0.6585,
        "test_acc": 0.4717,
        "test_perplexity": 6.409,
        "test_error_pct": 52.83,
        "wall_seconds": 116.0,
        "reference": "ref",
        "command": "ff train lm",
    }
    image = {"dataset": "mnist", "test_error_pct": 1.5, "wall_seconds": 20.0, "command": "c"}
    (store / "lm.json").write_text(json.dumps({"ff": text}))
    (store / "img.json").write_text(json.dumps({"ff": image}))
    lines = presets.table().splitlines()
    rows = {line.split(" | ")[0]: line for line in lines}
    assert "| lm" not in rows  # not in the image table, whose figure is an error rate
    assert rows["| lm (FF)"] == "| lm (FF) | 65.8% | 47.2% | 6.41 | ref | 116 s | `ff train lm` |"
    assert rows["| lm (backprop twin)"].startswith("| lm (backprop twin) | not run")
    assert rows["| unigram"].startswith("| unigram | 19.6% | 19.7% | 17.56 |")
    assert lines.index(rows["| img"]) < lines.index(rows["| lm (FF)"])
