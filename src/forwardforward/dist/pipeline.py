"""FF's own layer pipeline: each process trains a contiguous group of layers.

A layer learns from its own input only, so the layers of a net can sit on different processes
and learn at the same time. Stage 0 draws a batch's positive and negative rows (and the neutral
pass the probe learns from), trains its layers on them and sends what its last layer put out to
stage 1 *before* it updates its weights; stage 1 trains its layers on that while stage 0 goes
on with the next batch, and so on down. Nothing flows back: no gradient, no score. Each layer
still sees batch ``t`` after exactly its own ``t`` earlier updates and its input computed by
the layers below before their update ``t``, which is the order one process trains in, so the
pipeline gives the one-process result (the test suite checks it), with or without overlap.

``dist.buffer`` bounds how many batches a stage may run ahead of the next (sends not yet taken);
``dist.buffer = 0`` runs the stages without overlap: a stage waits until the next stage has
finished the batch it sent. Prediction (the probe, or every label's goodness) runs through the
same pipe, and the last stage counts what is correct. At every checkpoint the stages send their
layers and optimiser states to rank 0, which writes one ordinary checkpoint of the whole net.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from forwardforward.data.vision import Split
from forwardforward.dist.world import World, guard
from forwardforward.errors import ConfigError
from forwardforward.loop import Callback, Loop
from forwardforward.nets.feedforward import FFNet, StepState

__all__ = ["GatherStages", "MergeStageMetrics", "Stage", "partition", "pipeline_accuracy"]

HEADER = 64  # int64 words of a message header
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.bool, torch.uint8]
TAG_DATA, TAG_ACK = 0, 1


def partition(costs: Sequence[float], parts: int) -> list[range]:
    """Split consecutive items of ``costs`` into ``parts`` non-empty contiguous groups with the
    smallest possible largest group (dynamic programming)."""
    n = len(costs)
    if not 1 <= parts <= n:
        raise ConfigError(f"a pipeline of {parts} stages needs at least {parts} layers, not {n}")
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    # best[k][i]: the smallest largest group splitting the first i items into k groups
    best = [[inf] * (n + 1) for _ in range(parts + 1)]
    cut = [[0] * (n + 1) for _ in range(parts + 1)]
    best[0][0] = 0.0
    for k in range(1, parts + 1):
        for i in range(k, n + 1):
            for j in range(k - 1, i):
                value = max(best[k - 1][j], prefix[i] - prefix[j])
                if value < best[k][i]:
                    best[k][i], cut[k][i] = value, j
    bounds, i = [], n
    for k in range(parts, 0, -1):
        bounds.append(range(cut[k][i], i))
        i = cut[k][i]
    return bounds[::-1]


def check_pipeline(net: Any) -> FFNet:
    """The net, if a pipeline can train it; a clear error naming what stands in the way."""
    if type(net) is not FFNet:
        raise ConfigError(
            f"dist.mode = 'pipeline' trains a feed-forward FF net (an FFNet), not a "
            f"{type(net).__name__}"
        )
    c = net.config
    if c.train.schedule != "simultaneous":
        raise ConfigError(
            "dist.mode = 'pipeline' trains every layer at once: train.schedule = "
            "'simultaneous' (greedy training trains one layer at a time)"
        )
    if c.readout.probe_dropout > 0:
        raise ConfigError("dist.mode = 'pipeline' does not take readout.probe_dropout > 0")
    return net


class Stage:
    """This process's stage of the pipeline: its layers (``layers``), its neighbours, the
    messages it sends and receives. It trains the net's steps and predictions in their place
    (``net.pipe``)."""

    def __init__(self, world: World, net: FFNet, buffer: int) -> None:
        self.world, self.net, self.buffer = world, check_pipeline(net), buffer
        self.rank, self.size = world.rank, world.size
        costs = [float(sum(p.numel() for p in layer.parameters())) for layer in net.layers]
        self.stages = partition(costs, self.size)
        self.layers = self.stages[self.rank]
        self.first, self.last = self.rank == 0, self.rank == self.size - 1
        neg = net.config.negatives
        if net.sampler.needs_scores:
            if neg.scores != "probe":
                raise ConfigError(
                    "dist.mode = 'pipeline' chooses the negatives' labels on its first stage: "
                    "hard negatives there are scored by a probe (negatives.scores = 'probe')"
                )
            if max(net.score_layers) >= self.stages[0].stop:
                raise ConfigError(
                    "dist.mode = 'pipeline': hard negatives are chosen on the first stage, "
                    f"which holds layers {_span(self.stages[0])}; score them on those "
                    f"(--set negatives.score_layers={list(self.stages[0])}), not on layers "
                    f"{net.score_layers}"
                )
        net.stage_layers = self.layers
        net.pipe = self
        self.pending: deque[list[Any]] = deque()
        self.bytes_sent = 0
        """Bytes of activations this stage has sent downstream (for the communication model)."""
        self.training_sends: list[int] = []
        """Bytes of each training step's message downstream."""

    def describe(self) -> str:
        spans = ", ".join(f"rank {r}: layers {_span(s)}" for r, s in enumerate(self.stages))
        return f"pipeline of {self.size} stages ({spans}; the probe on rank {self.size - 1})"

    # -- messages --------------------------------------------------------------------------------

    def send(self, meta: list[int], tensors: list[Tensor]) -> None:
        """Send ``meta`` and ``tensors`` to the next stage without waiting (at most
        ``buffer`` batches in flight)."""
        words = [len(meta), *meta, len(tensors)]
        for t in tensors:
            words += [DTYPES.index(t.dtype), t.ndim, *t.shape]
        if len(words) > HEADER:
            raise ValueError("pipeline message header too long")
        header = torch.tensor(words + [0] * (HEADER - len(words)), dtype=torch.int64)
        device = tensors[0].device if tensors else torch.device("cpu")
        parts = [header.to(device), *(t.detach().contiguous() for t in tensors)]
        with guard(self.world, f"sending to rank {self.rank + 1}"):
            works = [dist.isend(p, self.rank + 1, tag=TAG_DATA) for p in parts]
        self.bytes_sent += sum(p.numel() * p.element_size() for p in parts[1:])
        self.pending.append([works, parts])
        while len(self.pending) > self.buffer:
            self._wait_oldest()
        if self.buffer == 0:  # no overlap: until the next stage has finished this batch
            ack = torch.zeros(1, dtype=torch.int64, device=device)
            with guard(self.world, f"waiting for rank {self.rank + 1}"):
                dist.recv(ack, self.rank + 1, tag=TAG_ACK)

    def _wait_oldest(self) -> None:
        works, _ = self.pending.popleft()
        with guard(self.world, f"sending to rank {self.rank + 1}"):
            for w in works:
                w.wait()

    def flush(self) -> None:
        """Wait until every message sent has been taken."""
        while self.pending:
            self._wait_oldest()

    def recv(self, device: torch.device) -> tuple[list[int], list[Tensor]]:
        """The next message from the previous stage: its ``meta`` and tensors."""
        header = torch.zeros(HEADER, dtype=torch.int64, device=device)
        with guard(self.world, f"waiting for rank {self.rank - 1}"):
            dist.recv(header, self.rank - 1, tag=TAG_DATA)
            words = header.tolist()
            k = int(words[0])
            meta, pos = [int(w) for w in words[1 : 1 + k]], 1 + k
            tensors = []
            for _ in range(int(words[pos])):
                code, ndim = int(words[pos + 1]), int(words[pos + 2])
                shape = [int(w) for w in words[pos + 3 : pos + 3 + ndim]]
                pos += 2 + ndim
                t = torch.empty(shape, dtype=DTYPES[code], device=device)
                dist.recv(t, self.rank - 1, tag=TAG_DATA)
                tensors.append(t)
        return meta, tensors

    def ack(self, device: torch.device) -> None:
        """No overlap: tell the previous stage that its batch is done."""
        if self.buffer == 0 and not self.first:
            with guard(self.world, f"answering rank {self.rank - 1}"):
                dist.send(
                    torch.ones(1, dtype=torch.int64, device=device), self.rank - 1, tag=TAG_ACK
                )

    # -- training --------------------------------------------------------------------------------

    def _send_state(self, state: StepState) -> None:
        downstream = {i: f for i, f in state.features.items() if i in self.net.readout_layers}
        ids = sorted(downstream)
        neutral = [] if state.neutral is None else [state.neutral]
        meta = [state.b, state.n, state.neutral_at, len(neutral), len(ids), *ids]
        tensors = [state.a, state.y, *neutral]
        self.send(meta, [*tensors, *(downstream[i] for i in ids)])

    def _recv_state(self, device: torch.device) -> StepState:
        meta, tensors = self.recv(device)
        b, n, neutral_at, has_neutral, k = meta[:5]
        ids = meta[5 : 5 + k]
        a, y = tensors[0], tensors[1]
        rest = tensors[2:]
        neutral = rest.pop(0) if has_neutral else None
        state = StepState(y=y, n=n, b=b, a=a, neutral=neutral, neutral_at=neutral_at)
        state.features = dict(zip(ids, rest, strict=True))
        return state

    def train_step(
        self, x: Tensor, y: Tensor, index: Tensor, gen: torch.Generator
    ) -> dict[str, Tensor]:
        """This stage's part of a training step: draw the batch (stage 0) or take it from
        the previous stage, train this stage's layers, pass the batch on before learning."""
        net = self.net
        step = int(net.schedulers[self.layers.start].last_epoch)
        if self.first:
            state = net.begin_step(x, y, gen)
        else:
            state = self._recv_state(x.device)
        net.run_layers(state, self.layers)
        if self.last:
            net.end_step(state, gen)
        else:
            before = self.bytes_sent
            self._send_state(state)  # before this stage's update: the next one sees batch t
            self.training_sends.append(self.bytes_sent - before)
        net.learn_state(state, step)
        self.ack(x.device)
        return state.metrics

    # -- prediction ------------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor | None:
        """Labels for images ``x`` through the pipe: on the last stage, None elsewhere."""
        net = self.net
        r = net.config.readout
        if net.probe is not None and r.kind == "probe":
            if self.first:
                level = net.config.model.neutral_level if r.probe_input == "neutral" else 0.0
                state = StepState(y=x.new_zeros(0, dtype=torch.long), n=len(x))
                state.neutral = net.present(net.flat(x), level)
            else:
                state = self._recv_state(x.device)
            net.advance_neutral(state, self.layers.stop)
            if not self.last:
                state.a = x.new_zeros(0)
                self._send_state(state)
                self.ack(x.device)
                return None
            feats = torch.cat([state.features[i] for i in sorted(set(net.readout_layers))], 1)
            logits: Tensor = net.probe(feats)
            self.ack(x.device)
            return logits.argmax(1)
        if self.first:
            h, total = net.score_span(net.flat(x), None, self.layers)
            b = len(x)
        else:
            meta, (h, total) = self.recv(x.device)
            b = meta[0]
            h, total = net.score_span(h, total, self.layers)
        if not self.last:
            self.send([b], [h, total])
            self.ack(x.device)
            return None
        self.ack(x.device)
        scores = total.view(b, net.num_classes)
        select = r.select if r.select != "auto" else ("argmax" if net.config.model.maximize else "argmin")
        return scores.argmax(1) if select == "argmax" else scores.argmin(1)


def _span(layers: range) -> str:
    return f"{layers.start}" if len(layers) == 1 else f"{layers.start}-{layers.stop - 1}"


@torch.no_grad()
def pipeline_accuracy(net: Any, split: Split, batch_size: int = 1000, *, stage: Stage) -> float:
    """The accuracy on ``split`` with predictions made through the pipe; every stage gets it."""
    was_training = net.training
    net.eval()
    correct = 0
    for xb, yb in zip(split.images.split(batch_size), split.labels.split(batch_size), strict=True):
        pred = stage.predict(xb)
        if pred is not None:
            correct += int((pred == yb).sum())
    stage.flush()
    net.train(was_training)
    total = torch.tensor([float(correct)], dtype=torch.float64, device=split.labels.device)
    with guard(stage.world, "sharing the accuracy"):
        dist.broadcast(total, src=stage.size - 1)
    return float(total.item()) / max(len(split), 1)


class MergeStageMetrics(Callback):
    """Every stage's metrics of an epoch (its layers' losses; the last stage's probe and
    FF accuracy) in rank 0's record."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage

    def on_epoch_end(self, loop: Loop, record: dict[str, Any]) -> None:
        own = {k: v for k, v in record.items() if k not in ("phase", "epoch", "step")}
        own.pop("epoch_seconds", None)
        everyone: list[Any] = [None] * self.stage.size
        self.stage.flush()
        with guard(self.stage.world, "gathering the epoch's metrics"):
            dist.all_gather_object(everyone, own)
        merged: dict[str, Any] = {}
        for part in everyone:
            merged.update(part)
        record.update(dict(sorted(merged.items(), key=lambda kv: _metric_order(kv[0]))))


def _metric_order(key: str) -> tuple[int, int, str]:
    if key.startswith("loss") and key[4:].isdigit():
        return (0, int(key[4:]), key)
    return (1, 0, key)


class GatherStages(Callback):
    """Every stage's layers (weights and buffers) and optimiser states into rank 0's copy of
    the whole net: before every checkpoint (``checkpoints``: rank 0 then writes one ordinary
    checkpoint), and once when training ends, so that rank 0 holds the trained net."""

    def __init__(self, stage: Stage, checkpoints: bool = True) -> None:
        self.stage, self.checkpoints = stage, checkpoints
        self._fresh = False  # gathered since the last step

    def on_batch_end(self, loop: Loop, metrics: dict[str, Tensor], batch: int) -> None:
        self._fresh = False

    def on_fit_end(self, loop: Loop) -> None:
        if not self._fresh:
            self.gather()

    def owned(self) -> tuple[dict[str, Tensor], dict[int, Any]]:
        stage, net = self.stage, self.stage.net
        prefixes = [f"layers.{i}." for i in stage.layers]
        optims = list(stage.layers)
        if stage.last and net.probe is not None:
            prefixes.append("probe.")
            optims.append(len(net.layers))
        if stage.first and net.scorer is not None:
            prefixes.append("scorer.")
            optims.append(len(net.layers) + 1)
        state = {
            k: v.detach().cpu()
            for k, v in net.state_dict().items()
            if any(k.startswith(p) for p in prefixes)
        }
        opt = {
            i: (net.optimizers[i].state_dict(), net.schedulers[i].state_dict())
            for i in optims
            if i < len(net.optimizers)
        }
        return state, opt

    def on_checkpoint(self, loop: Loop) -> None:
        if self.checkpoints:
            self.gather()

    def gather(self) -> None:
        """Every stage's part into rank 0's net and optimisers (every rank must call it)."""
        stage, net = self.stage, self.stage.net
        self._fresh = True
        stage.flush()
        main = stage.world.is_main
        parts: list[Any] | None = [None] * stage.size if main else None
        with guard(stage.world, "gathering the stages for a checkpoint"):
            dist.gather_object(self.owned(), parts, dst=0)
        if parts is None:
            return
        for r, (state, opt) in enumerate(parts):
            if r == stage.rank:
                continue
            net.load_state_dict(state, strict=False)
            for i, (o, s) in opt.items():
                net.optimizers[i].load_state_dict(o)
                net.schedulers[i].load_state_dict(s)
