"""Channel-wise competitive FF (``model.kind = "channelwise"``: CwComp, DeeperForward): the
grouped goodness, local learning, epoch windows, shortcuts, the choice of voting layers, and
the backprop twin built from the same layers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from _tolerance import assert_close_reduced

from forwardforward.augment import augmentation, flip_images
from forwardforward.config import load_preset
from forwardforward.data.synthetic import synthetic_dataset
from forwardforward.data.vision import Split
from forwardforward.errors import ConfigError
from forwardforward.goodness import group_goodness
from forwardforward.layers import FFConv2d
from forwardforward.nets.channelwise import ChannelwiseBackpropNet, ChannelwiseNet
from forwardforward.train import Trainer

PRESET = """\
name = "cw-test"

[data]
dataset = "synthetic"

[model]
kind = "channelwise"
layers = []
norm = "none"

[[model.stack]]
kind = "conv"
channels = 20
kernel = 3
padding = 1
out_norm = "batch"

[[model.stack]]
kind = "conv"
channels = 20
kernel = 3
padding = 1
groups = 10
pool = 2
out_norm = "batch"

[[model.stack]]
kind = "conv"
channels = 40
kernel = 3
padding = 1
pool = 2
out_norm = "batch"

[optim]
name = "adam"
lr = 0.01

[train]
epochs = 3
batch_size = 50
threads = 1
"""


def _conv(net: ChannelwiseNet, i: int) -> FFConv2d:
    layer = net.layers[i]
    assert isinstance(layer, FFConv2d)
    return layer


def _bn(net: ChannelwiseNet, i: int) -> torch.nn.BatchNorm2d:
    bn = _conv(net, i).post
    assert isinstance(bn, torch.nn.BatchNorm2d)
    return bn


def _config(tmp_path: Path, overrides: list[str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "cw.toml"
    path.write_text(PRESET)
    return load_preset(str(path), overrides or [])


@pytest.mark.parametrize("kind", ["mean_squares", "mean"])
def test_the_grouped_goodness_equals_a_loop_over_the_classes(kind: str) -> None:
    torch.manual_seed(0)
    b, k, per, hw = 4, 10, 3, 25
    h = torch.randn(b, k * per, 5, 5)
    got = group_goodness(h.flatten(1), k, kind)
    for c in range(k):
        block = h[:, c * per : (c + 1) * per]  # the class's contiguous channels
        expected = (
            block.square().mean((1, 2, 3)) if kind == "mean_squares" else block.mean((1, 2, 3))
        )
        # a mean of per * hw terms, summed in another order: squares are all positive (a bound
        # relative to the value), signed terms need the mean of their sizes as the scale
        scale = None if kind == "mean_squares" else float(block.abs().mean((1, 2, 3)).max())
        assert_close_reduced(got[:, c], expected, per * hw + 1, scale=scale)
    with pytest.raises(ValueError, match="do not split into 7 equal groups"):
        group_goodness(h.flatten(1), 7)


def test_each_layer_learns_from_its_own_scores_only(tmp_path: Path) -> None:
    net = ChannelwiseNet(_config(tmp_path), (1, 28, 28), 10)
    x = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    y = torch.arange(6) % 10
    kept: dict[int, torch.Tensor] = {}
    h = net.prepare(x)
    outs = []
    for i in range(3):
        h, s = net.run_layer(i, h, kept)
        outs.append(s)
    F.cross_entropy(outs[2], y).backward()  # the last layer's loss
    assert all(p.grad is None for p in net.layers[0].parameters())
    assert all(p.grad is None for p in net.layers[1].parameters())
    assert all(p.grad is not None for p in net.layers[2].parameters())


def test_windows_freeze_a_layer_outside_its_epochs(tmp_path: Path) -> None:
    config = _config(tmp_path, ["channelwise.windows=[[0, 1], [0, 2], [1, 2]]"])
    net = ChannelwiseNet(config, (1, 28, 28), 10)
    net.configure(steps_per_epoch=2, epochs=2)
    x = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    y = torch.arange(8) % 10
    gen = torch.Generator().manual_seed(0)

    def snapshot() -> list[dict[str, torch.Tensor]]:
        return [{k: v.clone() for k, v in la.state_dict().items()} for la in net.layers]

    def changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
        return any(not torch.equal(a[k], b[k]) for k in a)

    net.train()
    before = snapshot()
    net.train_step(x, y, torch.arange(8), gen)  # epoch 0: layers 0 and 1 learn
    after = snapshot()
    assert [changed(a, b) for a, b in zip(before, after, strict=True)] == [True, True, False]
    net.train_step(x, y, torch.arange(8), gen)
    before = snapshot()
    net.train_step(x, y, torch.arange(8), gen)  # epoch 1: layers 1 and 2; layer 0 frozen
    after = snapshot()
    # frozen means its weights *and* its batch norm's running statistics stay as they were
    assert [changed(a, b) for a, b in zip(before, after, strict=True)] == [False, True, True]
    assert net.epoch() == 1 and net.active(1) == [1, 2] and net.active(2) == []


def test_predict_sums_the_voting_layers_in_one_pass(tmp_path: Path) -> None:
    config = _config(tmp_path, ["channelwise.vote=range", "channelwise.vote_range=[1, 2]"])
    net = ChannelwiseNet(config, (1, 28, 28), 10).eval()
    x = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    per = net.layer_scores(x)
    assert [s.shape for s in per] == [(5, 10)] * 3
    assert torch.equal(net.label_scores(x), per[1] + per[2])
    assert torch.equal(net.predict(x), (per[1] + per[2]).argmax(1))


def test_the_voting_range_is_the_best_contiguous_range_on_the_split(tmp_path: Path) -> None:
    torch.manual_seed(3)
    config = _config(tmp_path, ["data.val_fraction=0.1", "channelwise.vote=val"])
    net = ChannelwiseNet(config, (1, 28, 28), 10).eval()
    x = torch.randint(0, 256, (60, 1, 28, 28), dtype=torch.uint8)
    y = torch.randint(0, 10, (60,))
    chosen = net.choose_voters(Split(x, y), batch_size=25)
    per = net.layer_scores(x)
    acc = {
        (s, e): float((torch.stack(per[s : e + 1]).sum(0).argmax(1) == y).float().mean())
        for s in range(3)
        for e in range(s, 3)
    }
    best = max(acc.values())
    assert chosen["voters_acc"] == pytest.approx(best)
    first, last = chosen["voters"]
    assert acc[(first, last)] == pytest.approx(best)
    assert net.voters.tolist() == chosen["voters"]


def test_shortcuts_add_and_concatenate_the_pooled_source(tmp_path: Path) -> None:
    stack = (
        'model.stack=[{kind = "conv", channels = 10, kernel = 3, padding = 1, out_norm = "group"},'
        '{kind = "conv", channels = 10, kernel = 3, padding = 1, pool = 2, pool_kind = "avg",'
        ' out_norm = "group"},'
        '{kind = "conv", channels = 20, kernel = 3, padding = 1, out_norm = "group"}]'
    )
    config = _config(
        tmp_path,
        [
            stack,
            "channelwise.shortcuts=[[1, 0, 'add'], [2, 1, 'concat']]",
            "channelwise.goodness=mean",
            "channelwise.score_on=activation",
        ],
    )
    net = ChannelwiseNet(config, (1, 28, 28), 10).eval()
    assert net.shapes == [(10, 28, 28), (10, 14, 14), (30, 14, 14)]
    x = torch.rand(2, 784)
    kept: dict[int, torch.Tensor] = {}
    h0, _ = net.run_layer(0, x, kept)
    h1, _ = net.run_layer(1, h0, kept)
    plain1 = net.layers[1](h0)
    expected1 = plain1 + F.avg_pool2d(h0.view(2, 10, 28, 28), 2).flatten(1)
    assert torch.equal(h1, expected1)
    h2, s2 = net.run_layer(2, h1, kept)
    assert h2.shape == (2, 30 * 14 * 14)
    assert torch.equal(h2.view(2, 30, 14, 14)[:, 20:], h1.view(2, 10, 14, 14))
    assert s2.shape == (2, 10)
    # a group norm leaves every class group's mean at 0: the scores read the activation before it
    z = _conv(net, 2).preactivation(h1)
    # the same mean of 2 x 196 non-negative terms, reduced in another order
    assert_close_reduced(s2, F.relu(z).view(2, 10, -1).mean(2), 2 * 196 + 1)
    bad = _config(tmp_path, [stack, "channelwise.shortcuts=[[2, 0, 'add']]"])
    with pytest.raises(ConfigError, match="an add shortcut needs equal channels"):
        ChannelwiseNet(bad, (1, 28, 28), 10)


def test_bad_channelwise_configurations_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="windows has 2 windows for 3 layers"):
        _config(tmp_path, ["channelwise.windows=[[0, 1], [0, 2]]"])
    with pytest.raises(ConfigError, match=r"set data\.val_fraction > 0"):
        _config(tmp_path, ["channelwise.vote=val"])
    with pytest.raises(ConfigError, match=r"vote_range is \[first, last\]"):
        _config(tmp_path, ["channelwise.vote=range", "channelwise.vote_range=[2, 5]"])
    with pytest.raises(ConfigError, match=r"unknown channelwise\.goodness"):
        _config(tmp_path, ["channelwise.goodness=sum"])
    with pytest.raises(ConfigError, match="shortcuts entries are"):
        _config(tmp_path, ["channelwise.shortcuts=[[0, 1, 'add']]"])
    with pytest.raises(ConfigError, match=r"set readout\.probe_mode = 'joint'"):
        _config(tmp_path, ["readout.kind=probe", "readout.probe_mode=after"])
    with pytest.raises(ConfigError, match=r"readout\.layers are 0-based layers of the 3-layer"):
        _config(tmp_path, ["readout.kind=probe", "readout.layers=[3]"])
    with pytest.raises(ConfigError, match=r"channelwise\.ema is a decay in \[0, 1\)"):
        _config(tmp_path, ["channelwise.ema=1.0"])
    odd = _config(tmp_path, ['model.stack=[{kind = "conv", channels = 12, kernel = 3}]'])
    with pytest.raises(ConfigError, match=r"12 channels: .* multiple of the 10 classes"):
        ChannelwiseNet(odd, (1, 28, 28), 10)
    with pytest.raises(ValueError, match="7 classes do not divide"):
        FFConv2d((1, 8, 8), 10, 3, out_norm="group", classes=7)


def test_the_twin_has_the_same_layers_and_learns_through_them(tmp_path: Path) -> None:
    config = _config(tmp_path, ["channelwise.shortcuts=[[2, 1, 'concat']]"])
    ff = ChannelwiseNet(config, (1, 28, 28), 10)
    twin = ChannelwiseBackpropNet(config, (1, 28, 28), 10)
    assert [type(la) for la in twin.layers] == [type(la) for la in ff.layers]
    assert [repr(la) for la in twin.layers] == [repr(la) for la in ff.layers]
    assert {k: v.shape for k, v in twin.layers.state_dict().items()} == {
        k: v.shape for k, v in ff.layers.state_dict().items()
    }
    assert twin.shapes == ff.shapes and twin.head.in_features == 60 * 7 * 7
    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    F.cross_entropy(twin(x), torch.arange(4)).backward()
    assert all(p.grad is not None for p in twin.layers[0].parameters())  # end to end


def test_the_probe_learns_on_detached_outputs_in_every_step(tmp_path: Path) -> None:
    """CwComp's softmax classifier (``readout.kind = "probe"``): a linear layer on the
    flattened outputs of the readout's layers; its loss moves no layer; it keeps learning
    after every layer's window has closed; it predicts."""
    from forwardforward import fit

    windows = "channelwise.windows=[[0, 1], [0, 1], [0, 1]]"
    over = ["readout.kind=probe", "readout.layers=[1, 2]", windows, "readout.probe_momentum=0",
            "readout.probe_weight_decay=0"]  # fmt: skip
    config = _config(tmp_path, over)
    torch.manual_seed(0)
    net = ChannelwiseNet(config, (1, 28, 28), 10)
    assert net.probe is not None and net.probe.in_features == 20 * 14 * 14 + 40 * 7 * 7
    ds = synthetic_dataset(n_train=200, n_test=100)
    net.configure(steps_per_epoch=4, epochs=2)
    assert len(net.optimizers) == 4  # one per layer, then the probe's
    x, y = ds.train.images[:50], ds.train.labels[:50]
    gen = torch.Generator().manual_seed(0)
    # the probe's features are the layers' detached outputs: its gradient is the one of a
    # plain linear classifier on them, and no layer's parameter gets one from it
    net.eval()
    feats = net.probe_features(x)
    net.train()
    for _ in range(4):  # epoch 0: every layer and the probe learn
        metrics = net.train_step(x, y, torch.arange(50), gen)
    assert {"loss", "probe_loss", "probe_acc"} <= set(metrics)
    frozen = [p.detach().clone() for p in net.layers.parameters()]
    before = net.probe.weight.detach().clone()
    metrics = net.train_step(x, y, torch.arange(50), gen)  # epoch 1: only the probe
    assert set(metrics) == {"probe_loss", "probe_acc"}
    assert all(torch.equal(a, b) for a, b in zip(frozen, net.layers.parameters(), strict=True))
    assert not torch.equal(before, net.probe.weight)
    # in that epoch the probe's step is SGD's on the frozen layers' outputs (eval mode)
    net.eval()
    feats = net.probe_features(x)
    probe = torch.nn.Linear(net.probe.in_features, 10)
    probe.load_state_dict(net.probe.state_dict())
    F.cross_entropy(probe(feats), y).backward()
    assert probe.weight.grad is not None
    lr = net.optimizers[-1].param_groups[0]["lr"]
    want = probe.weight.detach() - lr * probe.weight.grad
    net.train()
    net.train_step(x, y, torch.arange(50), gen)
    assert_close_reduced(net.probe.weight, want, feats.shape[0] * 2)
    net.eval()
    logits = net.probe(net.probe_features(ds.test.images))
    assert torch.equal(net.predict(ds.test.images), logits.argmax(1))
    # a whole run
    net = ChannelwiseNet(config, (1, 28, 28), 10)
    history = fit(net, ds, epochs=2, batch_size=50, progress=False)
    assert "probe_acc" in history[-1] and "loss" not in history[-1]


def test_the_twin_keeps_the_same_moving_average(tmp_path: Path) -> None:
    """The twin of a preset with ``channelwise.ema`` averages its weights (layers and output)
    by the same rule; the average computes in evaluation mode, the learning weights in
    training; the optimiser never steps the average."""
    decay = 0.7
    twin = ChannelwiseBackpropNet(_config(tmp_path, [f"channelwise.ema={decay}"]), (1, 28, 28), 10)
    assert twin.averaged is not None
    twin.configure(steps_per_epoch=3, epochs=1)
    stepped = {id(p) for group in twin.optimizers[0].param_groups for p in group["params"]}
    assert stepped == {id(p) for p in [*twin.layers.parameters(), *twin.head.parameters()]}
    ds = synthetic_dataset(n_train=60, n_test=20)
    x, y = ds.train.images[:20], ds.train.labels[:20]
    live = torch.nn.ModuleList([twin.layers, twin.head])
    expected = [p.detach().clone() for p in live.parameters()]
    for t in range(3):
        twin.train_step(x, y, torch.arange(20), torch.Generator())
        d = min(decay, (1 + t) / (10 + t))
        expected = [
            d * e + (1 - d) * p.detach() for e, p in zip(expected, live.parameters(), strict=True)
        ]
    for got, want in zip(twin.averaged.parameters(), expected, strict=True):
        assert_close_reduced(got, want, 6)
    plain = ChannelwiseBackpropNet(_config(tmp_path), (1, 28, 28), 10)
    plain.layers.load_state_dict(twin.averaged[0].state_dict())
    plain.head.load_state_dict(twin.averaged[1].state_dict())
    twin.eval(), plain.eval()
    assert torch.equal(twin(ds.test.images), plain(ds.test.images))
    plain.layers.load_state_dict(twin.layers.state_dict())
    plain.head.load_state_dict(twin.head.state_dict())
    assert not torch.allclose(twin(ds.test.images), plain(ds.test.images))


def test_a_channelwise_preset_trains_and_its_twin_too(tmp_path: Path) -> None:
    windows = "channelwise.windows=[[0, 2], [0, 3], [1, 3]]"
    config = _config(
        tmp_path, ["data.val_fraction=0.1", "channelwise.vote=val", windows, "optim.lr=0.003"]
    )
    ds = synthetic_dataset(n_train=1000, n_test=300, val_fraction=0.1)
    run = Trainer(config, out_dir=tmp_path / "ff", dataset=ds, progress=False)
    results = run.fit()
    assert results["test_acc"] > 0.5  # chance: 0.1
    assert all("voters" in r for r in run.history)
    twin = Trainer(config, out_dir=tmp_path / "bp", dataset=ds, backprop=True, progress=False)
    assert isinstance(twin.net, ChannelwiseBackpropNet)
    assert twin.fit()["test_acc"] > 0.5


def test_flips_and_shifts_are_drawn_from_the_generator() -> None:
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    a = flip_images(x.repeat(50, 1, 1, 1), torch.Generator().manual_seed(0))
    b = flip_images(x.repeat(50, 1, 1, 1), torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    same = (a == x.repeat(50, 1, 1, 1)).flatten(1).all(1)
    mirrored = (a == x.flip(-1).repeat(50, 1, 1, 1)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 20 < int(mirrored.sum()) < 80
    assert augmentation(0, False) is None
    t = augmentation(2, True)
    assert t is not None and t(x, torch.Generator().manual_seed(1)).shape == x.shape


def test_recalibration_gives_the_exact_batch_norm_statistics(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = ChannelwiseNet(_config(tmp_path), (1, 28, 28), 10)
    x = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8)
    net.recalibrate(x, last=1, batch_size=10)  # layers 0 and 1; four equal batches
    assert net.training  # the mode it was in
    layer0, layer1 = _conv(net, 0), _conv(net, 1)
    with torch.no_grad():
        a0 = F.relu(layer0.preactivation(net.prepare(x)))  # what layer 0's batch norm sees
        bn = _bn(net, 0)
        assert bn.running_mean is not None and bn.running_var is not None
        assert_close_reduced(bn.running_mean, a0.mean((0, 2, 3)), 40 * 784 + 4)
        # the average of the batches' unbiased variances, as the cumulative average keeps it
        var = torch.stack([b.var((0, 2, 3)) for b in a0.split(10)]).mean(0)
        assert_close_reduced(bn.running_var, var, 2 * 10 * 784 + 4)
        # layer 1 saw layer 0's output with its new statistics (evaluation mode)
        layer0.eval()
        h0 = layer0(net.prepare(x))
        a1 = F.max_pool2d(F.relu(layer1.preactivation(h0)), 2)
        bn1 = _bn(net, 1)
        assert bn1.running_mean is not None
        assert_close_reduced(bn1.running_mean, a1.mean((0, 2, 3)), 2 * 40 * 196 + 4)
    tracked = _bn(net, 2).num_batches_tracked
    assert tracked is not None and int(tracked) == 0  # above ``last``: untouched


def test_fit_chooses_the_voters_before_it_evaluates_the_epoch(tmp_path: Path) -> None:
    from forwardforward import ChooseVoters, accuracy, fit

    config = _config(tmp_path, ["data.val_fraction=0.1", "channelwise.vote=val", "optim.lr=0.003"])
    ds = synthetic_dataset(n_train=600, n_test=200, val_fraction=0.1)
    assert ds.val is not None
    net = ChannelwiseNet(config, (1, 28, 28), 10)
    history = fit(net, ds, epochs=2, batch_size=50, callbacks=[ChooseVoters(ds.val)])
    assert [list(r["voters"]) for r in history][-1] == net.voters.tolist()
    # the epoch's test accuracy is the one of the voters chosen in that epoch
    assert history[-1]["test_acc"] == accuracy(net, ds.test)


def test_the_moving_average_follows_its_formula_and_predicts(tmp_path: Path) -> None:
    """With ``channelwise.ema`` every parameter of the averaged layers is the exponential
    moving average of the learning layer's, with the ramped decay, step by step; only the
    layers that learnt move; the averaged layers (not the learning ones) predict."""
    from forwardforward import fit

    decay = 0.8
    config = _config(
        tmp_path, [f"channelwise.ema={decay}", "channelwise.windows=[[0, 2], [0, 2], [1, 2]]"]
    )
    torch.manual_seed(0)
    net = ChannelwiseNet(config, (1, 28, 28), 10)
    assert net.averaged is not None
    assert not any(p.requires_grad for p in net.averaged.parameters())
    ds = synthetic_dataset(n_train=200, n_test=100)
    x, y = ds.train.images[:50], ds.train.labels[:50]
    net.configure(steps_per_epoch=2, epochs=2)
    expected = [[p.detach().clone() for p in la.parameters()] for la in net.layers]
    gen = torch.Generator().manual_seed(0)
    for step in range(4):  # epochs 0 and 1 of two steps: layer 2 learns from step 2 on
        net.train_step(x, y, torch.arange(50), gen)
        for i, layer in enumerate(net.layers):
            if i == 2 and step < 2:
                continue
            t = step - (2 if i == 2 else 0)
            d = min(decay, (1 + t) / (10 + t))
            expected[i] = [
                d * e + (1 - d) * p.detach()
                for e, p in zip(expected[i], layer.parameters(), strict=True)
            ]
    assert net.ema_updates.tolist() == [4, 4, 2]
    for i, avg in enumerate(net.averaged):
        for got, want in zip(avg.parameters(), expected[i], strict=True):
            assert_close_reduced(got, want, 8)
        assert not all(
            torch.equal(a, b)
            for a, b in zip(avg.parameters(), net.layers[i].parameters(), strict=True)
        )
    # the prediction is the averaged layers': the same as a plain net holding their weights
    fit(net, ds, epochs=1, batch_size=50, progress=False)
    plain = ChannelwiseNet(
        _config(tmp_path, ["channelwise.windows=[[0, 2], [0, 2], [1, 2]]"]), (1, 28, 28), 10
    )
    plain.layers.load_state_dict(net.averaged.state_dict())
    net.eval(), plain.eval()
    assert torch.equal(net.predict(ds.test.images), plain.predict(ds.test.images))
    assert_close_reduced(net.label_scores(ds.test.images), plain.label_scores(ds.test.images), 1)
    # and the learning layers' scores are not those
    live = ChannelwiseNet(_config(tmp_path), (1, 28, 28), 10)
    live.layers.load_state_dict(net.layers.state_dict())
    live.eval()
    assert not torch.allclose(live.label_scores(ds.test.images), net.label_scores(ds.test.images))


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_a_stopped_channelwise_run_resumes_exactly(tmp_path: Path, ema: float) -> None:
    """Windows, recalibrated batch norms, moving averages and chosen voters all live in the
    checkpoint: a run stopped after its first epoch and resumed ends as one that never
    stopped."""
    from forwardforward import Callback, ChooseVoters, Loop, fit

    overrides = ["data.val_fraction=0.1", "channelwise.vote=val", "optim.lr=0.003",
                 "channelwise.windows=[[0, 1], [0, 2], [1, 3]]",
                 f"channelwise.ema={ema}"]  # fmt: skip
    config = _config(tmp_path, overrides)
    ds = synthetic_dataset(n_train=400, n_test=100, val_fraction=0.1)
    assert ds.val is not None
    kwargs: dict[str, Any] = {"epochs": 3, "batch_size": 60, "progress": False, "seed": 3}

    def net() -> ChannelwiseNet:
        torch.manual_seed(0)
        return ChannelwiseNet(config, (1, 28, 28), 10)

    whole = net()
    expected = fit(whole, ds, callbacks=[ChooseVoters(ds.val)], **kwargs)

    class StopAfterFirstEpoch(Callback):
        def on_checkpoint(self, loop: Loop) -> None:
            if loop.next_epoch == 1:
                raise KeyboardInterrupt

    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        stop = [ChooseVoters(ds.val), StopAfterFirstEpoch()]
        fit(net(), ds, checkpoint=path, callbacks=stop, **kwargs)
    again = net()
    history = fit(again, ds, checkpoint=path, callbacks=[ChooseVoters(ds.val)], **kwargs)
    for key, value in whole.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    drop = ("epoch_seconds", "elapsed_seconds")
    assert [{k: v for k, v in r.items() if k not in drop} for r in history] == [
        {k: v for k, v in r.items() if k not in drop} for r in expected
    ]
