"""The feed-forward FF network (Hinton's section 3.3 and every seed's supervised system)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from forwardforward.augment import augmentation
from forwardforward.config import RunConfig
from forwardforward.errors import ConfigError
from forwardforward.labels import LABEL_ENCODERS, LabelEncoder, LabelPlanes, TopRow
from forwardforward.layers import FFLayer, FFLinear, LayerSettings, layer_stack
from forwardforward.layers.kinds import Shape
from forwardforward.losses import LocalObjective
from forwardforward.negatives import (
    IMAGE_NEGATIVES,
    NEGATIVES,
    Hard,
    ImageNegatives,
    NegativeSampler,
    make_image_negatives,
)
from forwardforward.nets.base import (
    BatchShard,
    NetBase,
    PipeStage,
    autocast_dtype,
    pixels,
)
from forwardforward.stepping import learn


@dataclass
class StepState:
    """A training step's batch on its way through the layers (see :meth:`FFNet.begin_step`):
    what the next layer takes, and what the step has gathered so far."""

    y: Tensor
    """This process's labels ``(b,)``."""
    n: int
    """Rows of the global batch (``b`` unless data-parallel)."""
    b: int = 0
    """Positive rows: the first ``b`` rows of ``a``; the rest are negatives."""
    a: Tensor = field(default_factory=lambda: torch.empty(0))
    """What the next layer takes: positives then negatives (for layer 0 with ``shared``: the
    images without labels)."""
    shared: tuple[Tensor, Tensor] | None = None
    """Layer 0's shared product: the image of every row and the rows' scaled label codes."""
    neutral: Tensor | None = None
    """The neutral pass (what the probe learns from), entering layer ``neutral_at``."""
    neutral_at: int = 0
    features: dict[int, Tensor] = field(default_factory=dict)
    """Normalised activities of the readout (and scoring) layers reached so far."""
    losses: list[tuple[str, Tensor]] = field(default_factory=list)
    optimizers: list[int] = field(default_factory=list)
    """The optimiser of each loss (its index in ``net.optimizers``)."""
    metrics: dict[str, Tensor] = field(default_factory=dict)


def make_encoder(
    name: str, num_classes: int, in_shape: tuple[int, ...], value: str
) -> LabelEncoder:
    """A label encoder by name for flattened images of shape ``in_shape`` ``(C, H, W)``."""
    cls = LABEL_ENCODERS[name]
    d = math.prod(in_shape)
    if cls is TopRow:
        return TopRow(num_classes, d, value, width=in_shape[-1])
    if cls is LabelPlanes:
        return LabelPlanes(num_classes, d, value, plane=in_shape[-1] * in_shape[-2])
    return cls(num_classes, d, value)


class FFNet(NetBase):
    """A stack of :class:`FFLinear` layers trained with Forward-Forward.

    Args:
        config: the run configuration (model, negatives, readout and optimiser sections are used).
        in_shape: the shape of one image, ``(C, H, W)``.
        num_classes: ``C``, the number of labels.

    Inputs are images ``(B, C, H, W)`` or already flattened ``(B, D)`` in ``[0, 1]``.
    """

    def __init__(self, config: RunConfig, in_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        m = config.model
        self.config = config
        self.in_shape = tuple(in_shape)
        self.num_classes = num_classes
        self.encoder = make_encoder(m.label, num_classes, self.in_shape, m.label_value)
        neg = config.negatives
        self.image_negatives: ImageNegatives | None = None
        if neg.kind in IMAGE_NEGATIVES:  # unsupervised: negatives are other images
            self.image_negatives = make_image_negatives(neg.kind, neg.blurs, neg.pairing, neg.shift)
            width = self.image_negatives.in_features(self.in_shape)
            self.sampler: NegativeSampler = NEGATIVES["random_wrong"]  # never used
        else:
            width = self.encoder.out_features
            # self-generated sequences replace the sampler (see nets/sequence.py)
            kind = "random_wrong" if neg.kind == "self_generated" else neg.kind
            self.sampler = NEGATIVES[kind]
            if isinstance(self.sampler, Hard):
                self.sampler = Hard(temperature=neg.temperature)
        made = self._make_layers(width)
        self.layers = nn.ModuleList(made)
        self.widths = [layer.out_features for layer in made]
        self.objective = LocalObjective(
            m.goodness, m.loss, m.maximize, m.theta, m.alpha, self.widths, m.theta_neg
        )
        self.goodness = self.objective.goodness
        r = config.readout
        self.readout_layers = list(r.layers) or list(range(len(self.layers)))
        self.probe: nn.Linear | None = None
        if r.kind == "probe" or neg.scores == "probe":
            width = sum(self.widths[i] for i in self.readout_layers)
            self.probe = nn.Linear(width, num_classes, bias=False)
            nn.init.zeros_(self.probe.weight)
        self.score_layers = list(neg.score_layers) or self.readout_layers
        self.scorer: nn.Linear | None = None
        """Scores hard negatives when they are scored on other layers than the readout's."""
        if neg.scores == "probe" and sorted(set(self.score_layers)) != sorted(
            set(self.readout_layers)
        ):
            width = sum(self.widths[i] for i in sorted(set(self.score_layers)))
            self.scorer = nn.Linear(width, num_classes, bias=False)
            nn.init.zeros_(self.scorer.weight)
        self.shard: BatchShard | None = None
        """Data parallel: this process's rows of every batch (set by :mod:`forwardforward.dist`)."""
        self.stage_layers: range | None = None
        """Layer pipeline: the layers this process trains (set by :mod:`forwardforward.dist`)."""
        self.pipe: PipeStage | None = None
        """Layer pipeline: this process's stage, which trains the steps in its place."""
        self.optimizers: list[torch.optim.Optimizer] = []
        self.schedulers: list[torch.optim.lr_scheduler.LambdaLR] = []
        # evaluation runs in the configured precision too (configure() may change it)
        self.autocast_dtype = autocast_dtype(config.train.precision)
        self.last_scores: tuple[Tensor, Tensor] = (torch.empty(0), torch.empty(0))
        """Positive and negative scores of the last :meth:`layer_loss` call (detached)."""
        self._phase = -1
        self._cache: tuple[Tensor, Tensor] | None = None
        self.greedy = config.train.schedule == "greedy"
        self.relu_goodness = m.goodness_of == "relu"

    def _make_layers(self, in_features: int) -> list[FFLayer]:
        """The layer stack (``model.local``, ``model.stack``, then the fully connected
        ``model.layers``), each built by its kind (see :mod:`forwardforward.layers.kinds`)."""
        m, neg = self.config.model, self.config.negatives
        settings = LayerSettings(
            norm=m.norm, activation=m.activation, bias=m.bias, init=m.init,
            peer_weight=m.peer_weight, peer_momentum=m.peer_momentum, peer_form=m.peer_form,
            pairs=neg.kind == "self_contrastive" and neg.pairing == "shared",
            classes=self.num_classes,
        )  # fmt: skip
        h, w = self.in_shape[-2:]
        # an image (SCFF pairs images along the channels), or flat when a label is appended
        shape: Shape = (
            (in_features // (h * w), h, w) if in_features % (h * w) == 0 else (in_features,)
        )
        layers: list[FFLayer] = []
        for kind, options in layer_stack(m.local, m.stack, m.layers):
            layer = kind.build(options, shape, settings, not layers)
            shape = layer.out_shape
            layers.append(layer)
        return layers

    # -- shapes ----------------------------------------------------------------------------------

    def flat(self, x: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` or ``(B, D)`` -> ``(B, D)`` float."""
        m = self.config.model
        return pixels(x.reshape(x.shape[0], -1), m.input_mean, m.input_std)

    # -- the FF objective ------------------------------------------------------------------------

    def run_layer(
        self, i: int, a: Tensor, shared: tuple[Tensor, Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Layer ``i`` on ``a`` (or, for the first layer, on the shared-product inputs ``(rows,
        codes, patterns)`` of the images ``a``): its output, and what its goodness is computed
        on: the output itself, or ``relu`` of the pre-activation (``model.goodness_of``)."""
        layer = self.layers[i]
        assert isinstance(layer, FFLayer)
        if shared is not None:
            assert isinstance(layer, FFLinear)
            z = layer.preactivation_shared(a, *shared)
        elif self.relu_goodness:
            z = layer.preactivation(a)
        else:
            h: Tensor = layer(a)
            return h, h
        h = layer.activate(z)
        return h, (F.relu(z) if self.relu_goodness else h)

    def layer_loss(self, i: int, h: Tensor, b: int, scored: Tensor | None = None) -> Tensor:
        """Layer ``i``'s local loss on stacked activities ``(P + N, H)``, the first ``b = P``
        rows positive (its goodness on ``scored``, default ``h``: see :meth:`run_layer`), plus
        its peer-normalisation term (on the positives)."""
        if scored is None:
            if self.relu_goodness:
                raise ValueError("model.goodness_of = 'relu': pass what run_layer scores")
            scored = h
        loss, pos, neg = self.objective(i, scored, b)
        self.last_scores = (pos.detach(), neg.detach())  # for the FF-accuracy metric
        layer = self.layers[i]
        assert isinstance(layer, FFLayer)
        if self.config.model.pos_penalty > 0:
            loss = loss + self.config.model.pos_penalty * pos.abs().mean()
        if layer.peer_weight > 0:
            loss = loss + layer.peer_loss(h[:b].float())
        return loss

    # -- training --------------------------------------------------------------------------------

    def configure(self, steps_per_epoch: int, epochs: int | None = None) -> None:
        """Build one optimiser and learning-rate schedule per layer (and one for the probe),
        for ``epochs`` epochs (default ``train.epochs``) of ``steps_per_epoch`` steps."""
        total = steps_per_epoch * (self.config.train.epochs if epochs is None else epochs)
        r = self.config.readout
        probe_total = total if r.probe_mode == "joint" else steps_per_epoch * r.probe_epochs
        self._build_optimizers(total, probe_total)
        if self.scorer is not None:  # after the probe's: it trains the same way
            self._add_readout_optimizer(self.scorer, probe_total)

    def phases(self) -> int:
        """One phase (all layers together), or one per layer for greedy training."""
        return len(self.layers) if self.greedy else 1

    def begin_phase(self, phase: int, x: Tensor, y: Tensor) -> None:
        """Greedy training: cache the inputs of layer ``phase`` for the whole training set, with
        negatives drawn once (seeded), as mohammadpz and nebullvm do."""
        self._phase = phase
        self._cache = None
        if not self.greedy or self.config.train.greedy_inputs == "fresh":
            return
        gen = torch.Generator(device=x.device).manual_seed(self.config.train.seed + 7919)
        a_pos, a_neg = self._frozen_inputs(x, y, gen, phase)
        # negatives come as K blocks of N (K = 1 but for all_wrong): keep them as (K, N, D)
        self._cache = (a_pos, a_neg.view(-1, *a_pos.shape))

    @torch.no_grad()
    def _frozen_inputs(
        self, x: Tensor, y: Tensor, gen: torch.Generator, k: int
    ) -> tuple[Tensor, Tensor]:
        """Greedy training: layer ``k``'s positive and negative inputs for images ``x``, drawn
        from ``gen`` and run through the (frozen) layers below it. Hard negatives are sampled
        from every label's goodness in the layers trained so far (:meth:`greedy_scores`)."""
        xf = self.flat(x)
        scores = self.greedy_scores(xf, k) if self.sampler.needs_scores else None
        with self._autocast(xf):
            a_pos, a_neg = self.inputs(xf, y, gen, scores)
            for layer in list(self.layers)[:k]:
                a_pos, a_neg = layer(a_pos), layer(a_neg)
        return a_pos, a_neg

    @torch.no_grad()
    def greedy_scores(self, xf: Tensor, k: int) -> Tensor:
        """What hard negatives are drawn from while layer ``k`` trains greedily, for flat images
        ``xf`` ``(B, D)``: every label's goodness ``(B, C)`` summed over the readout's layers
        up to ``k`` (layer ``k`` alone when none is), negated under the inverted objective."""
        layers = [i for i in self.readout_layers if i <= k] or [k]
        _, total = self.score_span(xf, None, range(k + 1), layers)
        scores = total.view(xf.shape[0], self.num_classes)
        return scores if self.config.model.maximize else -scores

    def inputs(
        self, xf: Tensor, y: Tensor, gen: torch.Generator, scores: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """The first layer's positive ``(B, D')`` and negative ``(M, D')`` inputs for flat images
        ``xf`` ``(B, D)``: labelled images (supervised) or image pairs/hybrids (unsupervised)."""
        if self.image_negatives is not None:
            return self.image_negatives.pair(xf.view(-1, *self.in_shape), gen)
        idx, q_neg = self.sampler(y, self.num_classes, gen, scores)
        return self.encoder.embed_labels(xf, y), self.encoder.embed(xf[idx], q_neg)

    def shared_inputs(
        self, xf: Tensor, y: Tensor, gen: torch.Generator, scores: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor] | None:
        """:meth:`inputs` in the form :meth:`FFLinear.forward_shared` takes, when the first layer
        can share its product with each image between the image's positive and its negatives:
        the images without labels ``(B, D')``, the image of every positive then negative row
        ``(R,)`` and the rows' label codes times the label's value ``(R, C)``. Draws the same
        negatives from ``gen`` as :meth:`inputs`. None when the net cannot share (unsupervised
        or greedy training, a first layer that is not a scale-normalised :class:`FFLinear`)."""
        if self.image_negatives is not None or self.greedy or self._sharing_first() is None:
            return None
        idx, q_neg = self.sampler(y, self.num_classes, gen, scores)
        enc = self.encoder
        rows = torch.cat([torch.arange(len(y), device=y.device), idx])
        codes = torch.cat([enc.onehot(y), q_neg]).to(xf.dtype)
        return enc.base(xf), rows, codes * enc.value(xf).index_select(0, rows)[:, None]

    def _sharing_first(self) -> FFLinear | None:
        """The first layer, if it can share its product with an image across labels."""
        first = self.layers[0]
        return first if isinstance(first, FFLinear) and first.shares_products else None

    def present(self, xf: Tensor, level: float) -> Tensor:
        """The input the readout sees for flat images ``(B, D)``: the neutral label at ``level``
        (supervised) or what the unsupervised negatives present."""
        if self.image_negatives is not None:
            return self.image_negatives.present(xf.view(-1, *self.in_shape))
        return self.encoder.neutral(xf, level)

    def end_phase(self, phase: int, x: Tensor, y: Tensor, gen: torch.Generator) -> None:
        """After the last phase, train a probe in ``after`` mode on the frozen features."""
        self._cache = None
        r = self.config.readout
        if self.probe is None or r.probe_mode != "after" or phase != self.phases() - 1:
            return
        t = self.config.train  # augmented: new features every epoch
        transform = augmentation(t.augment_shift, t.augment_flip, t.augment_rotate, t.augment_scale)

        def features() -> Tensor:
            chunks = x.split(4096)
            views = chunks if transform is None else (transform(xb, gen) for xb in chunks)
            return torch.cat([self.probe_features(v) for v in views])

        feats = features()
        bs = self.config.train.batch_size
        for epoch in range(r.probe_epochs):
            if transform is not None and epoch > 0:
                feats = features()
            perm = torch.randperm(feats.shape[0], generator=gen, device=feats.device)
            for idx in perm.split(bs):
                self._probe_step(feats[idx], y[idx], gen)

    def _probe_logits(self, feats: Tensor, gen: torch.Generator, n: int | None = None) -> Tensor:
        """The probe's training-time logits ``(B, C)``: with ``readout.probe_dropout`` its input
        features ``(B, F)`` pass through dropout first (its mask drawn from ``gen``, so that a
        resumed run repeats it)."""
        assert self.probe is not None
        p = self.config.readout.probe_dropout
        if p > 0:
            shape = feats.shape if self.shard is None or n is None else (n, feats.shape[1])
            keep = torch.rand(shape, generator=gen, device=feats.device) >= p
            if self.shard is not None and n is not None:  # drawn for the global batch
                keep = self.shard.rows(keep)
            feats = feats * keep / (1.0 - p)
        logits: Tensor = self.probe(feats)
        return logits

    def _probe_step(self, feats: Tensor, y: Tensor, gen: torch.Generator) -> Tensor:
        loss = F.cross_entropy(self._probe_logits(feats, gen), y)
        k = len(self.layers)  # the probe's optimiser
        step = int(self.schedulers[k].last_epoch)
        learn([loss], ["probe"], self.optimizers[k : k + 1], self.schedulers[k : k + 1], step=step)
        return loss.detach()

    def train_step(
        self, x: Tensor, y: Tensor, index: Tensor, gen: torch.Generator
    ) -> dict[str, Tensor]:
        """One optimisation step on a batch ``x`` ``(B, C, H, W)``, ``y`` ``(B,)``.

        Simultaneous: positives and negatives go through every layer as one stacked batch; each
        layer's loss reaches only its own weights (inputs are detached), and every layer steps.
        Greedy: only the current phase's layer steps, on its cached inputs (rows ``index``).
        """
        if self.pipe is not None:
            return self.pipe.train_step(x, y, index, gen)
        # optimisation steps so far (greedy: the layers' phases one after the other)
        n_layers = len(self.layers)
        step = sum(int(s.last_epoch) for s in self.schedulers[:n_layers]) if self.greedy else 0
        if not self.greedy and self.schedulers:
            step = int(self.schedulers[0].last_epoch)
        if self.greedy:
            k = self._phase
            assert k >= 0, "begin_phase was not called"
            if self.config.train.greedy_inputs == "fresh":  # this batch's negatives and views
                a_pos, a_neg = self._frozen_inputs(x, y, gen, k)
            else:
                assert self._cache is not None, "begin_phase was not called"
                a_pos, a_neg = self._cache[0][index], self._cache[1][:, index].flatten(0, 1)
            if self.shard is None:
                return self._greedy_step(k, a_pos, a_neg, step)
            with self.shard.step(len(y)):  # data parallel: this process's rows
                a_pos, a_neg = self.shard.rows(a_pos), self.shard.blocks(a_neg, len(y))
                return self.shard.reduce_metrics(self._greedy_step(k, a_pos, a_neg, step))

        if self.shard is None:
            return self._step(x, y, gen, step)
        with self.shard.step(len(y)):  # batch statistics and gradients of the global batch
            return self.shard.reduce_metrics(self._step(x, y, gen, step))

    def _step(self, x: Tensor, y: Tensor, gen: torch.Generator, step: int) -> dict[str, Tensor]:
        """A simultaneous step: every layer, then the probe, learns from the batch."""
        state = self.begin_step(x, y, gen)
        self.run_layers(state, range(len(self.layers)))
        self.end_step(state, gen)
        self.learn_state(state, step)
        return state.metrics

    def learn_state(self, state: StepState, step: int) -> None:
        """Every loss the step's state holds trains its own weights (see
        :func:`~forwardforward.stepping.learn`)."""
        learn(
            [loss for _, loss in state.losses],
            [name for name, _ in state.losses],
            [self.optimizers[i] for i in state.optimizers],
            [self.schedulers[i] for i in state.optimizers],
            step=step,
        )

    def _greedy_step(self, k: int, a_pos: Tensor, a_neg: Tensor, step: int) -> dict[str, Tensor]:
        """A greedy step: layer ``k`` learns from its positive and negative inputs."""
        with self._autocast(a_pos):
            h, scored = self.run_layer(k, torch.cat([a_pos, a_neg]))
            loss = self.layer_loss(k, h, len(a_pos), scored)
        learn([loss], [f"layer {k}"], [self.optimizers[k]], [self.schedulers[k]], step=step)
        return {f"loss{k}": loss.detach()}

    # -- one step, in pieces a layer pipeline can split between processes ------------------------

    @property
    def reuses_positives(self) -> bool:
        """Whether the joint probe reads the positives' own activities (unsupervised negatives
        whose positives are what the readout sees) instead of a neutral pass."""
        images = self.image_negatives
        joint = self.probe is not None and self.config.readout.probe_mode == "joint"
        return joint and images is not None and images.positives_are_presented

    def begin_step(self, x: Tensor, y: Tensor, gen: torch.Generator) -> StepState:
        """A training step's inputs for a batch ``x`` ``(B, C, H, W)``, ``y`` ``(B,)``: the
        first layer's positive and negative rows, drawn from ``gen`` (their wrong labels scored
        by the probe or the scorer when negatives are hard), and the neutral pass the probe
        learns from, run as far as the scoring needed. Data-parallel (``self.shard``): every
        draw is made for the global batch; the state holds this process's rows."""
        r, neg = self.config.readout, self.config.negatives
        shard = self.shard
        xf_all = self.flat(x)
        xf = xf_all if shard is None else shard.rows(xf_all)
        y_own = y if shard is None else shard.rows(y)
        state = StepState(y=y_own, n=len(y))
        joint = self.probe is not None and r.probe_mode == "joint"
        if (
            self.probe is not None
            and not self.reuses_positives
            and (joint or self.sampler.needs_scores)
        ):
            level = self.config.model.neutral_level if r.probe_input == "neutral" else 0.0
            state.neutral = self.present(xf, level)
            if self.stage_layers is None:  # one process: the whole neutral pass comes first
                self.advance_neutral(state, len(self.layers))
        scores = None
        if self.sampler.needs_scores:
            if neg.scores == "probe":
                self.advance_neutral(state, max(self.score_layers) + 1)
                feats = torch.cat([state.features[i] for i in sorted(set(self.score_layers))], 1)
                head = self.scorer if self.scorer is not None else self.probe
                assert head is not None
                logits: Tensor = head(feats)
                if self.scorer is not None:  # it learns on the first stage of a pipeline
                    scorer_loss = F.cross_entropy(logits, y_own)
                    state.losses.append(("the scorer", scorer_loss))
                    state.optimizers.append(len(self.layers) + 1)
                    state.metrics["scorer"] = scorer_loss.detach()
                scores = logits.detach()
            else:
                scores = self.negative_scores(xf, None)
            if shard is not None:
                assert scores is not None
                scores = shard.gather(scores, len(y))
        shared = self.shared_inputs(xf_all, y, gen, scores)
        if shared is None:
            a_pos, a_neg = self.inputs(xf_all, y, gen, scores)
            if shard is not None:
                a_pos, a_neg = shard.rows(a_pos), shard.blocks(a_neg, len(y))
            state.a = torch.cat([a_pos, a_neg])
        else:  # the first layer shares its product with each image
            base, rows, codes = shared
            if shard is not None:
                lo, hi = shard.bounds(len(y))
                keep = shard.blocks(torch.arange(len(rows), device=rows.device), len(y))
                base, rows, codes = base[lo:hi], rows[keep] - lo, codes[keep]
            state.a, state.shared = base, (rows, codes)
        state.b = len(y_own)
        return state

    @torch.no_grad()
    def advance_neutral(self, state: StepState, stop: int) -> None:
        """Run the step's neutral pass on through the layers below ``stop``, keeping the
        normalised activities of the readout and scoring layers (as :meth:`probe_features`)."""
        if state.neutral is None:
            return
        a = state.neutral
        keep = set(self.readout_layers) | set(self.score_layers)
        with self._autocast(a):
            for i in range(state.neutral_at, stop):
                a = self.layers[i](a)
                if i in keep:
                    state.features[i] = self._readout_norm(a.float())
        state.neutral, state.neutral_at = a, max(state.neutral_at, stop)

    def run_layers(self, state: StepState, layers: range) -> None:
        """Train ``layers`` (consecutive, from the one the state has reached) on the step's
        rows: the neutral pass through them first, then the positives and negatives, each
        layer's loss kept in the state for :func:`~forwardforward.stepping.learn`."""
        self.advance_neutral(state, layers.stop)
        a, b = state.a, state.b
        with self._autocast(a):
            for i in layers:
                if i == 0 and state.shared is not None:  # _sharing_first
                    patterns = self.encoder.patterns.to(a.dtype)
                    rows, codes = state.shared
                    a, scored = self.run_layer(0, a, (rows, codes, patterns))
                else:
                    a, scored = self.run_layer(i, a)
                loss = self.layer_loss(i, a, b, scored)
                state.losses.append((f"layer {i}", loss))
                state.optimizers.append(i)
                state.metrics[f"loss{i}"] = loss.detach()
                if self.reuses_positives and i in self.readout_layers:
                    state.features[i] = self._readout_norm(a[:b].detach().float())
        state.a = a
        if layers and layers[-1] == len(self.layers) - 1:
            pos, neg = self.last_scores  # the last layer's: positives scored above negatives
            state.metrics["ff_acc"] = (pos.repeat(neg.shape[0] // b) > neg).float().mean()

    def end_step(self, state: StepState, gen: torch.Generator) -> None:
        """The joint probe's loss on the readout features."""
        if self.probe is not None and self.config.readout.probe_mode == "joint":
            feats = torch.cat([state.features[i] for i in sorted(set(self.readout_layers))], 1)
            logits = self._probe_logits(feats, gen, state.n)
            probe_loss = F.cross_entropy(logits, state.y)
            state.losses.append(("probe", probe_loss))
            state.optimizers.append(len(self.layers))
            state.metrics["probe"] = probe_loss.detach()
            state.metrics["probe_acc"] = (logits.detach().argmax(1) == state.y).float().mean()

    # -- prediction ------------------------------------------------------------------------------

    @torch.no_grad()
    def label_scores(self, x: Tensor, layers: list[int] | None = None) -> Tensor:
        """Goodness of every candidate label, summed over ``layers``: ``(B, ...) -> (B, C)``.

        All labels go through the net as one ``(B C)``-row batch. The first layer's product with
        the image part is computed once and shared by the ``C`` labels: the label slots are
        disjoint from the image, so ``W embed(x, c) = W base(x) + value(x) W patterns[c]`` and
        the input norm is the same for every label.
        """
        layers = self.readout_layers if layers is None else layers
        xf = self.flat(x)
        _, total = self.score_span(xf, None, range(len(self.layers)), layers)
        return total.view(xf.shape[0], self.num_classes)

    @torch.no_grad()
    def score_span(
        self, h: Tensor, total: Tensor | None, span: range, layers: list[int] | None = None
    ) -> tuple[Tensor, Tensor]:
        """:meth:`label_scores` through the consecutive layers ``span`` only: from flat images
        ``(B, D)`` when ``span`` starts at layer 0 (``total`` None), else from the ``(B C)`` rows
        ``h`` and goodness ``total`` ``(B C,)`` a span below left. Returns both after ``span``."""
        layers = self.readout_layers if layers is None else layers
        if self.image_negatives is not None:
            raise ConfigError("an unsupervised net has no label to try: use readout.kind = 'probe'")
        scored = h
        with self._autocast(h):
            if span.start == 0:
                h, scored, total = self._score_first(h)
            assert total is not None
            for i in span:
                if i > 0:
                    h, scored = self.run_layer(i, h)
                if i in layers:
                    total += self.goodness(scored)
        return h, total

    def _score_first(self, xf: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The first layer on every label of flat images ``xf`` ``(B, D)``: its ``(B C)`` rows
        (b-major), what their goodness is taken of, and a zero goodness total."""
        enc, first = self.encoder, self._sharing_first()
        b, c = xf.shape[0], self.num_classes
        rows = torch.arange(b, device=xf.device).repeat_interleave(c)  # (B C,): b-major
        total = torch.zeros(b * c, device=xf.device)
        if first is not None:
            codes = torch.eye(c, device=xf.device, dtype=xf.dtype).repeat(b, 1)
            codes = codes * enc.value(xf).index_select(0, rows)[:, None]
            shared = (rows, codes, enc.patterns.to(xf.dtype))
            h, scored = self.run_layer(0, enc.base(xf), shared)
        else:  # no shared product (the std norm is not a scale): every label stacked
            labels = torch.arange(c, device=xf.device).repeat(b)
            h, scored = self.run_layer(0, enc.embed_labels(xf.index_select(0, rows), labels))
        return h, scored, total

    @torch.no_grad()
    def label_scores_naive(self, x: Tensor, layers: list[int] | None = None) -> Tensor:
        """The same as :meth:`label_scores`, one label at a time (a reference for tests)."""
        layers = self.readout_layers if layers is None else layers
        xf = self.flat(x)
        out = []
        for c in range(self.num_classes):
            a = self.encoder.embed_labels(xf, torch.full_like(xf[:, 0], c, dtype=torch.long))
            total = torch.zeros(xf.shape[0], device=xf.device)
            for i in range(len(self.layers)):
                a, scored = self.run_layer(i, a)
                if i in layers:
                    total += self.goodness(scored)
            out.append(total)
        return torch.stack(out, dim=1)

    @torch.no_grad()
    def probe_features(self, x: Tensor) -> Tensor:
        """Normalised, detached activities of the readout layers for the neutral (or all-zero)
        label: ``(B, ...) -> (B, F)``."""
        xf = self.flat(x)
        r, m = self.config.readout, self.config.model
        level = m.neutral_level if r.probe_input == "neutral" else 0.0
        a = self.present(xf, level)
        feats = []
        with self._autocast(a):
            for i, layer in enumerate(self.layers):
                a = layer(a)
                if i in self.readout_layers:
                    feats.append(self._readout_norm(a.float()))
        return torch.cat(feats, dim=1)

    @torch.no_grad()
    def log_probs(self, x: Tensor) -> Tensor | None:
        """Log-probabilities of every label ``(B, C)`` from the probe, or None without one."""
        if self.probe is None:
            return None
        logits: Tensor = self.probe(self.probe_features(x))
        return torch.log_softmax(logits.float(), 1)
