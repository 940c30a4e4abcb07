"""Hinton's next-character model: generation and self-generated negatives."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _tolerance import reduction_tol
from hypothesis import given
from hypothesis import strategies as st

from forwardforward.cli import main
from forwardforward.config import load_preset
from forwardforward.data.text import ALPHABET, encode, one_hot_windows, windows
from forwardforward.errors import ConfigError
from forwardforward.nets.sequence import SequenceFFNet


def _net(
    kind: str = "self_generated", scores: str = "goodness", readout: str | None = None
) -> SequenceFFNet:
    """A small Aesop net whose negatives use ``scores`` (its goodness, or its softmax probe),
    read out with the same unless ``readout`` says otherwise."""
    readout = readout or ("probe" if scores == "probe" else "goodness")
    overrides = [f"negatives.kind={kind}", f"negatives.scores={scores}", f"readout.kind={readout}"]
    config = load_preset("hinton-aesop-teacher", ["model.layers=[16]", *overrides])
    torch.manual_seed(0)
    return SequenceFFNet(config, (1, 10, 30), len(ALPHABET))


def _strings(n: int = 3) -> torch.Tensor:
    text = (
        "the fox and the grapes. a hungry fox saw some fine bunches of grapes hanging from a vine"
    )
    base = encode((text * 3)[:100])
    return torch.stack([torch.roll(base, 7 * i) for i in range(n)])


def test_generation_is_deterministic_at_temperature_zero() -> None:
    net = _net()
    prompt = encode("the fox sa")[None]
    a, b = net.generate(prompt, 30), net.generate(prompt, 30)
    assert torch.equal(a, b) and a.shape == (1, 40)
    assert torch.equal(a[:, :10], prompt)
    g1 = net.generate(prompt, 30, 1.0, torch.Generator().manual_seed(1))
    g2 = net.generate(prompt, 30, 1.0, torch.Generator().manual_seed(1))
    assert torch.equal(g1, g2)


def test_self_generated_negatives_never_see_the_true_next_character(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A model that always writes 'z' reveals any leak: every negative must be made of the
    strings' first 10 characters followed by its own 'z's, never of the real text after them."""
    net = _net()
    z = ALPHABET.index("z")

    def always_z(contexts: torch.Tensor, source: str | None = None) -> torch.Tensor:
        scores = torch.zeros(contexts.shape[0], len(ALPHABET))
        scores[:, z] = 1e4
        return scores

    monkeypatch.setattr(net, "next_scores", always_z)
    strings = _strings()
    ctx, nxt = windows(strings)
    net.begin_epoch(one_hot_windows(ctx), nxt, torch.Generator().manual_seed(0))
    assert net._pool is not None
    pool_x, pool_y = net._pool
    assert bool((pool_y == z).all())
    seen = pool_x.view(-1, 10, 30).argmax(-1)  # the generated contexts
    for s in range(3):
        for t in range(90):
            expected = torch.cat([strings[s, t:10], torch.full((max(t - 0, 0),), z)])[:10]
            assert torch.equal(seen[s * 90 + t], expected)
    # the batch's negatives come from that pool only
    xf = net.flat(one_hot_windows(ctx[:8]))
    _, neg = net.inputs(xf, nxt[:8], torch.Generator().manual_seed(2), None)
    assert bool((neg[:, -30:].argmax(1) == z).all())


def _writer(net: SequenceFFNet, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Make ``net`` write 'a' in its first generation phase, 'b' in its second, ...; returns
    the list the temperatures it is asked for go into."""
    temperatures: list[float] = []
    original = net.generate

    def generate(
        prompt: torch.Tensor,
        length: int,
        temperature: float = 0.0,
        gen: torch.Generator | None = None,
        top_p: float = 1.0,
        source: str | None = None,
    ) -> torch.Tensor:
        temperatures.append(temperature)
        code = ALPHABET.index("abcdefgh"[len(temperatures) - 1])

        def scores(contexts: torch.Tensor, source: str | None = None) -> torch.Tensor:
            out = torch.zeros(contexts.shape[0], len(ALPHABET))
            out[:, code] = 1e4
            return out

        monkeypatch.setattr(net, "next_scores", scores)
        return original(prompt, length, temperature, gen, top_p, source)

    monkeypatch.setattr(net, "generate", generate)
    return temperatures


@pytest.mark.parametrize(("replay", "kept"), [(1, "c"), (2, "bc"), (0, "abc")])
def test_self_generated_pool_keeps_the_last_generations(
    replay: int, kept: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_preset(
        "hinton-aesop-selfgen",
        ["model.layers=[16]", f"negatives.replay={replay}", "negatives.temperature=2.5"],
    )
    net = SequenceFFNet(config, (1, 10, 30), len(ALPHABET))
    temperatures = _writer(net, monkeypatch)
    ctx, nxt = windows(_strings())
    for _ in range(3):
        net.begin_epoch(one_hot_windows(ctx), nxt, torch.Generator().manual_seed(0))
    assert temperatures == [2.5, 2.5, 2.5]
    assert net._pool is not None
    pool_x, pool_y = net._pool
    assert pool_y.shape[0] == pool_x.shape[0] == len(kept) * 3 * 90
    assert "".join(ALPHABET[int(c)] for c in pool_y.unique()) == kept
    # a checkpoint carries the generations: a fresh net rebuilds exactly the same pool
    net.configure(10)
    state = net.optim_state_dict()
    again = SequenceFFNet(config, (1, 10, 30), len(ALPHABET))
    again.configure(10)
    again.load_optim_state_dict(state)
    assert again._pool is not None
    assert torch.equal(again._pool[0], pool_x) and torch.equal(again._pool[1], pool_y)


def test_teacher_forcing_negatives_are_real_contexts_with_a_wrong_character() -> None:
    net = _net("hard")
    ctx, nxt = windows(_strings())
    xf = net.flat(one_hot_windows(ctx[:20]))
    scores = net.label_scores(xf)
    pos, neg = net.inputs(xf, nxt[:20], torch.Generator().manual_seed(0), scores)
    assert torch.equal(pos[:, :300], neg[:, :300])  # the real context
    assert bool((neg[:, 300:].argmax(1) != nxt[:20]).all())  # never the real character


@pytest.mark.integration
def test_generate_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from forwardforward.data import resolve_data_dir

    if not (resolve_data_dir() / "text" / "aesop.txt").is_file():
        pytest.skip("Aesop's Fables not found: set FORWARDFORWARD_DATA")
    run = tmp_path / "run"
    args = ["train", "hinton-aesop-teacher", "--out", str(run), "--quiet"]
    for s in [
        "model.layers=[32]",
        "train.epochs=1",
        "train.threads=1",
        "negatives.kind=random_wrong",
    ]:
        args += ["--set", s]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["generate", str(run), "--prompt", "The Fox", "--length", "20"]) == 0
    text = capsys.readouterr().out.rstrip("\n")
    assert text.startswith("   the fox") and len(text) == 30
    assert set(text) <= set(ALPHABET)


def test_perplexity_is_exp_of_the_mean_negative_log_likelihood() -> None:
    import math

    from forwardforward.data.vision import Split
    from forwardforward.loop import perplexity

    class Uniformish:
        def log_probs(self, x: torch.Tensor) -> torch.Tensor:
            p = torch.tensor([[0.5, 0.25, 0.25]]).expand(x.shape[0], 3)
            return p.log()

    split = Split(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 0, 1, 2]))
    expected = math.exp(-(2 * math.log(0.5) + 2 * math.log(0.25)) / 4)
    assert perplexity(Uniformish(), split, batch_size=3) == pytest.approx(expected)  # type: ignore[arg-type]

    class NoProbabilities:
        pass

    assert perplexity(NoProbabilities(), split) is None  # type: ignore[arg-type]


def test_a_probe_language_model_generates_from_its_softmax() -> None:
    config = load_preset("nebullvm-lm", ["model.layers=[16]"])
    torch.manual_seed(0)
    net = SequenceFFNet(config, (1, 10, 30), len(ALPHABET))
    assert net.probe is not None
    q = ALPHABET.index("q")
    with torch.no_grad():
        net.probe.weight.zero_()
        net.probe.weight[q] = 1.0  # features are non-negative: 'q' wins wherever any is on

    def boom(*args: object, **kwargs: object) -> torch.Tensor:
        raise AssertionError("a probe language model must not score goodness")

    net.label_scores = boom  # type: ignore[method-assign]
    prompt = encode("the fox sa")[None]
    out = net.generate(prompt, 20)
    assert bool((out[0, 10:] == q).all())
    scores = net.next_scores(prompt)
    torch.testing.assert_close(scores.exp().sum(1), torch.ones(1))  # log-probabilities


@given(
    st.lists(st.floats(-5, 5), min_size=2, max_size=12),
    st.floats(0.01, 1.0),
)
def test_nucleus_keeps_the_fewest_most_probable_entries_reaching_top_p(
    logits: list[float], top_p: float
) -> None:
    from forwardforward.nets.sequence import _nucleus

    probs = torch.softmax(torch.tensor([logits], dtype=torch.float64), 1)
    cut = _nucleus(probs, top_p)[0]
    kept = cut > 0
    assert torch.equal(cut[kept], probs[0][kept])  # kept entries are untouched
    # the library's cumulative sums (less the entry) add these probabilities in another order
    # than the sums here: they agree to 2 gamma_(V+1) of their total, 1
    slack = reduction_tol(torch.float64, len(logits) + 1, 1.0)["atol"]
    assert probs[0][kept].sum() >= top_p - slack or bool(kept.all())
    # every kept entry is at least as probable as every dropped one
    if (~kept).any():
        assert probs[0][kept].min() >= probs[0][~kept].max()
        # and dropping the least probable kept entry would fall short of top_p
        assert probs[0][kept].sum() - probs[0][kept].min() < top_p + slack


def test_top_p_restricts_sampled_characters_to_the_nucleus() -> None:
    net = _net()
    prompt = encode("the fox sa")[None].repeat(64, 1)
    greedy = net.generate(prompt[:1], 1)[0, -1]
    tiny = net.generate(prompt, 1, 5.0, torch.Generator().manual_seed(0), top_p=1e-6)
    assert torch.equal(tiny[:, -1], greedy.expand(64))  # only the best character survives
    wide = net.generate(prompt, 1, 5.0, torch.Generator().manual_seed(0))
    assert len(set(wide[:, -1].tolist())) > 1  # without the cut, sampling spreads


def test_top_p_outside_the_unit_interval_is_rejected() -> None:
    with pytest.raises(ConfigError, match="top_p"):
        load_preset("hinton-aesop-selfgen", ["negatives.top_p=0"])
    with pytest.raises(ConfigError, match="top_p"):
        load_preset("hinton-aesop-selfgen", ["negatives.top_p=1.5"])


@pytest.mark.parametrize(("scores", "readout"), [("goodness", "probe"), ("probe", "goodness")])
def test_self_generated_strings_are_written_with_the_chosen_scores(
    scores: str, readout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``negatives.scores``, not the readout, picks what writes the strings: the goodness of
    every candidate (here favouring 'x') or the softmax probe (here favouring 'q')."""
    net = _net(scores=scores, readout=readout)
    x, q = ALPHABET.index("x"), ALPHABET.index("q")

    def goodness(contexts: torch.Tensor, layers: list[int] | None = None) -> torch.Tensor:
        out = torch.zeros(contexts.shape[0], len(ALPHABET))
        out[:, x] = 1e4
        return out

    def log_probs(contexts: torch.Tensor) -> torch.Tensor:
        out = torch.full((contexts.shape[0], len(ALPHABET)), -1e4)
        out[:, q] = 0.0
        return out

    monkeypatch.setattr(net, "label_scores", goodness)
    monkeypatch.setattr(net, "log_probs", log_probs)
    ctx, nxt = windows(_strings())
    net.begin_epoch(one_hot_windows(ctx), nxt, torch.Generator().manual_seed(0))
    assert net._pool is not None
    wanted = q if scores == "probe" else x
    assert bool((net._pool[1] == wanted).all())


def test_probe_scores_need_a_probe() -> None:
    net = _net(scores="goodness")
    assert net.probe is None
    with pytest.raises(ConfigError, match="no probe"):
        net.next_scores(encode("the fox sa")[None], "probe")
