"""The one training loop: any FF network (or backprop twin), fed by tensors, a dataset or a
``DataLoader``, with side jobs as callbacks.

The module says *what* a step is (:class:`~forwardforward.nets.base.Trainable`:
``train_step``, ``predict`` and a few optional hooks); the loop says *when*: phases (one, or one
per layer for greedy training), epochs, batches. Run folders, checkpoints, metrics, progress,
evaluation and test hooks are :class:`Callback` objects a caller adds or drops::

    history = ff.fit(net, data, epochs=4, batch_size=100, eval_data=data.test)

For in-memory data (a catalog dataset, tensors, a map-style ``Dataset``, materialised once) the
whole training set stays on the device and batches are index slices of one seeded permutation;
a ``DataLoader`` is iterated as it is, batch by batch.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from forwardforward.checkpoint import load_into, read_checkpoint, save_checkpoint
from forwardforward.data.vision import Split, VisionDataset
from forwardforward.errors import CheckpointError, ConfigError
from forwardforward.nets.base import OwnsOptimizers
from forwardforward.progress import progress, progress_style

__all__ = [
    "Callback",
    "Checkpoint",
    "Evaluate",
    "Loop",
    "ProgressLines",
    "accuracy",
    "as_split",
    "fit",
    "loop_state",
    "perplexity",
    "restore_loop",
]

#: A batch transform applied on the device before each step (e.g. random shifts).
Transform = Callable[[Tensor, torch.Generator], Tensor]


class Callback:
    """A side job of the loop. Every hook does nothing unless overridden.

    ``on_epoch_end`` may add entries to the epoch's record (evaluation does); ``on_record`` sees
    the finished record once the loop's state points past the epoch (logs, checkpoints).
    """

    def on_fit_start(self, loop: Loop) -> None:
        """Before the first phase (also when a resumed run starts again)."""

    def on_batch_end(self, loop: Loop, metrics: dict[str, Tensor], batch: int) -> None:
        """After every optimisation step (``loop.step`` counts them)."""

    def on_epoch_end(self, loop: Loop, record: dict[str, Any]) -> None:
        """After an epoch's last step: add metrics to ``record``."""

    def on_record(self, loop: Loop, record: dict[str, Any]) -> None:
        """After ``record`` joined ``loop.history`` (logs, progress lines)."""

    def on_checkpoint(self, loop: Loop) -> None:
        """The loop's state moved on (``next_phase``, ``next_epoch``, ``step``, ``gen``,
        ``history``): a checkpoint written now resumes exactly from here."""

    def on_fit_end(self, loop: Loop) -> None:
        """After the last phase."""


class Classifier(Protocol):
    """What evaluation needs: a module's train/eval switch and ``predict(x) -> labels``."""

    training: bool

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...

    def predict(self, x: Tensor) -> Tensor: ...


@torch.no_grad()
def accuracy(net: Classifier, split: Split, batch_size: int = 1000) -> float:
    """Fraction of ``split`` that ``net.predict`` labels correctly (in eval mode)."""
    was_training = net.training
    net.eval()
    correct = 0
    for xb, yb in zip(split.images.split(batch_size), split.labels.split(batch_size), strict=True):
        correct += int((net.predict(xb) == yb).sum())
    net.train(was_training)
    return correct / max(len(split), 1)


@torch.no_grad()
def perplexity(net: Classifier, split: Split, batch_size: int = 1000) -> float | None:
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
class Evaluate(Callback):
    """Scores ``split`` every ``every`` epochs and after each phase's last epoch, as
    ``<name>_acc`` in the epoch's record."""

    split: Split
    name: str = "test"
    every: int = 1
    batch_size: int = 1000
    measure: Callable[[Classifier, Split, int], float] = accuracy
    """How the accuracy is taken (:func:`accuracy`; distributed runs share the work out)."""

    def on_epoch_end(self, loop: Loop, record: dict[str, Any]) -> None:
        if record["epoch"] % self.every == 0 or record["epoch"] == loop.epochs:
            net = cast(Classifier, loop.module)
            record[f"{self.name}_acc"] = self.measure(net, self.split, self.batch_size)


@dataclass
class ProgressLines(Callback):
    """One line per epoch on stderr: its accuracies and its time."""

    def on_record(self, loop: Loop, record: dict[str, Any]) -> None:
        import sys

        shown = [f"{k} {v:.4f}" for k, v in record.items() if k.endswith("acc")]
        head = loop.describe(record["phase"], record["epoch"] - 1)
        print(f"{head}: {', '.join(shown)} ({record['epoch_seconds']:.1f} s)", file=sys.stderr)


def loop_state(loop: Loop) -> dict[str, Any]:
    """What a checkpoint keeps of the loop to resume it exactly: where it is (the next phase
    and epoch, the step), its generator, its history and the time spent so far."""
    return {
        "phase": loop.next_phase,
        "epoch": loop.next_epoch,
        "step": loop.step,
        "generator": loop.gen.get_state(),
        "history": json.dumps(loop.history),
        "elapsed": time.perf_counter() - loop.start,
    }


def restore_loop(loop: Loop, state: dict[str, Any]) -> None:
    """Put ``loop`` back where :func:`loop_state` found it."""
    loop.next_phase, loop.next_epoch, loop.step = state["phase"], state["epoch"], state["step"]
    generator = state["generator"]
    loop.gen.set_state(generator.cpu() if loop.gen.device.type == "cpu" else generator)
    loop.history = json.loads(state["history"])
    loop.start = time.perf_counter() - float(state.get("elapsed", 0.0))


class Checkpoint(Callback):
    """Keeps a checkpoint of the module, its optimisers and the loop at ``path``, rewritten
    (atomically) after every epoch; :func:`fit` resumes from it when it exists. The file holds
    tensors and plain values only (see :mod:`forwardforward.checkpoint`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_checkpoint(self, loop: Loop) -> None:
        module = loop.module
        optim = module.optim_state_dict() if isinstance(module, OwnsOptimizers) else {}
        save_checkpoint(
            self.path,
            module,
            config={"kind": "fit", "module": type(module).__name__},
            optim=optim,
            trainer=loop_state(loop),
        )

    def resume(self, loop: Loop) -> bool:
        """Load the checkpoint into ``loop`` and its module, if there is one; True if so."""
        if not self.path.exists():
            return False
        payload = read_checkpoint(self.path, loop.gen.device)
        module = loop.module
        if payload["config"].get("module") != type(module).__name__:
            raise CheckpointError(
                f"{self.path}: holds a {payload['config'].get('module')}, not a "
                f"{type(module).__name__}"
            )
        load_into(module, payload, self.path)
        if isinstance(module, OwnsOptimizers):
            module.load_optim_state_dict(payload["optim"])
        restore_loop(loop, payload["trainer"])
        return True


def as_split(data: Any, device: torch.device | None = None) -> Split:
    """Training data as one in-memory :class:`Split`: a :class:`Split`, a dataset's ``train``
    split, a pair of tensors ``(x, y)``, or a map-style ``torch.utils.data.Dataset`` of
    ``(x, y)`` pairs (stacked once)."""
    if isinstance(data, VisionDataset):
        split = data.train
    elif isinstance(data, Split):
        split = data
    elif isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        x, y = data
        if len(x) != len(y):
            raise ConfigError(f"{len(x)} inputs but {len(y)} labels")
        split = Split(x, y.long())
    elif isinstance(data, Dataset) and hasattr(data, "__len__"):
        n = len(data)
        if n == 0:
            raise ConfigError("the dataset is empty")
        pairs = [data[i] for i in range(n)]
        xs = torch.stack([torch.as_tensor(p[0]) for p in pairs])
        ys = torch.as_tensor([int(p[1]) for p in pairs], dtype=torch.long)
        split = Split(xs, ys)
    else:
        raise ConfigError(
            f"cannot train on a {type(data).__name__}: give a dataset from load_dataset, a "
            "Split, a pair of tensors (x, y), a map-style torch Dataset or a DataLoader"
        )
    return split if device is None else split.to(device)


@dataclass
class Loop:
    """Trains ``module`` for ``epochs`` epochs in each of its phases; see :func:`fit`.

    The loop's state (``next_phase``, ``next_epoch``, ``step``, ``gen``, ``history``) is what
    a checkpoint must hold to resume exactly.
    """

    module: nn.Module
    data: Split | DataLoader[Any]
    epochs: int
    batch_size: int = 100
    gen: torch.Generator = field(default_factory=torch.Generator)
    callbacks: list[Callback] = field(default_factory=list)
    transform: Transform | None = None
    progress: bool = True
    name: str = "ff"
    start: float = field(default_factory=time.perf_counter)
    history: list[dict[str, Any]] = field(default_factory=list)
    step: int = 0
    next_phase: int = 0
    next_epoch: int = 0

    def phases(self) -> int:
        phases = getattr(self.module, "phases", None)
        return int(phases()) if phases is not None else 1

    def describe(self, phase: int, epoch: int) -> str:
        """``ff epoch 3/4`` (``ff layer 1 epoch 3/4`` for a greedy run's phases)."""
        prefix = f"layer {phase} " if self.phases() > 1 else ""
        return f"{self.name} {prefix}epoch {epoch + 1}/{self.epochs}"

    def _hook(self, name: str, *args: Any) -> None:
        hook = getattr(self.module, name, None)
        if hook is not None:
            hook(*args)

    def _batches(self, x: Tensor, y: Tensor) -> Iterable[tuple[Tensor, Tensor, Tensor]]:
        if isinstance(self.data, DataLoader):
            device, seen = x.device, 0
            for xb, yb in self.data:
                index = torch.arange(seen, seen + len(yb), device=device)
                seen += len(yb)
                yield xb.to(device), yb.to(device).long(), index
            return
        perm = torch.randperm(len(y), generator=self.gen, device=self.gen.device)
        for idx in perm.split(self.batch_size):
            yield x[idx], y[idx], idx

    def _tensors(self) -> tuple[Tensor, Tensor]:
        """The whole training set for the phase hooks (empty tensors for a ``DataLoader``)."""
        if isinstance(self.data, Split):
            return self.data.images, self.data.labels
        device = self.gen.device
        return torch.empty(0, device=device), torch.empty(0, dtype=torch.long, device=device)

    def run(self) -> list[dict[str, Any]]:
        """Train from ``next_phase`` / ``next_epoch`` to the end; returns the history."""
        x, y = self._tensors()
        self.module.train()
        for cb in self.callbacks:
            cb.on_fit_start(self)
        for phase in range(self.next_phase, self.phases()):
            self._hook("begin_phase", phase, x, y)
            first_epoch = self.next_epoch if phase == self.next_phase else 0
            for epoch in range(first_epoch, self.epochs):
                self._epoch(phase, epoch, x, y)
            if self.epochs == 0:  # nothing to train but what the phase's end does
                self._hook("end_phase", phase, x, y, self.gen)
                self.next_phase, self.next_epoch = phase + 1, 0
                for cb in self.callbacks:
                    cb.on_checkpoint(self)
        for cb in self.callbacks:
            cb.on_fit_end(self)
        return self.history

    def _epoch(self, phase: int, epoch: int, x: Tensor, y: Tensor) -> None:
        tic = time.perf_counter()
        self._hook("begin_epoch", x, y, self.gen)
        sums: dict[str, Tensor] = {}
        loader = isinstance(self.data, DataLoader)
        total = len(self.data) if loader else math.ceil(len(y) / self.batch_size)
        bar = progress(
            self._batches(x, y),
            desc=self.describe(phase, epoch),
            total=total,
            enabled=self.progress,
            unit="batch",
        )
        batches = 0
        for i, (xb, yb, idx) in enumerate(bar):
            if self.transform is not None:
                xb = self.transform(xb, self.gen)
            metrics = self.module.train_step(xb, yb, idx, self.gen)  # type: ignore[operator]
            self.step += 1
            batches = i + 1
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0) + v
            for cb in self.callbacks:
                cb.on_batch_end(self, metrics, i)
            if self.progress and i % 20 == 0:
                bar.set_postfix({k: f"{float(v):.4f}" for k, v in metrics.items()})
        bar.close()
        self._hook("end_epoch", x, y, self.gen)
        last = epoch == self.epochs - 1
        if last:
            self._hook("end_phase", phase, x, y, self.gen)
        record: dict[str, Any] = {
            "phase": phase,
            "epoch": epoch + 1,
            "step": self.step,
            "epoch_seconds": round(time.perf_counter() - tic, 3),
            **{k: float(v) / max(batches, 1) for k, v in sums.items()},
        }
        for cb in self.callbacks:
            cb.on_epoch_end(self, record)
        record["elapsed_seconds"] = round(time.perf_counter() - self.start, 3)
        self.history.append(record)
        self.next_phase, self.next_epoch = (phase + 1, 0) if last else (phase, epoch + 1)
        for cb in self.callbacks:
            cb.on_record(self, record)
        for cb in self.callbacks:
            cb.on_checkpoint(self)


def fit(
    module: nn.Module,
    data: Any,
    *,
    epochs: int,
    batch_size: int = 100,
    eval_data: Split | None = None,
    eval_every: int = 1,
    callbacks: Sequence[Callback] = (),
    seed: int = 0,
    transform: Transform | None = None,
    progress: bool = True,
    checkpoint: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Train ``module`` with the loop; returns one record per epoch.

    Args:
        module: an FF network or backprop twin: an ``nn.Module`` with ``train_step(x, y,
            index, gen) -> metrics`` and ``predict(x) -> labels``; ``configure(steps_per_epoch,
            epochs)``, ``phases()``, ``begin_phase``, ``begin_epoch`` and ``end_phase`` are
            called when it has them.
        data: a dataset from :func:`~forwardforward.data.load_dataset` (its training split; its
            test split is scored every epoch unless ``eval_data`` says otherwise), a
            :class:`~forwardforward.data.Split`, tensors ``(x, y)``, a map-style
            ``torch.utils.data.Dataset`` (stacked into memory once) or a ``DataLoader``
            (iterated as it is each epoch).
        epochs: epochs per phase.
        batch_size: examples per step (in-memory data).
        eval_data: a split scored as ``test_acc`` every ``eval_every`` epochs.
        callbacks: extra side jobs (run folders, checkpoints, logs); they run after the
            checkpoint is saved and before each epoch is evaluated.
        seed: seeds the loop's generator (batch order, negatives, augmentation).
        transform: a batch transform ``(x, gen) -> x`` applied before each step.
        progress: a bar on a terminal, one line per epoch in a log; False: silent.
        checkpoint: a file rewritten after every epoch (weights, optimisers, the loop's state);
            when it exists already, training resumes from it exactly where it stopped.
    """
    if epochs < 0 or batch_size < 1:
        raise ConfigError(f"epochs must be >= 0 and batch_size >= 1, got {epochs}, {batch_size}")
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    if eval_data is None and isinstance(data, VisionDataset):
        eval_data = data.test
    source: Split | DataLoader[Any]
    if isinstance(data, DataLoader):
        source, steps = data, len(data)
    else:
        source = as_split(data, device)
        steps = math.ceil(len(source) / batch_size)
    configure = getattr(module, "configure", None)
    if configure is not None:
        configure(steps, epochs)
    jobs: list[Callback] = []
    if eval_data is not None:
        jobs.append(Evaluate(eval_data.to(device), every=eval_every))
    if progress_style(progress) != "off":
        jobs.append(ProgressLines())
    saver = Checkpoint(checkpoint) if checkpoint is not None else None
    saved: list[Callback] = [saver] if saver is not None else []
    loop = Loop(
        module,
        source,
        epochs,
        batch_size,
        gen=torch.Generator(device=device).manual_seed(seed),
        # the checkpoint first (a callback of yours may stop the run once it is saved), then
        # yours, then the evaluation (what yours do at an epoch's end, e.g. ChooseVoters, is
        # done when the epoch is evaluated)
        callbacks=[*saved, *callbacks, *jobs],
        transform=transform,
        progress=progress,
    )
    if saver is not None:
        saver.resume(loop)
    return loop.run()
