"""Typed, validated run configuration; TOML presets; ``--set key=value`` overrides.

A run is described by one :class:`RunConfig`. Presets are TOML files in
``forwardforward/presets/``; every key is checked against the dataclasses below, so a typo is an
error that names the key and the accepted ones, never a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from forwardforward.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")


@dataclass
class DataConfig:
    """Which data, and how it is split."""

    dataset: str = "mnist"
    val_fraction: float = 0.0
    """Fraction of the training set held out for validation (0: none)."""
    fraction: float = 1.0
    """Fraction of the training set used at all (a quick-run knob)."""
    eval_split: str = "test"
    """Split scored every ``eval_every`` epochs: ``test`` or ``val``."""
    frames: int = 20
    """Moving MNIST: frames per sequence."""
    canvas: int = 64
    """Moving MNIST: canvas size in pixels."""
    cache: bool = False
    """Moving MNIST: keep the generated videos on disk (``$FORWARDFORWARD_CACHE``, else the
    user cache's ``generated/``), checked by sha256 when read back."""

    def check(self) -> None:
        """This section's own rules."""
        _choice("data.eval_split", self.eval_split, ("test", "val"))
        if self.eval_split == "val" and self.val_fraction <= 0:
            raise ConfigError("data.eval_split = 'val' needs data.val_fraction > 0")
        if not 0 < self.fraction <= 1 or not 0 <= self.val_fraction < 1:
            raise ConfigError("data.fraction must be in (0, 1] and data.val_fraction in [0, 1)")


@dataclass
class ModelConfig:
    """The network: layers, normalisation, objective and label embedding."""

    kind: str = "feedforward"
    local: list[list[int]] = field(default_factory=list)
    """Locally connected layers first, one ``[out_channels, kernel, stride, padding]`` each."""
    stack: list[dict[str, Any]] = field(default_factory=list)
    """Layers of any registered kind after ``local`` and before the fully connected ``layers``:
    one ``[[model.stack]]`` table each, ``kind = "..."`` and that kind's own options (see
    :mod:`forwardforward.layers.kinds`)."""
    layers: list[int] = field(default_factory=lambda: [500, 500])
    """Widths of the fully connected layers (after any locally connected ones)."""
    norm: str = "rms"
    activation: str = "relu"
    init: str = "torch"
    bias: bool = True
    goodness: str = "sum_squares"
    goodness_of: str = "output"
    """What the goodness is computed on: the layer's ``output`` (what it passes on), or
    ``relu`` of its pre-activation. SCFF passes ``triangle`` activities on but computes the
    goodness on ``relu(z)``: ``model.activation = "triangle"`` with ``goodness_of = "relu"``."""
    pos_penalty: float = 0.0
    """A penalty on the positives' mean goodness added to every layer's loss (SCFF's
    ``lamda``, 5e-4 to 1.2e-3): it keeps the positive goodness from growing without bound."""
    maximize: bool = True
    """False gives the inverted objective: low goodness for positive data."""
    loss: str = "threshold_softplus"
    theta: float | str | list[float] = "units"
    """The threshold: a number, ``units`` for the layer's width (loeweX, Hinton's code), or one
    number per layer."""
    theta_neg: float | str | list[float] = "same"
    """The negatives' threshold, in the same forms (``same``: ``theta``). SCFF pushes positives
    above one threshold and negatives below a higher one (4 and 6 in its first layer)."""
    alpha: float = 1.0
    """Sharpness of the loss (SymBa's alpha; a temperature for threshold-softplus)."""
    peer_weight: float = 0.0
    peer_momentum: float = 0.9
    peer_form: str = "loss"
    """Peer normalisation's gradient: ``loss`` (loeweX's squared deviation of running means) or
    ``pull`` (Hinton's Matlab code: a constant pull on each unit's activity, much stronger)."""
    label: str = "overwrite"
    label_value: str = "one"
    """``one``, ``max`` (the image's maximum, as mohammadpz) or ``norm`` (the image's L2 norm:
    the label as loud as the image)."""
    input_mean: float = 0.0
    """Pixels (uint8) enter as ``(p / 255 - input_mean) / input_std`` (torchvision's
    ``Normalize``); mohammadpz and loeweX standardise MNIST with 0.1307 and 0.3081."""
    input_std: float = 1.0
    neutral_level: float = 0.1
    """Label code of the neutral input fed to a probe (0.1 as loeweX; ``1/C`` is also common)."""

    @property
    def depth(self) -> int:
        """How many layers the net has (the recurrent net: its hidden ``layers``)."""
        return len(self.local) + len(self.stack) + len(self.layers)

    def check(self) -> None:
        """This section's own rules, and every piece it names."""
        from forwardforward.goodness import GOODNESS
        from forwardforward.labels import LABEL_ENCODERS
        from forwardforward.labels import VALUES as LABEL_VALUES
        from forwardforward.layers import ACTIVATIONS, INITS, NORMS, PEER_FORMS
        from forwardforward.losses import LOSSES

        _choice("model.kind", self.kind, ("feedforward", "recurrent", "channelwise"))
        for registry, value in (
            (NORMS, self.norm),
            (ACTIVATIONS, self.activation),
            (GOODNESS, self.goodness),
            (LOSSES, self.loss),
            (LABEL_ENCODERS, self.label),
        ):
            registry[value]
        for spec in self.local:
            if len(spec) != 4 or min(spec[:3]) < 1 or spec[3] < 0:
                raise ConfigError(
                    f"model.local entries are [channels, kernel, stride, padding], got {spec}"
                )
        if self.kind in ("feedforward", "channelwise"):  # every layer's kind and its options
            from forwardforward.layers import layer_stack

            layer_stack(self.local, self.stack, self.layers)
        elif self.local or self.stack:
            raise ConfigError(
                "the recurrent net takes fully connected layers: no model.local or model.stack"
            )
        _choice("model.init", self.init, INITS)
        _choice("model.peer_form", self.peer_form, PEER_FORMS)
        _choice("model.goodness_of", self.goodness_of, ("output", "relu"))
        if not self.pos_penalty >= 0:
            raise ConfigError(f"model.pos_penalty must be >= 0, got {self.pos_penalty}")
        if self.kind == "recurrent" and (self.goodness_of != "output" or self.pos_penalty):
            raise ConfigError(
                "model.goodness_of and model.pos_penalty apply to feedforward nets, not to "
                "model.kind = 'recurrent'"
            )
        _choice("model.label_value", self.label_value, LABEL_VALUES)
        if not (self.layers or self.local or self.stack) or any(w <= 0 for w in self.layers):
            raise ConfigError(f"model.layers must be positive widths, got {self.layers}")
        thresholds: list[tuple[str, float | str | list[float], tuple[str, ...]]] = [
            ("theta", self.theta, ("units",)),
            ("theta_neg", self.theta_neg, ("units", "same")),
        ]
        for th_key, th_value, words in thresholds:
            if isinstance(th_value, str) and th_value not in words:
                allowed = " or ".join(repr(w) for w in words)
                raise ConfigError(
                    f"model.{th_key} must be a number, a list or {allowed}, got {th_value!r}"
                )
            if isinstance(th_value, list) and len(th_value) != self.depth:
                raise ConfigError(
                    f"model.{th_key} has {len(th_value)} thresholds for {self.depth} layers: "
                    "give one per layer"
                )
        if not self.input_std > 0 or not math.isfinite(self.input_mean):
            raise ConfigError(
                f"model.input_std must be positive and model.input_mean finite, got "
                f"{self.input_std} and {self.input_mean}"
            )


@dataclass
class RecurrentConfig:
    """The recurrent net (``model.kind = "recurrent"``): image clamped at the bottom, label at
    the top, hidden layers updated synchronously from the step before."""

    steps: int = 8
    """Synchronous iterations per example."""
    damping: float = 0.7
    """Weight of the proposed state: new = (1 - damping) old + damping proposed."""
    label_hidden_steps: int = 0
    """For the first steps the label input is uniform (1/C) and nothing learns."""
    negate_top_down: bool = False
    """RecurrentForwardForward subtracts the top-down input."""
    lateral: bool = False
    """Each layer also sees its own previous state."""
    dropout: float = 0.0
    """Dropout on every input path, in training."""
    update: str = "every_step"
    """``every_step``: each layer steps its optimiser at every iteration (RecurrentForwardForward);
    ``per_sequence``: losses are summed over the iterations and applied once."""
    window: list[int] = field(default_factory=lambda: [2, 5])
    """Iterations ``[start, stop)`` (0-based) whose goodness is summed to predict."""
    label_gain: float = 0.0
    """Initial scale of the top layer's weights from the label code: ``N(0, gain^2 * 2 / C)``
    (He's initialisation times ``gain``; RecurrentForwardForward uses 3). 0: ``U(-0.05, 0.05)``
    like every other top-down weight, which leaves the label nearly invisible at first."""

    def check(self) -> None:
        """This section's own rules."""
        _choice("recurrent.update", self.update, ("every_step", "per_sequence"))
        if self.steps < 1 or not 0 < self.damping <= 1 or not 0 <= self.dropout < 1:
            raise ConfigError("recurrent: steps >= 1, damping in (0, 1], dropout in [0, 1)")
        if not (math.isfinite(self.label_gain) and self.label_gain >= 0):
            raise ConfigError(f"recurrent.label_gain must be >= 0, got {self.label_gain}")
        if not 0 <= self.label_hidden_steps < self.steps:
            raise ConfigError("recurrent.label_hidden_steps must be in [0, recurrent.steps)")
        if len(self.window) != 2 or not 0 <= self.window[0] < self.window[1] <= self.steps:
            raise ConfigError(
                f"recurrent.window must be [start, stop) within 0..{self.steps}, got {self.window}"
            )


@dataclass
class ChannelwiseConfig:
    """Channel-wise competition (``model.kind = "channelwise"``; CwComp, DeeperForward): every
    layer's channels split into one contiguous group per class, a group's goodness is its
    class's score, each layer learns by a local cross-entropy over these scores. No label
    enters the input and no negative data is drawn; one pass predicts."""

    goodness: str = "mean_squares"
    """A group's goodness: ``mean_squares`` of its activities (CwComp) or their ``mean``
    (DeeperForward)."""
    score_on: str = "output"
    """What the goodness is computed on: the layer's ``output`` (after its ``out_norm``:
    CwComp's batch norm) or its ``activation`` before the norm (DeeperForward: a group norm
    leaves every group's mean at 0)."""
    scale: float = 1.0
    """The scores are multiplied by this before the softmax (a temperature's inverse)."""
    windows: list[list[int]] = field(default_factory=list)
    """One ``[start, stop)`` epoch window per layer (0-based): a layer learns only in its
    window and is frozen (evaluation mode) outside it (CwComp's staggered "ILT" schedule).
    Empty: every layer learns in every epoch."""
    vote: str = "last"
    """Which layers' scores are summed to predict: ``last``; ``all``; ``range`` (the layers
    ``vote_range``); ``val``: after every epoch, the contiguous range of layers that scores
    best on the validation split (``data.val_fraction``) is chosen, starting from
    ``vote_range`` (DeeperForward's signal integrating and pruning); layers after the range
    are not run to predict."""
    vote_range: list[int] = field(default_factory=list)
    """``[first, last]`` layers (0-based, inclusive) for ``vote = "range"`` or the start of
    ``vote = "val"`` (empty: all layers)."""
    recalibrate: int = 10000
    """After every epoch, the batch norms' statistics are computed afresh, layer by layer, on
    this many training images (the first ones, not augmented): the exact statistics of the
    current weights instead of running averages that lag behind them (0: keep the running
    averages). Needs the training set in memory (not a ``DataLoader``)."""
    ema: float = 0.0
    """The decay of an exponential moving average of every layer's weights, taken after each
    of its steps (Polyak averaging; the decay ramps up as ``(1 + t) / (10 + t)`` over a layer's
    first steps ``t``): the averaged layers predict, their batch norms recalibrated on the
    averaged weights, while the layers themselves go on learning. 0: the layers predict."""
    shortcuts: list[list[int | str]] = field(default_factory=list)
    """Parameter-free residual shortcuts, ``[to, from, "add"]`` or ``[to, from, "concat"]``:
    the output of layer ``from`` (detached, average-pooled to the resolution if it differs)
    is added to, or concatenated along the channels with, the output of layer ``to > from``
    before it is passed on (DeeperForward's ResNet)."""

    def shortcut_table(self) -> dict[int, tuple[int, str]]:
        """``{to: (from, "add" | "concat")}`` of the shortcuts."""
        return {int(sc[0]): (int(sc[1]), str(sc[2])) for sc in self.shortcuts}

    def check(self, depth: int) -> None:
        """This section's own rules, for a net of ``depth`` layers."""
        _choice("channelwise.goodness", self.goodness, ("mean_squares", "mean"))
        _choice("channelwise.score_on", self.score_on, ("output", "activation"))
        _choice("channelwise.vote", self.vote, ("last", "all", "range", "val"))
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ConfigError(f"channelwise.scale must be positive, got {self.scale}")
        if self.recalibrate < 0:
            raise ConfigError(
                f"channelwise.recalibrate must be >= 0 images, got {self.recalibrate}"
            )
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"channelwise.ema is a decay in [0, 1), got {self.ema}")
        if self.windows and len(self.windows) != depth:
            raise ConfigError(
                f"channelwise.windows has {len(self.windows)} windows for {depth} layers: "
                "give one [start, stop) per layer"
            )
        for w in self.windows:
            if len(w) != 2 or not 0 <= w[0] < w[1]:
                raise ConfigError(
                    f"channelwise.windows entries are epochs [start, stop) with start < stop, "
                    f"got {w}"
                )
        if self.vote == "range" and not self.vote_range:
            raise ConfigError("channelwise.vote = 'range' needs channelwise.vote_range")
        if self.vote_range and (
            len(self.vote_range) != 2 or not 0 <= self.vote_range[0] <= self.vote_range[1] < depth
        ):
            raise ConfigError(
                f"channelwise.vote_range is [first, last] within 0..{depth - 1}, got "
                f"{self.vote_range}"
            )
        for sc in self.shortcuts:
            ok = (
                len(sc) == 3
                and isinstance(sc[0], int)
                and isinstance(sc[1], int)
                and 0 <= sc[1] < sc[0] < depth
                and sc[2] in ("add", "concat")
            )
            if not ok:
                raise ConfigError(
                    f"channelwise.shortcuts entries are [to, from, 'add' | 'concat'] with "
                    f"0 <= from < to < {depth}, got {sc}"
                )


@dataclass
class NegativesConfig:
    """How negative data is made."""

    kind: str = "random_wrong"
    scores: str = "goodness"
    """What hard negatives sample from, and what self-generated strings are written with:
    ``goodness`` (the softmax over every label's goodness) or ``probe`` (a jointly trained
    linear softmax on the neutral input's activities, as Hinton's Matlab code and
    RecurrentForwardForward's classifier-sampled negatives; almost free). With ``probe`` the
    probe is trained even when ``readout.kind = "goodness"`` predicts."""
    temperature: float = 1.0
    """Hard and self-generated negatives: the scores are divided by this before the softmax
    that samples the model's characters or labels."""
    top_p: float = 1.0
    """Self-generated negatives: nucleus sampling. Each character is drawn from the smallest set
    of the most probable characters whose probabilities add up to at least ``top_p`` (the rest
    of the softmax is cut off and the kept part renormalised). 1: the whole softmax."""
    replay: int = 1
    """Self-generated negatives: how many generation phases (one per epoch) stay in the
    negative pool; 1 (the paper): only the latest; 0: all of them. A longer memory keeps the
    model from hopping between degenerate strings (``eeee`` one epoch, ``mmmm`` the next): the
    replay buffer of energy-based models."""
    blurs: int = 6
    """Hybrid negatives: how many times the random bit mask is blurred."""
    pairing: str = "sum"
    """Self-contrastive negatives: how a pair of images enters the first layer. ``sum`` (the
    same weights for both images: ``W norm(a + b)``), ``shared`` (SCFF's code: the pair is
    normalised side by side, then ``W (n_a + n_b)``; a fully connected first layer only) or
    ``concat`` (side by side, separate weights; the halves can simply be compared)."""
    shift: int = 0
    """Self-contrastive negatives: each image of a pair is translated by up to this many pixels."""
    score_layers: list[int] = field(default_factory=list)
    """Hard negatives scored by a probe (``scores = "probe"``): the 0-based layers whose
    activities that scoring probe sees; empty: the readout's layers, and the readout's probe
    scores them. Other layers get a scorer of their own, a linear softmax trained jointly like
    the probe. The layer pipeline needs them on its first stage (``dist.mode = "pipeline"``):
    the labels of the negatives are chosen there, before the later layers see the batch."""

    @property
    def unsupervised(self) -> bool:
        """Whether the negatives are other images (hybrids, self-contrastive pairs)."""
        from forwardforward.negatives import IMAGE_NEGATIVES

        return self.kind in IMAGE_NEGATIVES

    def check(self) -> None:
        """This section's own rules, and the sampler it names."""
        from forwardforward.negatives import NEGATIVES, SCFF_PAIRINGS

        if self.kind != "self_generated" and not self.unsupervised:
            NEGATIVES[self.kind]
        _choice("negatives.scores", self.scores, ("goodness", "probe"))
        if self.temperature <= 0:
            raise ConfigError("negatives.temperature must be positive")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"negatives.top_p must be in (0, 1], got {self.top_p}")
        if self.replay < 0:
            raise ConfigError("negatives.replay must be >= 0 (0: keep every generation)")
        _choice("negatives.pairing", self.pairing, SCFF_PAIRINGS)
        if self.blurs < 0 or self.shift < 0:
            raise ConfigError(
                f"negatives.blurs and negatives.shift must be >= 0, got {self.blurs} "
                f"and {self.shift}"
            )


@dataclass
class ReadoutConfig:
    """How the network predicts."""

    kind: str = "goodness"
    """``goodness`` (try every label) or ``probe`` (linear softmax on activities)."""
    layers: list[int] = field(default_factory=list)
    """0-based layers whose goodness or activities are used; empty means all."""
    select: str = "auto"
    """``argmax`` or ``argmin`` of summed goodness; ``auto`` follows ``model.maximize``."""
    probe_mode: str = "joint"
    """``joint``: the probe trains with the FF layers on detached features; ``after``: on the
    frozen features once FF training is done."""
    probe_input: str = "neutral"
    """``neutral`` label code, or ``zero`` (FFLib's FF+C)."""
    probe_optimizer: str = "sgd"
    probe_lr: float = 0.01
    probe_momentum: float = 0.9
    probe_weight_decay: float = 0.003
    probe_epochs: int = 10
    """Epochs of probe training in ``after`` mode."""
    probe_norm: str = "model"
    """How each readout layer's activities are normalised before the probe: ``model`` (the
    model's ``norm``, RMS when it has none) or ``std`` (per-sample standardisation, zero mean
    and unit variance over the units, as SCFF's readout)."""
    probe_dropout: float = 0.0
    """Dropout on the probe's input features while it trains (SCFF's readout uses 0.1-0.2)."""

    def check(self) -> None:
        """This section's own rules."""
        _choice("readout.kind", self.kind, ("goodness", "probe"))
        _choice("readout.select", self.select, ("auto", "argmax", "argmin"))
        _choice("readout.probe_mode", self.probe_mode, ("joint", "after"))
        _choice("readout.probe_input", self.probe_input, ("neutral", "zero"))
        _choice("readout.probe_optimizer", self.probe_optimizer, OPTIMIZERS)
        _choice("readout.probe_norm", self.probe_norm, ("model", "std"))
        if not 0.0 <= self.probe_dropout < 1.0:
            raise ConfigError(f"readout.probe_dropout must be in [0, 1), got {self.probe_dropout}")


@dataclass
class OptimConfig:
    """Per-layer optimiser and learning-rate schedule."""

    name: str = "adam"
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    schedule: str = "constant"
    """``constant``, ``cooldown`` (constant, then linear to 0 over the second half), ``cosine``."""
    decay_bias: bool = True
    """False: weight decay applies to weight matrices only (Hinton's Matlab code)."""
    warmup: int = 0
    """Optimiser steps over which the learning rate ramps linearly up from ``lr / warmup``
    (0: none); the schedule applies on top."""

    def check(self, key: str = "optim") -> None:
        """This section's own rules (``key`` names it: ``optim`` or ``baseline.optim``)."""
        _choice(f"{key}.name", self.name, OPTIMIZERS)
        _choice(f"{key}.schedule", self.schedule, SCHEDULES)
        if len(self.betas) != 2:
            raise ConfigError(f"{key}.betas must be two numbers, got {self.betas}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ConfigError(f"{key}.lr must be positive, got {self.lr}")
        if self.warmup < 0:
            raise ConfigError(f"{key}.warmup must be >= 0 steps, got {self.warmup}")


@dataclass
class TrainConfig:
    """The training loop."""

    epochs: int = 10
    batch_size: int = 100
    schedule: str = "simultaneous"
    """``simultaneous`` (every layer steps on every batch) or ``greedy`` (layer by layer)."""
    greedy_inputs: str = "cached"
    """Greedy training: ``cached`` computes the trained layer's inputs once per layer, with one
    draw of negatives (mohammadpz, nebullvm); ``fresh`` draws negatives and augmented views anew
    for every batch and runs them through the frozen layers below (SCFF); hard negatives are
    then drawn from the goodness of every label in the layers trained so far (the readout's
    layers up to the current one, else the current one)."""
    augment_shift: int = 0
    """Data augmentation: each training image is translated by its own random offset of up to
    this many pixels (zero-filled), anew every epoch, for the FF net, its ``after`` probe and
    the backprop twin alike (static image datasets only; 0: none)."""
    augment_flip: bool = False
    """Data augmentation: each training image is mirrored left to right with probability 1/2,
    anew every epoch (CIFAR-10; not for digits)."""
    augment_rotate: float = 0.0
    """Data augmentation: each training image is rotated about its centre by its own random
    angle of up to this many degrees either way (bilinear, zero-filled), anew every epoch,
    before its translation (0: none)."""
    augment_scale: float = 0.0
    """Data augmentation: each training image is magnified about its centre by its own random
    factor in ``[1 - augment_scale, 1 + augment_scale]``, with the rotation (0: none)."""
    eval_every: int = 1
    eval_batch_size: int = 1000
    seed: int = 0
    precision: str = "fp32"
    """``fp32``, ``bf16`` (autocast), or ``auto``: bf16 where the run's device multiplies bf16
    faster than fp32 (a CUDA GPU with bf16, a CPU with AMX-BF16 or AVX512-BF16), else fp32.
    The run folder's ``config.json`` records the precision it chose."""
    device: str = "auto"
    """``cpu``, ``cuda`` or ``auto``."""
    threads: int = 0
    """CPU threads for torch (0: torch's default)."""
    flush_denormal: bool = True
    """On CPU, flush subnormal floats to zero while training (``torch.set_flush_denormal``;
    the earlier mode is restored afterwards): values below about 1e-38 become 0 instead of
    taking the CPU's slow path."""
    init: str = ""
    """A run folder whose trained FF layers (weights and buffers) start this run instead of a
    fresh initialisation, e.g. FF+C: a classifier on the features of a trained FF net. The
    model sections must match. With ``epochs = 0`` only an ``after`` probe trains."""

    def check(self) -> None:
        """This section's own rules."""
        _choice("train.schedule", self.schedule, ("simultaneous", "greedy"))
        _choice("train.greedy_inputs", self.greedy_inputs, ("cached", "fresh"))
        _choice("train.precision", self.precision, ("fp32", "bf16", "auto"))
        _choice("train.device", self.device, ("auto", "cpu", "cuda"))
        if self.epochs < 0 or self.batch_size < 1 or self.eval_every < 1:
            raise ConfigError(
                "train.batch_size and train.eval_every must be >= 1 and train.epochs >= 0"
            )
        if self.augment_shift < 0:
            raise ConfigError(f"train.augment_shift must be >= 0 pixels, got {self.augment_shift}")
        if not (math.isfinite(self.augment_rotate) and 0 <= self.augment_rotate <= 180):
            raise ConfigError(
                f"train.augment_rotate must be in [0, 180] degrees, got {self.augment_rotate}"
            )
        if not (math.isfinite(self.augment_scale) and 0 <= self.augment_scale < 1):
            raise ConfigError(f"train.augment_scale must be in [0, 1), got {self.augment_scale}")
        augmented = (
            self.augment_shift or self.augment_flip or self.augment_rotate or self.augment_scale
        )
        if augmented and self.schedule == "greedy" and self.greedy_inputs == "cached":
            raise ConfigError(
                "train.augment_* (shift, flip, rotate, scale) need fresh inputs in greedy "
                "training: cached inputs are computed once (set train.greedy_inputs = 'fresh')"
            )


@dataclass
class DistConfig:
    """Training on several processes with ``torch.distributed`` (launched by ``torchrun``)."""

    mode: str = "none"
    """``none`` (one process), ``ddp`` (data parallel: every process holds the whole net and a
    shard of every batch; each layer's gradients are all-reduced) or ``pipeline`` (each process
    owns a contiguous group of layers; activations flow downstream, nothing flows back)."""
    backend: str = "auto"
    """``gloo`` (CPU), ``nccl`` (CUDA) or ``auto`` (nccl when the run is on CUDA)."""
    timeout: float = 60.0
    """Seconds a process waits for another (a collective, a message) before it stops with an
    error naming the ranks it lost. A process that dies is noticed at once."""
    buffer: int = 2
    """Pipeline: batches a stage may run ahead of the next one (sends not yet received); 0
    runs the stages without overlap (each waits until the next stage has taken its batch)."""

    def check(self) -> None:
        """This section's own rules."""
        _choice("dist.mode", self.mode, ("none", "ddp", "pipeline"))
        _choice("dist.backend", self.backend, ("auto", "gloo", "nccl"))
        if not self.timeout > 0:
            raise ConfigError(f"dist.timeout must be positive seconds, got {self.timeout}")
        if self.buffer < 0:
            raise ConfigError(f"dist.buffer must be >= 0 batches, got {self.buffer}")


@dataclass
class BaselineConfig:
    """The backprop twin: the same layers and data trained end to end with cross-entropy."""

    optim: OptimConfig = field(default_factory=lambda: OptimConfig(name="adam", lr=0.001))
    epochs: int = 0
    """0: the FF run's epoch budget."""


@dataclass
class RunConfig:
    """Everything one run needs."""

    name: str = "custom"
    description: str = ""
    reference: str = ""
    """The published figure this preset reproduces, for reports."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    recurrent: RecurrentConfig = field(default_factory=RecurrentConfig)
    channelwise: ChannelwiseConfig = field(default_factory=ChannelwiseConfig)
    negatives: NegativesConfig = field(default_factory=NegativesConfig)
    readout: ReadoutConfig = field(default_factory=ReadoutConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    dist: DistConfig = field(default_factory=DistConfig)


# ------------------------------------------------------------------------------------------------
# Building dataclasses from plain data, with type checks that name the offending key.


def _check_value(value: Any, tp: Any, key: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        for option in get_args(tp):
            try:
                return _check_value(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} is not a valid {tp}")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin is dict:  # a table of plain values, checked by whoever reads it
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return dict(value)
    if origin is list:
        (item,) = get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_check_value(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError."""
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(
                f"unknown option {prefix + key!r}; choose one of: "
                + ", ".join(prefix + n for n in names)
            )
        kwargs[key] = _check_value(value, hints[key], prefix + key)
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass as plain data (the inverse of :func:`from_dict`)."""
    return dataclasses.asdict(config)


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    key, raw = key.strip(), raw.strip()
    if not key:
        raise ConfigError(f"override {text!r} has no key")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word is a string: --set model.loss=symba
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"override {text!r}: unreadable value ({type(exc).__name__})") from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values in TOML syntax; bare words are strings)."""
    for text in overrides:
        path, value = _parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a table")
        node[path[-1]] = value
    return data


def preset_names() -> list[str]:
    """The names of the bundled presets."""
    folder = resources.files("forwardforward") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def _preset_text(name: str) -> str:
    path = Path(name)
    if path.suffix == ".toml" and path.exists():
        return path.read_text()
    folder = resources.files("forwardforward") / "presets"
    candidate = folder / f"{name}.toml"
    if not candidate.is_file():
        raise ConfigError(
            f"unknown preset {name!r}; choose one of: {', '.join(preset_names())} "
            "(or give a path to a .toml file)"
        )
    return candidate.read_text()


def config_from_toml(text: str, overrides: list[str] | None = None) -> RunConfig:
    """Parse a TOML run description, apply overrides, validate."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}") from None
    config = from_dict(RunConfig, apply_overrides(data, overrides or []))
    validate(config)
    return config


def load_preset(name: str, overrides: list[str] | None = None) -> RunConfig:
    """The named preset (or a path to a TOML file), with ``key=value`` overrides applied.

    >>> load_preset("mnist-quick", ["train.epochs=1"]).train.epochs
    1
    """
    config = config_from_toml(_preset_text(name), overrides)
    if config.name == "custom":
        config.name = Path(name).stem
    return config


def _choice(key: str, value: str, choices: tuple[str, ...] | list[str]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {key} {value!r}; choose one of: {', '.join(choices)}")


def validate(config: RunConfig) -> None:
    """Check a configuration: every section by its own rules (``check``), then the few rules
    that span sections."""
    m, t, r, neg, d = config.model, config.train, config.readout, config.negatives, config.data
    d.check()
    m.check()
    config.recurrent.check()
    config.channelwise.check(m.depth)
    neg.check()
    r.check()
    config.optim.check("optim")
    config.baseline.optim.check("baseline.optim")
    t.check()
    config.dist.check()
    # -- rules across sections
    if m.kind == "channelwise":
        if t.schedule != "simultaneous":
            raise ConfigError(
                "the channel-wise net trains its layers together (train.schedule = "
                "'simultaneous'; channelwise.windows staggers them)"
            )
        if r.kind == "probe" and r.probe_mode != "joint":
            raise ConfigError(
                "the channel-wise net's probe (CwComp's softmax classifier) trains with the "
                "layers on their detached outputs, every step of the run: set "
                "readout.probe_mode = 'joint'"
            )
        if any(not 0 <= i < m.depth for i in r.layers):
            raise ConfigError(
                f"readout.layers are 0-based layers of the {m.depth}-layer net, got {r.layers}"
            )
        if config.channelwise.vote == "val" and d.val_fraction <= 0:
            raise ConfigError(
                "channelwise.vote = 'val' chooses the voting layers on a validation split: "
                "set data.val_fraction > 0"
            )
    if m.kind == "recurrent":
        if neg.kind not in ("random_wrong", "hard"):
            raise ConfigError(
                "the recurrent net takes fully connected layers (its label enters at the top, "
                "model.label is not used) and random_wrong or hard negatives"
            )
        if r.probe_mode != "joint" or t.schedule != "simultaneous":
            raise ConfigError(
                "the recurrent net trains all layers together (train.schedule = 'simultaneous') "
                "and its classifier with them (readout.probe_mode = 'joint')"
            )
    if neg.kind == "self_generated" and (d.dataset != "aesop" or m.kind != "feedforward"):
        raise ConfigError("negatives.kind = 'self_generated' is for data.dataset = 'aesop'")
    if d.dataset == "aesop" and (m.label != "concat" or d.val_fraction or d.fraction != 1):
        raise ConfigError(
            "data.dataset = 'aesop' takes model.label = 'concat' (the candidate character is "
            "appended to the context) and all its strings (no fraction or validation split)"
        )
    if neg.unsupervised and (r.kind != "probe" or m.label != "none"):
        raise ConfigError(
            f"negatives.kind = {neg.kind!r} is unsupervised: it needs "
            "model.label = 'none' and readout.kind = 'probe'"
        )
    if not neg.unsupervised and m.label == "none":
        raise ConfigError(
            "model.label = 'none' needs unsupervised negatives: hybrid, self_contrastive"
        )
    if m.local and m.label == "concat":
        raise ConfigError(
            "locally connected layers need a spatial input: not model.label = 'concat'"
        )
    for key, chosen in (("readout.layers", r.layers), ("negatives.score_layers", neg.score_layers)):
        for i in chosen:
            if not 0 <= i < m.depth:
                raise ConfigError(f"{key}: no layer {i}; the net has layers 0..{m.depth - 1}")
    if neg.score_layers and not (neg.kind == "hard" and neg.scores == "probe"):
        raise ConfigError(
            "negatives.score_layers chooses what a probe scores hard negatives on: it needs "
            "negatives.kind = 'hard' and negatives.scores = 'probe'"
        )
    for key, on in (
        ("augment_shift", t.augment_shift),
        ("augment_flip", t.augment_flip),
        ("augment_rotate", t.augment_rotate),
        ("augment_scale", t.augment_scale),
    ):
        if on and d.dataset in ("aesop", "moving_mnist", "sequential_mnist"):
            raise ConfigError(f"train.{key} changes images: not for dataset {d.dataset!r}")
    random_fixed = r.kind == "probe" and r.probe_mode == "after"
    if t.epochs == 0 and not (t.init or random_fixed):
        raise ConfigError(
            "train.epochs = 0 trains no layer: it is for a probe trained afterwards "
            "(readout.kind = 'probe', readout.probe_mode = 'after') on the layers of "
            "train.init or, without it, on randomly initialised layers"
        )
    if neg.scores == "probe" and r.probe_mode != "joint":
        raise ConfigError("negatives.scores = 'probe' needs a joint probe: readout.probe_mode")
    if neg.pairing == "shared" and (m.local or m.stack):
        raise ConfigError(
            "negatives.pairing = 'shared' needs a fully connected first layer (model.local = [])"
        )
    if t.schedule == "greedy" and neg.kind == "hard":
        if t.greedy_inputs != "fresh":
            raise ConfigError(
                "greedy training with cached inputs draws its negatives once: hard negatives "
                "need train.greedy_inputs = 'fresh' (or the simultaneous schedule)"
            )
        if neg.scores != "goodness":
            raise ConfigError(
                "hard negatives in greedy training are drawn from the goodness of the layers "
                "trained so far: set negatives.scores = 'goodness'"
            )
    if t.schedule == "greedy" and r.kind == "probe" and r.probe_mode == "joint":
        raise ConfigError(
            "greedy training trains a probe afterwards: set readout.probe_mode = 'after'"
        )


OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "cooldown", "cosine")
