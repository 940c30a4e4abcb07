"""The processes of a distributed run: who they are, how they start, how a lost one is named.

``torchrun`` starts the processes and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_world` joins them in one process group (gloo on
CPU, NCCL on CUDA) with ``dist.timeout`` as the longest wait. Each process then knows every
other's host and process id, so that when a collective or a message fails, :func:`lost_ranks`
can say which rank is gone, even when the lost one hosted the rendezvous store.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from forwardforward.config import DistConfig
from forwardforward.errors import ConfigError, FFError

__all__ = ["LostRank", "World", "env_world_size", "guard", "init_world", "lost_ranks"]

ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class LostRank(FFError):
    """Another process of a distributed run died or stopped answering."""


@dataclass
class World:
    """This process's place in the run: its ``rank`` of ``size``, its ``local_rank`` on its
    node, the backend, and every rank's ``(host, pid)``."""

    rank: int
    size: int
    local_rank: int
    backend: str
    timeout: float
    peers: list[tuple[str, int]] = field(default_factory=list)

    @property
    def is_main(self) -> bool:
        """Rank 0: it writes the run folder and prints."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """The device this rank trains on: its own GPU (``cuda:LOCAL_RANK``) on CUDA."""
        if device.type == "cuda":
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (a plain picklable value), on every rank."""
        box = [value]
        with guard(self, "agreeing on a value"):
            dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        with guard(self, "waiting for the other processes"):
            dist.barrier()


def env_world_size() -> int | None:
    """``WORLD_SIZE`` as torchrun sets it, or None outside torchrun."""
    text = os.environ.get("WORLD_SIZE")
    return int(text) if text else None


def init_world(config: DistConfig, device: torch.device) -> World:
    """Join the process group torchrun set up (``env://``); a clear error outside torchrun."""
    missing = [k for k in ENV if not os.environ.get(k)]
    if missing:
        raise ConfigError(
            f"dist.mode = {config.mode!r} runs one process per rank under torchrun (missing "
            f"{', '.join(missing)}): torchrun --standalone --nproc-per-node 2 -m forwardforward "
            f"train PRESET --set dist.mode={config.mode}"
        )
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed")
    backend = config.backend
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise ConfigError("dist.backend = 'nccl' needs train.device = 'cuda'")
    world = World(
        rank=int(os.environ["RANK"]),
        size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        backend=backend,
        timeout=config.timeout,
    )
    if not dist.is_initialized():
        if backend == "nccl":
            world.device(device)
        dist.init_process_group(backend, timeout=timedelta(seconds=config.timeout))
    peers: list[Any] = [None] * world.size
    with guard(world, "joining the run"):
        dist.all_gather_object(peers, (socket.gethostname(), os.getpid()))
    world.peers = [(str(h), int(p)) for h, p in peers]
    return world


def _alive(pid: int) -> bool:
    """Whether a process on this host is running (a zombie, dead but not reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        state = stat.read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def lost_ranks(world: World) -> list[int] | None:
    """The ranks on this host whose process is gone; None if some ranks run elsewhere and
    none here is gone (they cannot be checked from here)."""
    host = socket.gethostname()
    here = [r for r, (h, _) in enumerate(world.peers) if h == host and r != world.rank]
    gone = [r for r in here if not _alive(world.peers[r][1])]
    if gone or len(here) == world.size - 1:
        return gone
    return None


@contextmanager
def guard(world: World, doing: str) -> Iterator[None]:
    """Turn a failed collective or message into a :class:`LostRank` naming the lost ranks."""
    try:
        yield
    except LostRank:
        raise
    except (RuntimeError, ConnectionError, OSError) as exc:
        if world.size < 2 or not world.peers:
            raise
        gone = lost_ranks(world)
        for _ in range(30):  # a peer that failed may take a moment to exit
            if gone != []:
                break
            time.sleep(0.1)
            gone = lost_ranks(world)
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        lower = text.lower()
        if gone:
            names = ", ".join(f"rank {r} (pid {world.peers[r][1]})" for r in gone)
            what = f"lost {names}"
        elif gone is None:
            what = "lost a rank on another host"
        elif "timeout" in lower or "timed out" in lower:
            what = f"no answer from the other ranks within dist.timeout = {world.timeout:g} s"
        elif any(w in lower for w in ("connection", "closed", "reset", "broken pipe")):
            what = "the connection to another rank broke"
        else:
            raise
        raise LostRank(
            f"rank {world.rank} stopped while {doing}: {what} ({text}). The last checkpoint "
            "is kept: start the same processes again with `ff train --resume RUN_DIR`"
        ) from None
