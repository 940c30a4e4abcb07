"""Training on several processes with ``torch.distributed``, launched by ``torchrun``.

Two modes (``dist.mode``), for the feed-forward FF net:

- ``ddp``, data parallel (:mod:`forwardforward.dist.ddp`): every process holds the whole net
  and a shard of every batch; each layer's gradients are all-reduced, then every optimiser
  steps. The run is the one-process run, to float rounding.
- ``pipeline``, FF's own layer pipeline (:mod:`forwardforward.dist.pipeline`): each process
  trains a contiguous group of layers; activations flow downstream, nothing flows back.

::

    torchrun --standalone --nproc-per-node 2 -m forwardforward train mnist-quick \\
        --set dist.mode=ddp --set train.threads=1

Rank 0 writes the run folder; a process that dies stops the others with an error naming it
(:class:`~forwardforward.dist.world.LostRank`) and ``ff train --resume RUN_DIR``, started the
same way, continues the run.
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist
from torch import nn

from forwardforward.dist.ddp import Shard, sharded_accuracy
from forwardforward.dist.pipeline import (
    GatherStages,
    MergeStageMetrics,
    Stage,
    check_pipeline,
    partition,
    pipeline_accuracy,
)
from forwardforward.dist.world import LostRank, World, env_world_size, guard, init_world
from forwardforward.errors import ConfigError
from forwardforward.nets.feedforward import FFNet

__all__ = [
    "GatherStages",
    "LostRank",
    "MergeStageMetrics",
    "Shard",
    "Stage",
    "World",
    "check_pipeline",
    "data_parallel",
    "env_world_size",
    "guard",
    "init_world",
    "partition",
    "pipeline_accuracy",
    "sharded_accuracy",
    "shutdown",
]


def data_parallel(world: World, net: Any) -> Shard:
    """Make ``net`` train data-parallel in ``world``: its steps keep this process's rows and
    sum the gradients over the processes. A clear error for nets it cannot keep exact."""
    if type(net) is not FFNet:
        raise ConfigError(
            f"dist.mode = 'ddp' trains a feed-forward FF net (an FFNet), not a "
            f"{type(net).__name__}"
        )
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        raise ConfigError(
            "dist.mode = 'ddp' keeps every batch statistic global; this net's batch norm "
            "would see only one shard: use model options without out_norm = 'batch'"
        )
    shard = Shard(world)
    net.shard = shard
    return shard


def shutdown() -> None:
    """Leave the process group (if this process joined one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
