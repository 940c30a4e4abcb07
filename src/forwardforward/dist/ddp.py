"""Data-parallel FF: every process holds the whole net and a shard of every global batch.

All processes draw the same batches (the loop's generator has the same seed everywhere), and
every random choice of a step (the wrong labels, hard negatives, dropout masks, augmentation)
is drawn for the *global* batch, from the same generator, as one process would draw it; each
process then keeps its own rows. What a draw needs from other rows (the scores hard negatives
are sampled from) is gathered first. Each layer's local loss is a mean over rows, so the
gradient of the global batch is the sum over processes of ``n_r / N`` times each process's
gradient: one all-reduce per step for every parameter together, before any optimiser steps.
Batch statistics (peer normalisation's mean activity) are the global batch's. The result is
the one-process run, to float rounding: the test suite checks it on two processes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import Tensor

from forwardforward.data.vision import Split
from forwardforward.dist.world import World, guard
from forwardforward.loop import Classifier, accuracy
from forwardforward.stepping import syncing

__all__ = ["Shard", "sharded_accuracy"]


def bounds(n: int, rank: int, size: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of ``n`` that ``rank`` of ``size`` keeps: contiguous, the first
    ``n % size`` ranks one row more (``torch.tensor_split``'s rule)."""
    base, extra = divmod(n, size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


class Shard:
    """This process's rows of every global batch, and the collectives of a data-parallel step
    (a :class:`~forwardforward.stepping.GradientSync` while :meth:`step` is active)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.rank, self.size = world.rank, world.size
        self._n = 0  # the global batch of the step in progress
        self.bytes_reduced = 0
        """Bytes this process has all-reduced for gradients (for the communication model)."""

    def bounds(self, n: int) -> tuple[int, int]:
        """This rank's rows ``[lo, hi)`` of a global batch of ``n``."""
        return bounds(n, self.rank, self.size)

    def rows(self, t: Tensor) -> Tensor:
        """This rank's rows of ``t`` ``(n, ...)``."""
        lo, hi = self.bounds(t.shape[0])
        return t[lo:hi]

    def blocks(self, t: Tensor, n: int) -> Tensor:
        """This rank's rows of each of the ``K`` blocks of ``n`` rows of ``t`` ``(K n, ...)``
        (negatives come as blocks that pair with the positives)."""
        if t.shape[0] % n:
            raise ValueError(f"{t.shape[0]} negatives are not blocks of the batch's {n} rows")
        lo, hi = self.bounds(n)
        return t.view(-1, n, *t.shape[1:])[:, lo:hi].flatten(0, 1)

    def gather(self, t: Tensor, n: int) -> Tensor:
        """Every rank's rows ``t`` ``(n_r, ...)`` stacked in rank order ``(n, ...)``."""
        sizes = [bounds(n, r, self.size) for r in range(self.size)]
        longest = max(hi - lo for lo, hi in sizes)
        padded = t.new_zeros(longest, *t.shape[1:])
        padded[: t.shape[0]] = t
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        with guard(self.world, "gathering scores"):
            dist.all_gather(parts, padded.contiguous())
        return torch.cat([p[: hi - lo] for p, (lo, hi) in zip(parts, sizes, strict=True)])

    # -- GradientSync --------------------------------------------------------------------------

    @property
    def weight(self) -> float:
        """This rank's share ``n_r / N`` of the step's global batch."""
        lo, hi = self.bounds(self._n)
        return (hi - lo) / max(self._n, 1)

    def _sum(self, t: Tensor, doing: str) -> Tensor:
        with guard(self.world, doing):
            dist.all_reduce(t)
        return t

    def reduce_losses(self, losses: Tensor) -> Tensor:
        return self._sum(losses * self.weight, "reducing the losses")

    def reduce_grads(self, params: Sequence[torch.nn.Parameter]) -> None:
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads]) * self.weight
        self.bytes_reduced += flat.numel() * flat.element_size()
        self._sum(flat, "reducing the gradients")
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean(self, x: Tensor) -> Tensor:
        local = x.mean(0)
        total = self._sum(x.detach().sum(0).float(), "reducing a batch statistic")
        return local + (total.to(local.dtype) / self._n - local).detach()

    def reduce_metrics(self, metrics: dict[str, Tensor]) -> dict[str, Tensor]:
        """The global batch's metrics (each a mean over rows) from this rank's."""
        if not metrics:
            return metrics
        keys = sorted(metrics)
        stacked = torch.stack([metrics[k].detach().float().reshape(()) for k in keys])
        reduced = self._sum(stacked * self.weight, "reducing the metrics")
        return dict(zip(keys, reduced.unbind(), strict=True))

    @contextmanager
    def step(self, n: int) -> Iterator[None]:
        """A data-parallel step on a global batch of ``n`` rows."""
        self._n = n
        with syncing(self):
            yield


@torch.no_grad()
def sharded_accuracy(
    net: Classifier, split: Split, batch_size: int = 1000, *, shard: Shard
) -> float:
    """:func:`~forwardforward.loop.accuracy` with the split's rows shared out between the
    processes; every process gets the accuracy of the whole split."""
    lo, hi = shard.bounds(len(split))
    mine = split.subset(torch.arange(lo, hi, device=split.labels.device))
    correct = round(accuracy(net, mine, batch_size) * len(mine))
    total = torch.tensor([float(correct)], dtype=torch.float64, device=split.labels.device)
    with guard(shard.world, "counting correct predictions"):
        dist.all_reduce(total)
    return float(total.item()) / max(len(split), 1)
