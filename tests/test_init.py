"""``train.init``: an FF run that starts from another run's trained layers (FFLib's FF+C: a
classifier trained on the features of a trained FFNet)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from forwardforward.cli import main
from forwardforward.config import RunConfig
from forwardforward.errors import CheckpointError, ConfigError
from forwardforward.nets.feedforward import FFNet
from forwardforward.train import RESULTS, Trainer, load_run


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, tiny_toml: Path) -> Path:
    """A finished tiny FF run (joint probe) to start from."""
    from forwardforward.config import load_preset

    out = tmp_path_factory.mktemp("source") / "run"
    Trainer(load_preset(str(tiny_toml)), out_dir=out, progress=False).fit()
    return out


def _layers(net: object) -> dict[str, torch.Tensor]:
    assert isinstance(net, torch.nn.Module)
    return {k: v for k, v in net.state_dict().items() if k.startswith("layers.")}


def test_init_keeps_the_layers_and_trains_only_an_after_probe(
    source: Path, tiny_config: Callable[..., RunConfig], tmp_path: Path
) -> None:
    config = tiny_config(
        f"train.init={source}", "train.epochs=0", "readout.probe_mode=after",
        "readout.probe_epochs=4", "readout.probe_optimizer=adam", "readout.probe_lr=0.01",
    )  # fmt: skip
    trainer = Trainer(config, out_dir=tmp_path / "ffc", progress=False)
    net = trainer.net
    assert isinstance(net, FFNet) and net.probe is not None
    probe_before = net.probe.weight.detach().clone()
    results = trainer.fit()
    _, _, source_net, _ = load_run(source)
    ours, theirs = _layers(trainer.net), _layers(source_net)
    assert ours.keys() == theirs.keys() and ours
    for k in ours:
        assert torch.equal(ours[k], theirs[k]), f"{k} changed"
    assert not torch.equal(net.probe.weight, probe_before)
    # 3 epochs of the tiny run make weak features (its own joint probe: ~27%); the probe
    # trained on them afterwards does as well, far above chance (10%)
    assert results["test_acc"] > 0.2
    assert (tmp_path / "ffc" / RESULTS).is_file()


def test_init_refuses_a_different_model(
    source: Path, tiny_config: Callable[..., RunConfig]
) -> None:
    config = tiny_config(f"train.init={source}", "model.layers=[32, 8]")
    with pytest.raises(CheckpointError, match=r"model differs.*layers: \[32, 16\] there"):
        Trainer(config, progress=False)


def test_init_refuses_a_backprop_run_and_the_backprop_twin(
    tiny_config: Callable[..., RunConfig], tmp_path: Path, source: Path
) -> None:
    twin = tmp_path / "twin"
    Trainer(tiny_config("train.epochs=1"), out_dir=twin, backprop=True, progress=False).fit()
    with pytest.raises(CheckpointError, match="holds a backprop run"):
        Trainer(tiny_config(f"train.init={twin}"), progress=False)
    with pytest.raises(ConfigError, match="backprop twin always trains from scratch"):
        Trainer(tiny_config(f"train.init={source}"), backprop=True, progress=False)
    with pytest.raises(CheckpointError, match="no checkpoint there"):
        Trainer(tiny_config(f"train.init={tmp_path / 'nothing'}"), progress=False)


def test_zero_epochs_needs_init_or_an_after_probe(tiny_config: Callable[..., RunConfig]) -> None:
    with pytest.raises(ConfigError, match=r"train\.epochs = 0 trains no layer"):
        Trainer(tiny_config("train.epochs=0"), progress=False)
    with pytest.raises(ConfigError, match=r"train\.epochs = 0 trains no layer"):
        Trainer(tiny_config("train.epochs=0", "readout.kind=probe"), progress=False)


def test_zero_epochs_without_init_trains_a_probe_on_random_fixed_layers(
    tiny_config: Callable[..., RunConfig], tmp_path: Path
) -> None:
    """The paper's random-fixed-hidden baseline: only the probe learns."""
    config = tiny_config(
        "train.epochs=0", "readout.kind=probe", "readout.probe_mode=after", "readout.probe_epochs=2"
    )
    trainer = Trainer(config, out_dir=tmp_path / "run", progress=False)
    net = trainer.net
    assert isinstance(net, FFNet) and net.probe is not None
    layers = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("probe")}
    probe = net.probe.weight.clone()
    result = trainer.fit()
    after = net.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in layers.items())
    assert not torch.equal(probe, net.probe.weight)
    assert result["test_acc"] > 0.2  # the tiny task's chance is 0.1: the probe learned


def test_cli_init_flag(source: Path, tiny_toml: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    args = ["train", str(tiny_toml), "--init", str(source), "--out", str(out), "--quiet"]
    code = main([*args, "--set", "train.epochs=0", "--set", "readout.probe_mode=after"])
    assert code == 0 and (out / RESULTS).is_file()
    assert main(["train", "--resume", str(out), "--init", str(source)]) == 1


def test_init_accepts_a_run_saved_before_newer_model_options(
    source: Path, tiny_config: Callable[..., RunConfig], tmp_path: Path
) -> None:
    import json

    from forwardforward.train import CHECKPOINT

    payload = torch.load(source / CHECKPOINT, weights_only=True)
    saved = json.loads(payload["config"])
    del saved["config"]["model"]["input_mean"], saved["config"]["model"]["input_std"]
    payload["config"] = json.dumps(saved)
    (tmp_path / "old").mkdir()
    torch.save(payload, tmp_path / "old" / CHECKPOINT)
    config = tiny_config(f"train.init={tmp_path / 'old'}", "train.epochs=0")
    net = Trainer(config, progress=False).net
    _, _, source_net, _ = load_run(source)
    assert all(torch.equal(v, _layers(source_net)[k]) for k, v in _layers(net).items())
