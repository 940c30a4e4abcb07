"""The training loop on the synthetic dataset: repeatability, bit-identical resume after a real
kill (SIGKILL) or an interrupt (SIGINT), clean stops on divergence, run-folder files, and that
FF and its backprop twin actually learn."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from _spy import record_batches

from forwardforward.checkpoint import read_checkpoint
from forwardforward.cli import main
from forwardforward.config import RunConfig, to_dict
from forwardforward.errors import CheckpointError, ConfigError, TrainingDiverged
from forwardforward.loop import accuracy
from forwardforward.nets.feedforward import FFNet
from forwardforward.perf import flushes_denormals
from forwardforward.train import (
    CHECKPOINT,
    CONFIG,
    KILL_ENV,
    METRICS,
    RESULTS,
    Trainer,
)

STEPS_PER_EPOCH = 40  # 2000 synthetic training images / batch 50 (see conftest.TINY_TOML)


def _ff_subprocess(args: list[str], kill_at: str) -> subprocess.CompletedProcess[str]:
    """``ff ARGS`` in a fresh Python process (so that its signal kills only it), with the
    testing hook that makes it signal itself after optimisation step ``kill_at``."""
    env = dict(os.environ)
    env[KILL_ENV] = kill_at
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "forwardforward", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _model(run_dir: Path) -> dict[str, torch.Tensor]:
    model: dict[str, torch.Tensor] = torch.load(run_dir / CHECKPOINT, weights_only=True)["model"]
    return model


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / METRICS).read_text().splitlines()]


def _comparable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Metrics without the wall-clock fields."""
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in records]


def _assert_same_model(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def _no_temp_files(run_dir: Path) -> None:
    leftovers = [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


@pytest.fixture(autouse=True)
def _no_kill_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KILL_ENV, raising=False)


# ---------------------------------------------------------------------------------------------
# Repeatability


def test_a_seeded_run_is_repeatable(tiny_config: Callable[..., RunConfig]) -> None:
    config = tiny_config("train.epochs=1")
    a = Trainer(config, progress=False)
    a.fit()
    b = Trainer(tiny_config("train.epochs=1"), progress=False)
    b.fit()
    _assert_same_model(a.net.state_dict(), b.net.state_dict())
    assert _comparable(a.history) == _comparable(b.history)
    other = Trainer(tiny_config("train.epochs=1", "train.seed=4"), progress=False)
    other.fit()
    assert not torch.equal(
        a.net.state_dict()["layers.0.weight"], other.net.state_dict()["layers.0.weight"]
    )


# ---------------------------------------------------------------------------------------------
# Resume after a kill is bit-identical

RESUME_CASES = {
    # name: (--set overrides, extra CLI flags, kill step, signal)
    # epoch 2, step 5, by SIGKILL: the checkpoint is from epoch 1
    "simultaneous": ([], [], 45, "KILL"),
    # SIGINT; hard negatives draw from the generator with the model's own scores
    "hard-adam-int": (
        ["negatives.kind=hard", "optim.name=adam", "readout.kind=goodness"],
        [],
        45,
        "INT",
    ),
    # 2 phases x 3 epochs: step 165 is in phase 1 (layer 1), epoch 2
    "greedy": (["train.schedule=greedy", "readout.kind=goodness"], [], 165, "KILL"),
    "backprop": ([], ["--backprop"], 45, "KILL"),
}


def _train_args(toml: Path, out: Path, sets: list[str], flags: list[str]) -> list[str]:
    args = ["train", str(toml), "--out", str(out), "--quiet", *flags]
    for s in sets:
        args += ["--set", s]
    return args


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_resume_after_a_kill_is_bit_identical(
    tiny_toml: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
) -> None:
    sets, flags, kill_step, sig = RESUME_CASES[case]
    ref = tmp_path / "reference"

    # the uninterrupted run (in this process)
    assert main(_train_args(tiny_toml, ref, sets, flags)) == 0
    capsys.readouterr()

    # a real process, killed by a signal in the middle of an epoch
    run = tmp_path / "interrupted"
    proc = _ff_subprocess(_train_args(tiny_toml, run, sets, flags), f"{kill_step}:{sig}")
    stderr = proc.stderr
    if sig == "KILL":
        assert proc.returncode == -signal.SIGKILL, stderr
    else:
        assert proc.returncode == 130, stderr
        assert "--resume" in stderr and str(run) in stderr
    assert not (run / RESULTS).exists()
    _no_temp_files(run)
    state = read_checkpoint(run / CHECKPOINT)["trainer"]
    completed_epochs = kill_step // STEPS_PER_EPOCH
    assert state["step"] == completed_epochs * STEPS_PER_EPOCH
    assert len(_metrics(run)) == completed_epochs

    # resume to the end
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["test_acc"] == json.loads((ref / RESULTS).read_text())["test_acc"]

    _assert_same_model(_model(run), _model(ref))
    ref_ckpt = torch.load(ref / CHECKPOINT, weights_only=True)
    run_ckpt = torch.load(run / CHECKPOINT, weights_only=True)
    assert run_ckpt["trainer"]["step"] == ref_ckpt["trainer"]["step"]
    assert torch.equal(run_ckpt["trainer"]["generator"], ref_ckpt["trainer"]["generator"])
    assert _comparable(_metrics(run)) == _comparable(_metrics(ref))
    _no_temp_files(run)


def test_resume_refuses_a_preset_or_overrides(
    tiny_toml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", str(tiny_toml), "--resume", str(tmp_path), "--quiet"]) == 1
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nothing"), "--quiet"]) == 1
    assert "not a run folder" in capsys.readouterr().err


def test_resume_of_another_kind_is_refused(
    tiny_config: Callable[..., RunConfig], tmp_path: Path
) -> None:
    Trainer(tiny_config("train.epochs=1"), out_dir=tmp_path, progress=False).fit()
    twin = Trainer(tiny_config("train.epochs=1"), out_dir=tmp_path, backprop=True, progress=False)
    with pytest.raises(CheckpointError, match="ff run, not backprop"):
        twin.resume()


# ---------------------------------------------------------------------------------------------
# Divergence stops the run cleanly


def test_huge_learning_rate_raises_training_diverged(
    tiny_config: Callable[..., RunConfig], tmp_path: Path
) -> None:
    trainer = Trainer(
        tiny_config("optim.name=adam", "optim.lr=1e30"), out_dir=tmp_path, progress=False
    )
    with pytest.raises(TrainingDiverged) as info:
        trainer.fit()
    msg = str(info.value)
    assert "layer 0" in msg
    assert f"step {trainer.step}" in msg
    assert trainer.step < STEPS_PER_EPOCH  # it stopped within the first epoch
    _no_temp_files(tmp_path)
    assert not (tmp_path / CHECKPOINT).exists()  # no epoch finished: nothing to keep
    assert not (tmp_path / RESULTS).exists()


def test_divergence_after_an_epoch_keeps_the_last_good_checkpoint(
    tiny_config: Callable[..., RunConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = Trainer(tiny_config(), out_dir=tmp_path, progress=False)
    net = trainer.net
    assert isinstance(net, FFNet)
    real_step = net.train_step
    poison_at = STEPS_PER_EPOCH + 3  # in epoch 2

    def step_with_a_bad_learning_rate(
        x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, gen: torch.Generator
    ) -> dict[str, torch.Tensor]:
        if trainer.step == poison_at:  # one step with an absurd rate, as a bad schedule would
            for opt in net.optimizers:
                for group in opt.param_groups:
                    group["lr"] = 1e30
        return real_step(x, y, index, gen)

    monkeypatch.setattr(net, "train_step", step_with_a_bad_learning_rate)
    with pytest.raises(TrainingDiverged) as info:
        trainer.fit()
    msg = str(info.value)
    assert re.search(r"layer \d", msg), msg
    assert f"step {trainer.step}" in msg and trainer.step == poison_at + 1
    _no_temp_files(tmp_path)
    payload = read_checkpoint(tmp_path / CHECKPOINT)
    assert payload["trainer"]["epoch"] == 1 and payload["trainer"]["step"] == STEPS_PER_EPOCH
    for k, v in payload["model"].items():
        assert torch.isfinite(v).all(), k
    assert len(_metrics(tmp_path)) == 1
    # the kept checkpoint resumes into a working run
    again = Trainer(tiny_config(), out_dir=tmp_path, progress=False)
    again.resume()
    first_epoch_done = payload["trainer"]["elapsed"]
    tic = time.perf_counter()
    results = again.fit()
    second_session = time.perf_counter() - tic
    assert results["epochs"] == 3
    # the wall time counts the first session's epoch too, and the log's clock runs on from it
    # (fit reads its clock before writing results.json and returning: allow for that, by less
    # than the first session's time, so a run that forgot the first session still fails)
    slack = first_epoch_done / 2
    assert results["wall_seconds"] >= first_epoch_done + second_session - slack
    elapsed = [r["elapsed_seconds"] for r in _metrics(tmp_path)]
    assert elapsed == sorted(elapsed) and elapsed[1] >= first_epoch_done


def test_cli_reports_divergence(
    tiny_toml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(_train_args(tiny_toml, tmp_path / "run", ["optim.name=adam", "optim.lr=1e30"], []))
    assert code == 1
    err = capsys.readouterr().err
    assert "ff: error:" in err and "layer 0" in err and "step" in err


def test_backprop_divergence(tiny_config: Callable[..., RunConfig]) -> None:
    trainer = Trainer(
        tiny_config("baseline.optim.lr=1e30", "baseline.optim.name=sgd"),
        backprop=True,
        progress=False,
    )
    with pytest.raises(TrainingDiverged, match=r"step \d+"):
        trainer.fit()


# ---------------------------------------------------------------------------------------------
# Run-folder files


def test_run_folder_files(tiny_config: Callable[..., RunConfig], tmp_path: Path) -> None:
    config = tiny_config()
    results = Trainer(config, out_dir=tmp_path, progress=False).fit()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [CHECKPOINT, CONFIG, METRICS, RESULTS]
    )
    records = _metrics(tmp_path)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert [r["step"] for r in records] == [40, 80, 120]
    for r in records:
        assert {"phase", "loss0", "loss1", "probe", "test_acc", "epoch_seconds"} <= set(r)
        assert all(math.isfinite(r[k]) for k in ("loss0", "loss1", "probe"))
    meta = json.loads((tmp_path / CONFIG).read_text())
    assert meta == {"kind": "ff", "config": json.loads(json.dumps(to_dict(config)))}
    saved = json.loads((tmp_path / RESULTS).read_text())
    assert saved == results
    assert 0.0 <= saved["test_acc"] <= 1.0
    assert saved["kind"] == "ff" and saved["dataset"] == "synthetic" and saved["epochs"] == 3
    assert saved["preset"] == "tiny"
    assert saved["test_error_pct"] == pytest.approx(100 * (1 - saved["test_acc"]), abs=1e-3)
    assert saved["test_acc"] == records[-1]["test_acc"]


def test_eval_every(tiny_config: Callable[..., RunConfig], tmp_path: Path) -> None:
    Trainer(tiny_config("train.eval_every=2"), out_dir=tmp_path, progress=False).fit()
    has_acc = ["test_acc" in r for r in _metrics(tmp_path)]
    assert has_acc == [False, True, True]  # every 2nd epoch, and the last


# ---------------------------------------------------------------------------------------------
# It learns

LEARNS = (
    "model.layers=[64]",
    "model.loss=symba",
    "model.alpha=4.0",
    "model.peer_weight=0.0",
    "optim.name=adam",
    "optim.lr=0.003",
    "optim.schedule=constant",
    "train.seed=0",
)


def test_ff_goodness_readout_learns(tiny_config: Callable[..., RunConfig]) -> None:
    untrained = Trainer(tiny_config(*LEARNS, "readout.kind=goodness"), progress=False)
    assert untrained.dataset is not None
    before = accuracy(untrained.net, untrained.dataset.test)
    results = Trainer(tiny_config(*LEARNS, "readout.kind=goodness"), progress=False).fit()
    assert before < 0.3
    assert results["test_acc"] > 0.7, results


def test_ff_probe_readout_learns(tiny_config: Callable[..., RunConfig]) -> None:
    results = Trainer(tiny_config(*LEARNS, "readout.kind=probe"), progress=False).fit()
    assert results["test_acc"] > 0.8, results


def test_backprop_twin_learns(tiny_config: Callable[..., RunConfig]) -> None:
    results = Trainer(tiny_config(), backprop=True, progress=False).fit()
    assert results["kind"] == "backprop"
    assert results["test_acc"] > 0.9, results


def test_probe_trained_after_ff_learns_with_a_decaying_schedule(
    tiny_config: Callable[..., RunConfig],
) -> None:
    """``probe_mode = "after"`` trains the probe once FF training is done, for probe_epochs
    epochs on its own learning-rate schedule. The FF epochs must not use that schedule up: with
    ``cooldown`` and probe_epochs = epochs the probe would start (and stay) at lr 0."""
    config = tiny_config(
        *LEARNS,
        "readout.kind=probe",
        "readout.probe_mode=after",
        "readout.probe_epochs=3",
        "optim.schedule=cooldown",
    )
    trainer = Trainer(config, progress=False)
    results = trainer.fit()
    assert isinstance(trainer.net, FFNet)
    assert trainer.net.probe is not None and trainer.net.probe.weight.abs().sum() > 0
    assert results["test_acc"] > 0.5, results


def test_greedy_with_a_probe_trains_the_probe(tiny_config: Callable[..., RunConfig]) -> None:
    """The greedy schedule with a jointly trained probe must train the probe (or refuse the
    combination with a ConfigError): a probe left at zero predicts class 0 for everything."""
    try:
        config = tiny_config(*LEARNS, "train.schedule=greedy", "readout.kind=probe")
        trainer = Trainer(config, progress=False)
    except ConfigError:
        return
    results = trainer.fit()
    assert isinstance(trainer.net, FFNet)
    assert trainer.net.probe is not None and trainer.net.probe.weight.abs().sum() > 0
    assert results["test_acc"] > 0.5, results


def test_a_new_run_refuses_a_folder_that_holds_a_run(
    tiny_toml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    args = _train_args(tiny_toml, run, ["train.epochs=1"], [])
    assert main(args) == 0
    before = (run / CHECKPOINT).read_bytes()
    capsys.readouterr()
    assert main(args) == 1
    assert "already holds a run" in capsys.readouterr().err
    assert (run / CHECKPOINT).read_bytes() == before


def test_resume_rewrites_the_log_from_the_checkpoint(
    tiny_toml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A line logged after the last checkpoint (a kill between the two writes) is not kept."""
    run = tmp_path / "run"
    proc = _ff_subprocess(_train_args(tiny_toml, run, [], []), f"{STEPS_PER_EPOCH + 5}:KILL")
    assert proc.returncode == -signal.SIGKILL
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"phase": 0, "epoch": 2, "stale": True}) + "\n")
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    records = _metrics(run)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert not any(r.get("stale") for r in records)


def _is_translation(moved: torch.Tensor, image: torch.Tensor, k: int) -> bool:
    """Whether ``moved`` ``(C, H, W)`` is ``image`` translated by some offset of up to ``k``
    pixels in each direction, zero-filled."""
    h, w = image.shape[-2:]
    padded = torch.nn.functional.pad(image, (k, k, k, k))
    return any(
        torch.equal(moved, padded[:, dy : dy + h, dx : dx + w])
        for dy in range(2 * k + 1)
        for dx in range(2 * k + 1)
    )


@pytest.mark.parametrize("backprop", [False, True])
def test_augment_shift_trains_on_translated_images(
    tiny_config: Callable[..., RunConfig], monkeypatch: pytest.MonkeyPatch, backprop: bool
) -> None:
    trainer = Trainer(
        tiny_config("train.epochs=1", "train.augment_shift=2"), backprop=backprop, progress=False
    )
    seen = record_batches(trainer, monkeypatch)
    trainer.fit()
    assert len(seen) == STEPS_PER_EPOCH
    assert trainer.dataset is not None
    images = trainer.dataset.train.images
    for x, idx in seen[:3]:
        assert not torch.equal(x, images[idx])  # translated ...
        assert all(_is_translation(x[i], images[j], 2) for i, j in enumerate(idx.tolist()))
    first = seen[0][0]
    unmoved = sum(torch.equal(first[i], images[j]) for i, j in enumerate(seen[0][1].tolist()))
    assert unmoved < len(first) // 4  # ... each by its own offset (1 in 25 is (0, 0))


def test_a_probe_trained_after_sees_new_translations_every_epoch(
    tiny_config: Callable[..., RunConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = Trainer(
        tiny_config(
            "train.epochs=1",
            "train.augment_shift=1",
            "readout.probe_mode=after",
            "readout.probe_epochs=3",
            "readout.probe_lr=0.001",
        ),
        progress=False,
    )
    assert trainer.dataset is not None and isinstance(trainer.net, FFNet)
    images = trainer.dataset.train.images
    fed: list[torch.Tensor] = []
    real = trainer.net.probe_features

    def spy(x: torch.Tensor) -> torch.Tensor:
        if len(x) == len(images):
            fed.append(x.clone())
        return real(x)

    monkeypatch.setattr(trainer.net, "probe_features", spy)
    trainer.fit()
    assert len(fed) == 3  # features computed anew for each probe epoch
    assert not torch.equal(fed[0], images) and not torch.equal(fed[1], fed[2])
    assert all(_is_translation(fed[1][i], images[i], 1) for i in range(20))


@pytest.mark.parametrize("flush", [True, False])
def test_training_flushes_subnormal_floats_and_restores_the_mode(
    tiny_config: Callable[..., RunConfig], monkeypatch: pytest.MonkeyPatch, flush: bool
) -> None:
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU has no flush-to-zero mode (torch.set_flush_denormal)")
    trainer = Trainer(
        tiny_config("train.epochs=1", f"train.flush_denormal={str(flush).lower()}"),
        progress=False,
    )
    modes: list[bool] = []
    real = trainer.net.train_step

    def spy(
        x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, gen: torch.Generator
    ) -> dict[str, torch.Tensor]:
        modes.append(flushes_denormals())
        return real(x, y, index, gen)

    monkeypatch.setattr(trainer.net, "train_step", spy)
    trainer.fit()
    assert set(modes) == {flush}
    assert not flushes_denormals()  # the mode from before the run


@pytest.mark.parametrize(("flags", "chosen"), [("avx2 fma", "fp32"), ("avx2 amx_bf16", "bf16")])
def test_auto_precision_records_the_choice_for_the_cpu(
    tiny_config: Callable[..., RunConfig],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    flags: str,
    chosen: str,
) -> None:
    """``train.precision = "auto"``: bf16 only on a CPU with a fast bf16 unit; the run folder's
    config.json and the net's autocast follow the concrete choice, not the word ``auto``."""
    monkeypatch.setattr(
        "forwardforward.perf.cpu_flags", lambda cpuinfo=None: frozenset(flags.split())
    )
    trainer = Trainer(
        tiny_config("train.precision=auto", "train.device=cpu", "train.epochs=1"),
        out_dir=tmp_path / "run",
        progress=False,
    )
    assert trainer.config.train.precision == chosen
    expected = torch.bfloat16 if chosen == "bf16" else None
    assert isinstance(trainer.net, FFNet)
    assert trainer.net.autocast_dtype == expected
    trainer.fit()
    saved = json.loads((tmp_path / "run" / CONFIG).read_text())
    assert saved["config"]["train"]["precision"] == chosen
