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
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from forwardforward.augment import augmentation
from forwardforward.checkpoint import atomic_write_text, load_into, read_checkpoint, save_checkpoint
from forwardforward.config import RunConfig, from_dict, to_dict, validate
from forwardforward.data.fetch import resolve_cache_dir
from forwardforward.data.framing import framing
from forwardforward.data.synthetic import synthetic_dataset
from forwardforward.data.text import aesop_dataset
from forwardforward.data.video import (
    SEQUENCES,
    cached_moving_mnist,
    moving_mnist,
    sequential_mnist,
)
from forwardforward.data.vision import Split, VisionDataset, load_dataset
from forwardforward.dist import (
    GatherStages,
    MergeStageMetrics,
    Stage,
    World,
    check_pipeline,
    data_parallel,
    init_world,
    pipeline_accuracy,
    sharded_accuracy,
    shutdown,
)
from forwardforward.errors import CheckpointError, ConfigError, FFError
from forwardforward.loop import (
    Callback,
    Evaluate,
    Loop,
    ProgressLines,
    accuracy,
    loop_state,
    perplexity,
    restore_loop,
)
from forwardforward.nets.backprop import BackpropNet, RecurrentBackpropNet
from forwardforward.nets.base import FFModule
from forwardforward.nets.channelwise import ChannelwiseBackpropNet, ChannelwiseNet, ChooseVoters
from forwardforward.nets.feedforward import FFNet
from forwardforward.nets.recurrent import RecurrentFFNet
from forwardforward.nets.sequence import SequenceFFNet
from forwardforward.perf import flush_denormal, resolve_precision
from forwardforward.progress import progress_style

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
) -> FFModule:
    """The network a configuration describes (or its backprop twin), for inputs framed as its
    dataset frames them (images, frames over time, symbol windows)."""
    frames = framing(config.data.dataset)
    if config.model.kind == "channelwise":
        if frames.kind != "image":
            raise ConfigError("model.kind = 'channelwise' is for image datasets")
        net = ChannelwiseBackpropNet if backprop else ChannelwiseNet
        return net(config, in_shape, num_classes)
    if backprop:
        if config.model.kind == "recurrent":
            return RecurrentBackpropNet(config, in_shape, num_classes, frames=frames.frames)
        return BackpropNet(config, in_shape, num_classes)
    if config.model.kind == "recurrent":
        return RecurrentFFNet(config, in_shape, num_classes, frames=frames.frames)
    if frames.kind == "text":
        return SequenceFFNet(config, in_shape, num_classes)
    return FFNet(config, in_shape, num_classes)


class RunFolder(Callback):
    """The run folder's files: ``config.json`` when a run starts, one ``metrics.jsonl`` line per
    epoch, and ``checkpoint.pt`` whenever the loop's state moves on (written atomically)."""

    def __init__(self, trainer: Trainer, out_dir: Path) -> None:
        self.trainer, self.out_dir = trainer, out_dir

    def on_fit_start(self, loop: Loop) -> None:
        self.trainer._write_config()

    def on_record(self, loop: Loop, record: dict[str, Any]) -> None:
        with open(self.out_dir / METRICS, "a") as f:
            f.write(json.dumps(record) + "\n")

    def on_checkpoint(self, loop: Loop) -> None:
        self.trainer._save()


class KillAtStep(Callback):
    """Test hook: send a signal to this process after optimisation step ``step``."""

    def __init__(self, step: int, sig: int) -> None:
        self.at, self.sig = step, sig

    def on_batch_end(self, loop: Loop, metrics: dict[str, Tensor], batch: int) -> None:
        if loop.step == self.at:
            os.kill(os.getpid(), self.sig)


@dataclass
class Trainer:
    """Trains one run of a preset: its data, its network (or twin), the loop and its run
    folder. ``out_dir`` receives config, metrics, checkpoint and results.

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

    def __post_init__(self) -> None:
        validate(self.config)
        t = self.config.train
        if t.threads > 0:
            torch.set_num_threads(t.threads)
        self.device = resolve_device(t.device)
        if t.precision == "auto":  # the concrete choice is what config.json records
            self.config = replace(
                self.config,
                train=replace(t, precision=resolve_precision(t.precision, self.device.type)),
            )
            t = self.config.train
        self.world: World | None = None
        if self.config.dist.mode != "none":  # one of several processes (torchrun)
            self.world = init_world(self.config.dist, self.device)
            self.device = self.world.device(self.device)
            if self.out_dir is not None:  # the processes' clocks may name it differently
                self.out_dir = Path(self.world.broadcast(str(self.out_dir)))
            if not self.world.is_main:
                self.progress = False
        torch.manual_seed(t.seed)
        start = time.perf_counter()
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
        self.data_seconds = time.perf_counter() - start
        ds = self.dataset
        self.net = build_net(self.config, ds.image_shape, ds.num_classes, self.backprop)
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
        self.net.configure(self.steps_per_epoch, self.epochs)
        split_name, split = self.eval_split()
        callbacks: list[Callback] = []
        self.measure: Callable[[Any, Split, int], float] = accuracy
        self.stage: Stage | None = None
        transform = augmentation(t.augment_shift, t.augment_flip, t.augment_rotate, t.augment_scale)
        if self.world is not None:
            if self.backprop:
                raise ConfigError(
                    "dist.mode trains FF nets on several processes; the backprop twin trains "
                    "on one (leave dist.mode out for --backprop)"
                )
            if self.config.dist.mode == "ddp":
                shard = data_parallel(self.world, self.net)
                self.measure = partial(sharded_accuracy, shard=shard)
            else:
                self.stage = Stage(self.world, check_pipeline(self.net), self.config.dist.buffer)
                self.measure = partial(pipeline_accuracy, stage=self.stage)
                callbacks.append(MergeStageMetrics(self.stage))
                if not self.stage.first:  # later stages take their batches from the pipe
                    transform = None
            if self.progress:
                print(self.describe_world(), file=sys.stderr)
        if isinstance(self.net, ChannelwiseNet) and self.config.channelwise.vote == "val":
            assert ds.val is not None  # validate() asks for data.val_fraction
            callbacks.append(ChooseVoters(ds.val, t.eval_batch_size))
        callbacks.append(
            Evaluate(split, split_name, t.eval_every, t.eval_batch_size, measure=self.measure)
        )
        if self.stage is not None:  # rank 0's copy of the net made whole (then saved)
            callbacks.append(GatherStages(self.stage, checkpoints=self.out_dir is not None))
        if self.out_dir is not None and self.is_main:
            callbacks.append(RunFolder(self, self.out_dir))
        if progress_style(self.progress) != "off":
            callbacks.append(ProgressLines())
        kill = _parse_kill(os.environ.get(KILL_ENV, ""))
        if kill:
            callbacks.append(KillAtStep(*kill))
        self.loop = Loop(
            self.net,
            ds.train,
            self.epochs,
            t.batch_size,
            gen=torch.Generator(device=self.device).manual_seed(t.seed),
            callbacks=callbacks,
            transform=transform,
            progress=self.progress,
            name=self.kind,
            start=start,
        )
        self._resumed = False

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run folder and prints (rank 0, or the only one)."""
        return self.world is None or self.world.is_main

    def describe_world(self) -> str:
        """One line on the processes of a distributed run."""
        w = self.world
        assert w is not None
        mode = self.stage.describe() if self.stage is not None else "data parallel"
        hosts = len({h for h, _ in w.peers})
        return f"{w.size} processes on {hosts} host(s), {w.backend}: {mode}"

    def close(self) -> None:
        """Leave the process group of a distributed run (nothing to do for one process).

        The ranks first wait for each other: a rank that tore its connections down while
        another was still finishing could abort that one's exit (gloo's threads)."""
        if self.world is not None:
            self.world.barrier()
            shutdown()

    # the loop's state, as a run folder's checkpoint holds it

    @property
    def step(self) -> int:
        """Optimisation steps taken so far."""
        return self.loop.step

    @property
    def history(self) -> list[dict[str, Any]]:
        """One record per finished epoch (what ``metrics.jsonl`` holds)."""
        return self.loop.history

    @property
    def gen(self) -> torch.Generator:
        """The run's generator: batch order, negatives, augmentation."""
        return self.loop.gen

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
        assert self.dataset is not None
        save_checkpoint(
            self.out_dir / CHECKPOINT,
            self.net,
            config={
                "kind": self.kind,
                "config": to_dict(self.config),
                "in_shape": list(self.dataset.image_shape),
                "num_classes": self.dataset.num_classes,
                "world_size": 1 if self.world is None else self.world.size,
            },
            optim=self.net.optim_state_dict(),
            trainer=loop_state(self.loop),
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
        size = 1 if self.world is None else self.world.size
        if int(saved.get("world_size", 1)) != size:
            raise CheckpointError(
                f"{self.out_dir / CHECKPOINT}: written by {saved.get('world_size', 1)} "
                f"process(es); resume it with as many (this run has {size})"
            )
        load_into(self.net, payload, self.out_dir / CHECKPOINT)
        self.net.load_optim_state_dict(payload["optim"])
        restore_loop(self.loop, payload["trainer"])
        self._resumed = True
        if self.is_main:  # epochs logged after the checkpoint was written are done again
            lines = "".join(json.dumps(record) + "\n" for record in self.loop.history)
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
            self.loop.run()
        else:
            with flush_denormal(self.config.train.flush_denormal):
                self.loop.run()
        return self.finish()

    def finish(self) -> dict[str, Any]:
        """Final evaluation on every split; written to ``results.json``."""
        ds = self.dataset
        assert ds is not None
        bs = self.config.train.eval_batch_size
        tic = time.perf_counter()
        measure = self.measure
        results: dict[str, Any] = {
            "preset": self.config.name,
            "kind": self.kind,
            "dataset": ds.name,
            "test_acc": measure(self.net, ds.test, bs),
        }
        results["test_error_pct"] = round(100 * (1 - results["test_acc"]), 3)
        # a pipeline's stages hold one part of the net each: no whole-net probabilities
        ppl = perplexity(self.net, ds.test, bs) if self.stage is None else None
        if ppl is not None:
            results["test_perplexity"] = ppl
        results["test_eval_seconds"] = round(time.perf_counter() - tic, 3)
        if ds.val is not None:
            results["val_acc"] = measure(self.net, ds.val, bs)
        # images: the first 10,000 training examples; text: every predicted position of every
        # training string (Hinton's figure is the accuracy on the training strings)
        n_train = len(ds.train) if framing(self.config.data.dataset).kind == "text" else 10000
        results["train_acc"] = measure(
            self.net, ds.train.subset(torch.arange(min(len(ds.train), n_train))), bs
        )
        results["train_acc_examples"] = min(len(ds.train), n_train)
        results["epochs"] = self.epochs
        results["wall_seconds"] = round(time.perf_counter() - self.loop.start, 2)
        results["data_seconds"] = round(self.data_seconds, 3)
        results["device"] = str(self.device)
        results["threads"] = torch.get_num_threads()
        if self.world is not None:
            results["dist"] = {"mode": self.config.dist.mode, "world_size": self.world.size}
        if self.out_dir is not None and self.is_main:
            atomic_write_text(self.out_dir / RESULTS, json.dumps(results, indent=2) + "\n")
        return results


def saved_config(saved: dict[str, Any], path: Path) -> tuple[RunConfig, tuple[int, ...], int]:
    """The configuration, input shape and class count stored in a checkpoint's header."""
    try:
        config = from_dict(RunConfig, saved["config"])
        in_shape, num_classes = tuple(int(n) for n in saved["in_shape"]), int(saved["num_classes"])
    except (KeyError, TypeError, ValueError, FFError) as exc:
        raise CheckpointError(f"{path}: no valid configuration ({exc})") from None
    return config, in_shape, num_classes


def init_layers(net: FFModule, config: RunConfig, run_dir: Path, device: torch.device) -> None:
    """Copy the FF layers (weights and buffers) of the run in ``run_dir`` into ``net``.

    The source must be an FF run whose ``model`` section equals ``config.model``: the same
    layers computing the same features. The readout, optimiser and training settings may differ.
    """
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


def load_run(run_dir: Path, device: str = "cpu") -> tuple[RunConfig, str, FFModule, dict[str, Any]]:
    """A finished or interrupted run: its configuration, kind, network with weights, trainer state.

    The dataset is not loaded; the network is built from the saved configuration.
    """
    payload = read_checkpoint(run_dir / CHECKPOINT, device)
    saved = payload["config"]
    config, in_shape, num_classes = saved_config(saved, run_dir / CHECKPOINT)
    net = build_net(config, in_shape, num_classes, saved.get("kind") == "backprop")
    load_into(net, payload, run_dir / CHECKPOINT)
    net.to(device).eval()
    return config, saved.get("kind", "ff"), net, payload["trainer"]
