"""Hinton's next-character FF model on Aesop's fables (section 5 of the paper).

An example is the previous 10 characters (one-hot) with a candidate next character appended
(``model.label = "concat"``); goodness should be high when the candidate is the real next
character. The net is a :class:`~forwardforward.nets.feedforward.FFNet`; what is particular to
sequences is the negative data:

- **teacher forcing** (``negatives.kind = "hard"``): the real context with the model's own
  prediction of the next character (sampled, never the real one);
- **self-generated** (``negatives.kind = "self_generated"``): before every epoch, in a
  separate phase, the model generates each training string from its first 10 characters; the
  negatives are windows of those generated strings with the character the model chose. The
  pool keeps the last ``negatives.replay`` generations (0: all); they are saved in checkpoints,
  so a resumed run draws from the same pool.

The model's predictions, for both kinds, come from ``negatives.scores``: ``"goodness"`` (the
softmax over the goodness of every candidate character) or ``"probe"`` (a linear softmax on the
hidden activities of the context, trained alongside the layers, as in Hinton's Matlab code).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from forwardforward.config import RunConfig
from forwardforward.errors import ConfigError
from forwardforward.nets.feedforward import FFNet


class SequenceFFNet(FFNet):
    """An :class:`FFNet` over one-hot context windows ``(B, 1, K, 30)`` with next-character
    labels, with self-generated negatives and text generation."""

    def __init__(self, config: RunConfig, in_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__(config, in_shape, num_classes)
        self.context = in_shape[-2]
        self.self_generated = config.negatives.kind == "self_generated"
        self.temperature = config.negatives.temperature
        self.top_p = config.negatives.top_p
        self.replay = config.negatives.replay
        self.source = config.negatives.scores  # what the strings are written from
        self._generated: list[Tensor] = []  # (S, K + P) codes, one per generation phase
        self._pool: tuple[Tensor, Tensor] | None = None

    def begin_epoch(self, x: Tensor, y: Tensor, gen: torch.Generator) -> None:
        """Self-generated negatives: generate every training string from its first window."""
        if not self.self_generated:
            return
        per_string = 100 - self.context
        starts = x[::per_string, 0].argmax(-1)  # (S, K) codes of each string's first window
        self._generated.append(
            self.generate(starts, per_string, self.temperature, gen, self.top_p, self.source)
        )
        if self.replay:
            self._generated = self._generated[-self.replay :]
        self._build_pool()

    def _build_pool(self) -> None:
        generated = torch.cat(self._generated)  # (R S, K + P)
        ctx = generated.unfold(1, self.context, 1)[:, :-1].reshape(-1, self.context)
        self._pool = (self.flat(self._one_hot(ctx)), generated[:, self.context :].reshape(-1))

    def optim_state_dict(self) -> dict[str, Any]:
        """Optimiser states and the generated strings of the negative pool."""
        state = super().optim_state_dict()
        if self._generated:
            state["generated"] = torch.stack(self._generated)
        return state

    def load_optim_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        generated = state.pop("generated", None)
        super().load_optim_state_dict(state)
        if generated is not None:
            self._generated = list(generated.to(next(self.parameters()).device).unbind(0))
            self._build_pool()

    def shared_inputs(
        self, xf: Tensor, y: Tensor, gen: torch.Generator, scores: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor] | None:
        if self.self_generated:  # the negatives are other contexts: nothing to share
            return None
        return super().shared_inputs(xf, y, gen, scores)

    def inputs(
        self, xf: Tensor, y: Tensor, gen: torch.Generator, scores: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        if not self.self_generated:
            return super().inputs(xf, y, gen, scores)
        assert self._pool is not None, "begin_epoch makes the self-generated negatives"
        pool_x, pool_y = self._pool
        idx = torch.randint(0, pool_y.shape[0], (xf.shape[0],), generator=gen, device=xf.device)
        return self.encoder.embed_labels(xf, y), self.encoder.embed_labels(pool_x[idx], pool_y[idx])

    @torch.no_grad()
    def _one_hot(self, codes: Tensor) -> Tensor:
        """Codes ``(B, K)`` -> one-hot windows ``(B, 1, K, S)`` float, ``S`` symbols (the input
        shape's last dimension)."""
        return F.one_hot(codes, self.in_shape[-1]).float()[:, None]

    def next_scores(self, contexts: Tensor, source: str | None = None) -> Tensor:
        """Scores of every next character for contexts ``(B, K)`` of codes: ``(B, 30)``.

        ``source`` is ``"probe"`` (the probe's log-probabilities), ``"goodness"`` (every
        character's goodness, negated under the inverted objective) or None: the run's readout
        (a probe for ``nebullvm-lm``, goodness otherwise)."""
        if source is None:
            source = "probe" if self.config.readout.kind == "probe" else "goodness"
        if source == "probe":
            log_probs = self.log_probs(self._one_hot(contexts))
            if log_probs is None:
                raise ConfigError("this run has no probe to score characters with")
            return log_probs
        scores = self.label_scores(self._one_hot(contexts))
        return scores if self.config.model.maximize else -scores

    @torch.no_grad()
    def generate(
        self,
        prompt: Tensor,
        length: int,
        temperature: float = 0.0,
        gen: torch.Generator | None = None,
        top_p: float = 1.0,
        source: str | None = None,
    ) -> Tensor:
        """Continue prompts ``(B, K)`` of codes by ``length`` characters -> ``(B, K + length)``.

        Temperature 0 takes the best character (deterministic); otherwise characters are sampled
        from ``softmax(scores / temperature)``, cut to its nucleus when ``top_p < 1``: the
        fewest most probable characters whose probabilities reach ``top_p``. ``source`` picks
        the scores (see :meth:`next_scores`).
        """
        out = prompt.clone()
        for _ in range(length):
            scores = self.next_scores(out[:, -self.context :], source).float()
            if temperature <= 0:
                nxt = scores.argmax(1)
            else:
                logits = scores / temperature
                probs = _nucleus(torch.softmax(logits - logits.amax(1, keepdim=True), 1), top_p)
                nxt = torch.multinomial(probs, 1, generator=gen).squeeze(1)
            out = torch.cat([out, nxt[:, None]], 1)
        return out


def _nucleus(probs: Tensor, top_p: float) -> Tensor:
    """Zero every probability outside the nucleus of each row: the smallest set of the most
    probable entries whose sum reaches ``top_p`` (the most probable entry is always kept)."""
    if top_p >= 1:
        return probs
    sorted_p, order = probs.sort(1, descending=True)
    before = sorted_p.cumsum(1) - sorted_p  # mass of the entries ranked above each one
    keep = torch.zeros_like(probs, dtype=torch.bool).scatter(1, order, before < top_p)
    return probs * keep
