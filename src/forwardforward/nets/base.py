"""The surface every network offers to the trainer."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from forwardforward.config import OptimConfig, RunConfig
from forwardforward.errors import ConfigError
from forwardforward.layers import normalize, standardize
from forwardforward.negatives import NegativeSampler
from forwardforward.perf import resolve_precision


@runtime_checkable
class Trainable(Protocol):
    """What :class:`forwardforward.train.Trainer` needs from a network.

    Training is a list of *phases* (one for simultaneous training, one per layer for greedy
    training), each of ``epochs`` epochs. ``begin_phase`` is called at the start of every phase,
    including after a resume, and must be deterministic.
    """

    training: bool

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...

    def configure(self, steps_per_epoch: int, epochs: int | None = None) -> None: ...

    def phases(self) -> int: ...

    def begin_phase(self, phase: int, x: Tensor, y: Tensor) -> None: ...

    def train_step(
        self, x: Tensor, y: Tensor, index: Tensor, gen: torch.Generator
    ) -> dict[str, Tensor]: ...

    def end_phase(self, phase: int, x: Tensor, y: Tensor, gen: torch.Generator) -> None: ...

    def begin_epoch(self, x: Tensor, y: Tensor, gen: torch.Generator) -> None: ...

    def predict(self, x: Tensor) -> Tensor: ...

    def optim_state_dict(self) -> dict[str, Any]: ...

    def load_optim_state_dict(self, state: dict[str, Any]) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...


class BatchShard(Protocol):
    """Data parallel: which rows of every global batch this process keeps, and the collectives
    of a step (see :class:`forwardforward.dist.ddp.Shard`)."""

    def bounds(self, n: int) -> tuple[int, int]: ...

    def rows(self, t: Tensor) -> Tensor: ...

    def blocks(self, t: Tensor, n: int) -> Tensor: ...

    def gather(self, t: Tensor, n: int) -> Tensor: ...

    def step(self, n: int) -> AbstractContextManager[None]: ...

    def reduce_metrics(self, metrics: dict[str, Tensor]) -> dict[str, Tensor]: ...


class PipeStage(Protocol):
    """Layer pipeline: this process's stage (see :class:`forwardforward.dist.pipeline.Stage`)."""

    def train_step(
        self, x: Tensor, y: Tensor, index: Tensor, gen: torch.Generator
    ) -> dict[str, Tensor]: ...


class OwnsOptimizers:
    """Mixin: a network that keeps its optimisers and schedulers in two lists."""

    optimizers: list[torch.optim.Optimizer]
    schedulers: list[torch.optim.lr_scheduler.LambdaLR]

    def optim_state_dict(self) -> dict[str, Any]:
        """Optimiser and scheduler states, for checkpoints."""
        return {
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() for s in self.schedulers],
        }

    def load_optim_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`optim_state_dict` returned."""
        for opt, s in zip(self.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(s)
        for sched, s in zip(self.schedulers, state["schedulers"], strict=True):
            sched.load_state_dict(s)


class FFModule(OwnsOptimizers, nn.Module):
    """Base class of every network the loop trains (the FF nets, their backprop twins,
    :class:`~forwardforward.FFSequential`): an ``nn.Module`` with the loop's hooks. Defaults:
    one phase, nothing to do between phases or epochs; subclasses define ``configure``,
    ``train_step`` and ``predict``."""

    def configure(self, steps_per_epoch: int, epochs: int | None = None) -> None:
        """Build the optimisers and schedules for ``epochs`` epochs of ``steps_per_epoch``."""
        raise NotImplementedError

    def train_step(
        self, x: Tensor, y: Tensor, index: Tensor, gen: torch.Generator
    ) -> dict[str, Tensor]:
        """One optimisation step on a batch; returns its metrics."""
        raise NotImplementedError

    def predict(self, x: Tensor) -> Tensor:
        """Predicted labels ``(B,)``."""
        raise NotImplementedError

    def phases(self) -> int:
        return 1

    def begin_phase(self, phase: int, x: Tensor, y: Tensor) -> None:
        return None

    def end_phase(self, phase: int, x: Tensor, y: Tensor, gen: torch.Generator) -> None:
        return None

    def begin_epoch(self, x: Tensor, y: Tensor, gen: torch.Generator) -> None:
        """Called before every epoch, with the run's generator (e.g. to refresh negatives)."""
        return None

    def end_epoch(self, x: Tensor, y: Tensor, gen: torch.Generator) -> None:
        """Called after every epoch's last step, before it is evaluated (``x``, ``y``: the
        training set, empty for a ``DataLoader``)."""
        return None


class NetBase(FFModule):
    """What the networks built from a :class:`~forwardforward.config.RunConfig` share."""

    config: RunConfig
    layers: nn.ModuleList
    sampler: NegativeSampler
    probe: torch.nn.Linear | None
    autocast_dtype: torch.dtype | None

    def _build_optimizers(self, layer_steps: int, probe_steps: int) -> None:
        """One optimiser per layer (``optim``) with its schedule over ``layer_steps`` steps,
        then the probe's (``readout.probe_*``) over ``probe_steps``, if the net has one."""
        o = self.config.optim
        self.optimizers = [optimizer_from_config(list(lay.parameters()), o) for lay in self.layers]
        self.schedulers = [
            torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(o.schedule, layer_steps, o.warmup))
            for opt in self.optimizers
        ]
        if self.probe is not None:
            self._add_readout_optimizer(self.probe, probe_steps)

    def _add_readout_optimizer(self, head: nn.Module, steps: int) -> None:
        """An optimiser for a linear readout ``head`` (``readout.probe_*``) with the schedule
        over ``steps`` steps, after the others."""
        r = self.config.readout
        popt = make_optimizer(
            list(head.parameters()), r.probe_optimizer, r.probe_lr, r.probe_momentum,
            r.probe_weight_decay,
        )  # fmt: skip
        self.optimizers.append(popt)
        self.schedulers.append(
            torch.optim.lr_scheduler.LambdaLR(popt, lr_lambda(self.config.optim.schedule, steps))
        )

    def _autocast(self, x: Tensor) -> torch.autocast:
        """bf16 autocast on ``x``'s device when ``train.precision = "bf16"``, else a no-op."""
        return torch.autocast(
            x.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        )

    def label_scores(self, x: Tensor, layers: list[int] | None = None) -> Tensor:
        raise NotImplementedError

    def probe_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Predicted labels ``(B,)`` by the configured readout: the probe's argmax, or the
        best label's goodness (argmax, or argmin under the inverted objective)."""
        if self.probe is not None and self.config.readout.kind == "probe":
            logits: Tensor = self.probe(self.probe_features(x))
            return logits.argmax(1)
        scores = self.label_scores(x)
        select = self.config.readout.select
        if select == "auto":
            select = "argmax" if self.config.model.maximize else "argmin"
        return scores.argmax(1) if select == "argmax" else scores.argmin(1)

    def _readout_norm(self, h: Tensor) -> Tensor:
        """One readout layer's activities ``(B, H)`` normalised for the probe: per-sample
        standardisation (``readout.probe_norm = "std"``) or the model's norm (RMS if none)."""
        if self.config.readout.probe_norm == "std":
            return standardize(h)
        m = self.config.model
        return normalize(h, m.norm if m.norm != "none" else "rms")

    def negative_scores(self, x: Tensor, feats: Tensor | None) -> Tensor | None:
        """What a hard-negative sampler draws wrong labels from, higher meaning more likely
        ``(B, C)``: the probe's logits on ``feats`` (``negatives.scores = "probe"``) or every
        label's goodness (negated under the inverted objective); None for other samplers."""
        if not self.sampler.needs_scores:
            return None
        if self.config.negatives.scores == "probe":
            assert self.probe is not None and feats is not None
            logits: Tensor = self.probe(feats).detach()
            return logits
        scores = self.label_scores(x)
        return scores if self.config.model.maximize else -scores


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of ``train.precision``: bf16, or None for plain fp32. ``auto`` (a net
    built outside a :class:`~forwardforward.train.Trainer`, which resolves it for its device)
    is bf16 where the default device, CUDA when present else the CPU, multiplies bf16 fast."""
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.bfloat16 if resolve_precision(precision, device_type) == "bf16" else None


def pixels(x: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    """uint8 pixels -> float ``(p / 255 - mean) / std``; float inputs (already prepared, such as
    one-hot text windows) pass through unchanged."""
    if x.is_floating_point():
        return x
    f = x.float() / 255.0
    return f if (mean, std) == (0.0, 1.0) else (f - mean) / std


def lr_lambda(schedule: str, total_steps: int, warmup: int = 0) -> Callable[[int], float]:
    """The learning-rate factor at a step: ``constant``; ``cooldown`` (1 for the first half,
    then linear to 0 over the second, as Hinton's and loeweX's code); ``cosine`` (to 0); times a
    linear ramp over the first ``warmup`` steps."""
    total = max(total_steps, 1)
    base: Callable[[int], float]
    if schedule == "constant":
        base = lambda step: 1.0  # noqa: E731
    elif schedule == "cooldown":
        half = total / 2
        base = lambda step: 1.0 if step < half else max(0.0, (total - step) / (total - half))  # noqa: E731
    elif schedule == "cosine":
        import math

        base = lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))  # noqa: E731
    else:
        raise ConfigError(
            f"unknown schedule {schedule!r}; choose one of: constant, cooldown, cosine"
        )
    if warmup <= 0:
        return base
    return lambda step: base(step) * min(1.0, (step + 1) / warmup)


def make_optimizer(
    params: list[torch.nn.Parameter],
    name: str,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    decay_bias: bool = True,
) -> torch.optim.Optimizer:
    """An optimiser by name: ``sgd`` (with momentum), ``adam``, ``adamw`` or ``rmsprop``.

    ``decay_bias=False`` leaves vectors (biases) out of the weight decay, as Hinton's Matlab
    code does. SGD, Adam and AdamW use PyTorch's fused kernels where the parameters live on the
    CPU or a CUDA device: one pass over each weight instead of several (about 3x faster steps
    on CPU).
    """
    groups: list[dict[str, Any]] = [{"params": params}]
    if not decay_bias and weight_decay:
        groups = [
            {"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]
        groups = [g for g in groups if g["params"]]
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") for p in params)
    if name == "sgd":
        return torch.optim.SGD(
            groups, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=fused or None
        )
    if name == "adam":
        return torch.optim.Adam(
            groups, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused or None
        )
    if name == "adamw":
        return torch.optim.AdamW(
            groups, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused or None
        )
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer {name!r}; choose one of: sgd, adam, adamw, rmsprop")


def optimizer_from_config(
    params: list[torch.nn.Parameter], cfg: OptimConfig
) -> torch.optim.Optimizer:
    """:func:`make_optimizer` from an :class:`OptimConfig`."""
    b1, b2 = cfg.betas
    return make_optimizer(
        params, cfg.name, cfg.lr, cfg.momentum, cfg.weight_decay, (b1, b2), cfg.decay_bias
    )
