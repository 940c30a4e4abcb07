"""The training loop: phases, epochs, evaluation, checkpoints, exact resume.

It reads top to bottom: load the data onto the device, build the network, then for every phase
and epoch shuffle (with the run's own generator), step on every batch, evaluate, write one JSON
line of metrics and an atomic checkpoint. A resumed run restores weights, optimiser, scheduler
and generator state and continues with the next epoch, so it ends bit-identical (on CPU) to a run
that was never interrupted.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from forwardforward.checkpoint import atomic_write_text, load_into, read_checkpoint, save_checkpoint
from forwardforward.config import RunConfig, from_dict, to_dict, validate
from forwardforward.data.fetch import resolve_cache_dir
from forwardforward.data.synthetic import synthetic_dataset
from forwardforward.data.text import aesop_dataset
from forwardforward.data.video import (
    SEQUENCES,
    cached_moving_mnist,
    moving_mnist,
    sequential_mnist,
)
from forwardforward.data.vision import Split, VisionDataset, load_dataset
from forwardforward.errors import CheckpointError, ConfigError, FFError
from forwardforward.negatives import shift_images
from forwardforward.nets.backprop import BackpropNet, RecurrentBackpropNet
from forwardforward.nets.base import Trainable
from forwardforward.nets.feedforward import FFNet
from forwardforward.nets.recurrent import RecurrentFFNet
from forwardforward.nets.sequence import SequenceFFNet
from forwardforward.perf import flush_denormal
from forwardforward.progress import progress

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
RESULTS = "results.json"
KILL_ENV = "FORWARDFORWARD_KILL_AT_STEP"
"""Testing hook: ``STEP:SIGNAL`` makes the run send itself SIGNAL (e.g. ``KILL``, ``INT``) after
optimisation step STEP, to test resume after a real kill."""


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device = 'cuda' but torch sees no CUDA device; use 'cpu'")
    return torch.device(name)


def load_data(
    config: RunConfig,
    data_dir: str | Path | None,
    device: torch.device,
    *,
    download: bool | None = None,
    progress: bool = True,
) -> VisionDataset:
    """The run's dataset, on ``device``. Missing catalog files are downloaded first unless
    ``download`` is False (``None``: unless ``$FORWARDFORWARD_OFFLINE`` is set)."""
    d = config.data
    if d.dataset in SEQUENCES:
        return sequence_dataset(config, data_dir, device, download=download, progress=progress)
    if d.dataset == "aesop":
        return aesop_dataset(data_dir, device=device)
    if d.dataset == "synthetic":
        return synthetic_dataset(
            n_train=max(round(2000 * d.fraction), 10),
            val_fraction=d.val_fraction,
            seed=config.train.seed,
            device=device,
        )
    return load_dataset(
        d.dataset,
        data_dir=data_dir,
        device=device,
        val_fraction=d.val_fraction,
        fraction=d.fraction,
        seed=config.train.seed,
        download=download,
        progress=progress,
    )


def sequence_dataset(
    config: RunConfig,
    data_dir: str | Path | None,
    device: torch.device,
    *,
    download: bool | None = None,
    progress: bool = True,
) -> VisionDataset:
    """Moving MNIST or sequential MNIST, made from MNIST. Moving MNIST keeps ``data.fraction``
    of the test digits too (a full test set of 64x64x20 videos would take 0.8 GB)."""
    d, seed = config.data, config.train.seed
    mnist = load_dataset(
        "mnist",
        data_dir=data_dir,
        val_fraction=d.val_fraction,
        fraction=d.fraction,
        seed=seed,
        download=download,
        progress=progress,
    )
    if d.dataset == "moving_mnist":
        mnist.test = mnist.test.subset(torch.arange(max(round(len(mnist.test) * d.fraction), 1)))

    def make(split: Split) -> Split:
        if d.dataset == "sequential_mnist":
            return sequential_mnist(split)
        if d.cache:
            return cached_moving_mnist(
                split, resolve_cache_dir(), frames=d.frames, size=d.canvas, seed=seed + len(split)
            )
        return moving_mnist(split, frames=d.frames, size=d.canvas, seed=seed + len(split))

    return VisionDataset(
        name=d.dataset,
        num_classes=mnist.num_classes,
        classes=mnist.classes,
        train=make(mnist.train),
        val=None if mnist.val is None else make(mnist.val),
        test=make(mnist.test),
        files=mnist.files,
    ).to(device)


def build_net(
    config: RunConfig, in_shape: tuple[int, ...], num_classes: int, backprop: bool = False
) -> Trainable:
    """The network a configuration describes (or its backprop twin)."""
    if backprop:
        if config.model.kind == "recurrent":
            return RecurrentBackpropNet(config, in_shape, num_classes)
        return BackpropNet(config, in_shape, num_classes)
    if config.model.kind == "recurrent":
        return RecurrentFFNet(config, in_shape, num_classes)
    if config.data.dataset == "aesop":
        return SequenceFFNet(config, in_shape, num_classes)
    return FFNet(config, in_shape, num_classes)


@torch.no_grad()
def accuracy(net: Trainable, split: Split, batch_size: int = 1000) -> float:
    """Fraction of ``split`` that ``net`` labels correctly."""
    assert isinstance(net, nn.Module)
    was_training = net.training
    net.eval()
    correct = 0
    for xb, yb in zip(split.images.split(batch_size), split.labels.split(batch_size), strict=True):
        correct += int((net.predict(xb) == yb).sum())
    net.train(was_training)
    return correct / max(len(split), 1)


@torch.no_grad()
def perplexity(net: Trainable, split: Split, batch_size: int = 1000) -> float | None:
    """``exp`` of the mean negative log-likelihood of the labels, for a network with a
    probability readout (``log_probs``); None otherwise."""
    log_probs = getattr(net, "log_probs", None)
    if log_probs is None or log_probs(split.images[:1]) is None:
        return None
    total = 0.0
    for xb, yb in zip(split.images.split(batch_size), split.labels.split(batch_size), strict=True):
        total -= float(log_probs(xb).gather(1, yb[:, None]).sum())
    return math.exp(total / max(len(split), 1))


@dataclass
class Trainer:
    """Trains one run. ``out_dir`` receives config, metrics, checkpoint and results.

    Args:
        config: the run configuration.
        out_dir: run folder (``None``: nothing is written, no checkpoint).
        data_dir: the data directory (else ``$FORWARDFORWARD_DATA``, else the user cache).
        backprop: train the backprop twin instead of the FF net.
        progress: show progress (a bar on a terminal, one line per epoch elsewhere).
        dataset: an already loaded dataset (skips loading; used by tests and the API).
        download: fetch missing catalog files (``None``: unless ``$FORWARDFORWARD_OFFLINE``).
    """

    config: RunConfig
    out_dir: Path | None = None
    data_dir: str | Path | None = None
    backprop: bool = False
    progress: bool = True
    dataset: VisionDataset | None = None
    download: bool | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        validate(self.config)
        t = self.config.train
        if t.threads > 0:
            torch.set_num_threads(t.threads)
        self.device = resolve_device(t.device)
        torch.manual_seed(t.seed)
        self.start = time.perf_counter()
        if self.dataset is None:
            self.dataset = load_data(
                self.config,
                self.data_dir,
                self.device,
                download=self.download,
                progress=self.progress,
            )
            if self.progress and self.dataset.files:
                print(self.dataset.describe_files(), file=sys.stderr)
        else:
            self.dataset = self.dataset.to(self.device)
        self.data_seconds = time.perf_counter() - self.start
        ds = self.dataset
        self.net = build_net(self.config, ds.image_shape, ds.num_classes, self.backprop)
        assert isinstance(self.net, nn.Module)
        self.net.to(self.device)
        if t.init:
            if self.backprop:
                raise ConfigError(
                    "train.init starts an FF run from a trained FF net; the backprop twin "
                    "always trains from scratch: leave train.init out for --backprop"
                )
            init_layers(self.net, self.config, Path(t.init), self.device)
        self.epochs = self.config.baseline.epochs or t.epochs if self.backprop else t.epochs
        self.steps_per_epoch = math.ceil(len(ds.train) / t.batch_size)
        self.net.configure(t, self.steps_per_epoch)
        self.gen = torch.Generator(device=self.device).manual_seed(t.seed)
        self.step = 0
        self.next_phase, self.next_epoch = 0, 0
        self._kill = _parse_kill(os.environ.get(KILL_ENV, ""))
        self._resumed = False

    # -- files -----------------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        return "backprop" if self.backprop else "ff"

    def _write_config(self) -> None:
        if self.out_dir is not None and not self._resumed:
            if (self.out_dir / CHECKPOINT).exists():
                raise ConfigError(
                    f"{self.out_dir} already holds a run: continue it with "
                    f"`ff train --resume {self.out_dir}` or choose another --out"
                )
            (self.out_dir / METRICS).unlink(missing_ok=True)
            self.out_dir.mkdir(parents=True, exist_ok=True)
            meta = {"kind": self.kind, "config": to_dict(self.config)}
            atomic_write_text(self.out_dir / CONFIG, json.dumps(meta, indent=2) + "\n")

    def _save(self) -> None:
        if self.out_dir is None:
            return
        assert isinstance(self.net, nn.Module) and self.dataset is not None
        save_checkpoint(
            self.out_dir / CHECKPOINT,
            self.net,
            config={
                "kind": self.kind,
                "config": to_dict(self.config),
                "in_shape": list(self.dataset.image_shape),
                "num_classes": self.dataset.num_classes,
            },
            optim=self.net.optim_state_dict(),
            trainer={
                "phase": self.next_phase,
                "epoch": self.next_epoch,
                "step": self.step,
                "generator": self.gen.get_state(),
                "history": json.dumps(self.history),
                # wall time spent so far, so that a resumed run reports the whole run's time
                "elapsed": time.perf_counter() - self.start,
            },
        )

    def resume(self) -> None:
        """Continue from the checkpoint in ``out_dir``."""
        if self.out_dir is None:
            raise CheckpointError("resume needs a run folder")
        payload = read_checkpoint(self.out_dir / CHECKPOINT, self.device)
        saved = payload["config"]
        if saved.get("kind") != self.kind:
            raise CheckpointError(
                f"{self.out_dir / CHECKPOINT}: holds a {saved.get('kind')} run, not {self.kind}"
            )
        assert isinstance(self.net, nn.Module)
        load_into(self.net, payload, self.out_dir / CHECKPOINT)
        self.net.load_optim_state_dict(payload["optim"])
        tr = payload["trainer"]
        self.next_phase, self.next_epoch, self.step = tr["phase"], tr["epoch"], tr["step"]
        self.gen.set_state(tr["generator"].cpu() if self.device.type == "cpu" else tr["generator"])
        self.history = json.loads(tr["history"])
        self.start = time.perf_counter() - float(tr.get("elapsed", 0.0))
        self._resumed = True
        # epochs logged after the checkpoint was written are done again: keep the log in step
        lines = "".join(json.dumps(record) + "\n" for record in self.history)
        atomic_write_text(self.out_dir / METRICS, lines)

    # -- the loop --------------------------------------------------------------------------------

    def eval_split(self) -> tuple[str, Split]:
        ds = self.dataset
        assert ds is not None
        if self.config.data.eval_split == "val" and ds.val is not None:
            return "val", ds.val
        return "test", ds.test

    def fit(self) -> dict[str, Any]:
        """Train to the end (from wherever a resume left off); returns the final results.

        On CPU, subnormal floats are flushed to zero while it runs (``train.flush_denormal``).
        """
        if self.device.type != "cpu":
            return self._fit()
        with flush_denormal(self.config.train.flush_denormal):
            return self._fit()

    def _fit(self) -> dict[str, Any]:
        ds = self.dataset
        assert ds is not None and isinstance(self.net, nn.Module)
        self._write_config()
        x, y = ds.train.images, ds.train.labels
        t = self.config.train
        self.net.train()
        split_name, split = self.eval_split()
        for phase in range(self.next_phase, self.net.phases()):
            self.net.begin_phase(phase, x, y)
            first_epoch = self.next_epoch if phase == self.next_phase else 0
            for epoch in range(first_epoch, self.epochs):
                tic = time.perf_counter()
                self.net.begin_epoch(x, y, self.gen)
                sums: dict[str, Tensor] = {}
                perm = torch.randperm(len(y), generator=self.gen, device=self.device)
                bar = progress(
                    perm.split(t.batch_size),
                    desc=self._desc(phase, epoch),
                    enabled=self.progress,
                    unit="batch",
                )
                for i, idx in enumerate(bar):
                    xb = x[idx]
                    if t.augment_shift:
                        xb = shift_images(xb, t.augment_shift, self.gen)
                    metrics = self.net.train_step(xb, y[idx], idx, self.gen)
                    self.step += 1
                    for k, v in metrics.items():
                        sums[k] = sums.get(k, 0) + v
                    if self._kill and self.step == self._kill[0]:
                        os.kill(os.getpid(), self._kill[1])
                    if self.progress and i % 20 == 0:
                        bar.set_postfix({k: f"{float(v):.4f}" for k, v in metrics.items()})
                bar.close()
                last = epoch == self.epochs - 1
                if last:
                    self.net.end_phase(phase, x, y, self.gen)
                record: dict[str, Any] = {
                    "phase": phase,
                    "epoch": epoch + 1,
                    "step": self.step,
                    "epoch_seconds": round(time.perf_counter() - tic, 3),
                    **{k: float(v) / (i + 1) for k, v in sums.items()},
                }
                if (epoch + 1) % t.eval_every == 0 or last:
                    record[f"{split_name}_acc"] = accuracy(self.net, split, t.eval_batch_size)
                record["elapsed_seconds"] = round(time.perf_counter() - self.start, 3)
                self.history.append(record)
                self._log(record)
                self.next_phase, self.next_epoch = (phase + 1, 0) if last else (phase, epoch + 1)
                self._save()
            if self.epochs == 0:  # train.init with nothing left to train but an ``after`` probe
                self.net.end_phase(phase, x, y, self.gen)
                self.next_phase, self.next_epoch = phase + 1, 0
                self._save()
        return self.finish()

    def finish(self) -> dict[str, Any]:
        """Final evaluation on every split; written to ``results.json``."""
        ds = self.dataset
        assert ds is not None
        bs = self.config.train.eval_batch_size
        tic = time.perf_counter()
        results: dict[str, Any] = {
            "preset": self.config.name,
            "kind": self.kind,
            "dataset": ds.name,
            "test_acc": accuracy(self.net, ds.test, bs),
        }
        results["test_error_pct"] = round(100 * (1 - results["test_acc"]), 3)
        ppl = perplexity(self.net, ds.test, bs)
        if ppl is not None:
            results["test_perplexity"] = ppl
        results["test_eval_seconds"] = round(time.perf_counter() - tic, 3)
        if ds.val is not None:
            results["val_acc"] = accuracy(self.net, ds.val, bs)
        # images: the first 10,000 training examples; text: every predicted position of every
        # training string (Hinton's figure is the accuracy on the training strings)
        n_train = len(ds.train) if self.config.data.dataset == "aesop" else 10000
        results["train_acc"] = accuracy(
            self.net, ds.train.subset(torch.arange(min(len(ds.train), n_train))), bs
        )
        results["train_acc_examples"] = min(len(ds.train), n_train)
        results["epochs"] = self.epochs
        results["wall_seconds"] = round(time.perf_counter() - self.start, 2)
        results["data_seconds"] = round(self.data_seconds, 3)
        results["device"] = str(self.device)
        results["threads"] = torch.get_num_threads()
        if self.out_dir is not None:
            atomic_write_text(self.out_dir / RESULTS, json.dumps(results, indent=2) + "\n")
        return results

    def _desc(self, phase: int, epoch: int) -> str:
        prefix = f"layer {phase} " if self.net.phases() > 1 else ""
        return f"{self.kind} {prefix}epoch {epoch + 1}/{self.epochs}"

    def _log(self, record: dict[str, Any]) -> None:
        if self.out_dir is not None:
            with open(self.out_dir / METRICS, "a") as f:
                f.write(json.dumps(record) + "\n")
        if self.progress:  # one line per epoch, on a terminal and in a log alike
            shown = [f"{k} {v:.4f}" for k, v in record.items() if k.endswith("acc")]
            head = self._desc(record["phase"], record["epoch"] - 1)
            print(f"{head}: {', '.join(shown)} ({record['epoch_seconds']:.1f} s)", file=sys.stderr)


def saved_config(saved: dict[str, Any], path: Path) -> tuple[RunConfig, tuple[int, ...], int]:
    """The configuration, input shape and class count stored in a checkpoint's header."""
    try:
        config = from_dict(RunConfig, saved["config"])
        in_shape, num_classes = tuple(int(n) for n in saved["in_shape"]), int(saved["num_classes"])
    except (KeyError, TypeError, ValueError, FFError) as exc:
        raise CheckpointError(f"{path}: no valid configuration ({exc})") from None
    return config, in_shape, num_classes


def init_layers(net: Trainable, config: RunConfig, run_dir: Path, device: torch.device) -> None:
    """Copy the FF layers (weights and buffers) of the run in ``run_dir`` into ``net``.

    The source must be an FF run whose ``model`` section equals ``config.model``: the same
    layers computing the same features. The readout, optimiser and training settings may differ.
    """
    assert isinstance(net, nn.Module)
    state = net.state_dict()
    wanted = {k for k in state if k.startswith("layers.")}
    if not wanted:
        raise ConfigError(f"train.init: a {type(net).__name__} has no FF layers to start from")
    path = run_dir / CHECKPOINT
    payload = read_checkpoint(path, device)
    saved = payload["config"]
    if saved.get("kind") != "ff":
        raise CheckpointError(
            f"{path}: holds a {saved.get('kind')} run; train.init needs an FF run"
        )
    # through the dataclasses: options added since that run take their defaults
    theirs = to_dict(saved_config(saved, path)[0])["model"]
    ours = to_dict(config)["model"]
    differ = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
    if differ:
        detail = "; ".join(f"{k}: {theirs.get(k)!r} there, {ours.get(k)!r} here" for k in differ)
        raise CheckpointError(f"{path}: its model differs from this run's ({detail[:400]})")
    layers = {k: v for k, v in payload["model"].items() if k.startswith("layers.")}
    if set(layers) != wanted or any(layers[k].shape != state[k].shape for k in wanted):
        raise CheckpointError(f"{path}: its layers do not fit this network (another input shape?)")
    net.load_state_dict(layers, strict=False)


def _parse_kill(text: str) -> tuple[int, int] | None:
    if not text:
        return None
    step, _, sig = text.partition(":")
    return int(step), int(getattr(signal, "SIG" + (sig or "KILL")))


def load_run(
    run_dir: Path, device: str = "cpu"
) -> tuple[RunConfig, str, Trainable, dict[str, Any]]:
    """A finished or interrupted run: its configuration, kind, network with weights, trainer state.

    The dataset is not loaded; the network is built from the saved configuration.
    """
    payload = read_checkpoint(run_dir / CHECKPOINT, device)
    saved = payload["config"]
    config, in_shape, num_classes = saved_config(saved, run_dir / CHECKPOINT)
    net = build_net(config, in_shape, num_classes, saved.get("kind") == "backprop")
    assert isinstance(net, nn.Module)
    load_into(net, payload, run_dir / CHECKPOINT)
    net.to(device).eval()
    return config, saved.get("kind", "ff"), net, payload["trainer"]
