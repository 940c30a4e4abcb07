"""The composable core: FFSequential built from pieces (and from a user's own layer and loss),
trained by the one loop from tensors, a Dataset or a DataLoader; the examples and the README's
Python quick start, run on synthetic data."""

from __future__ import annotations

import re
import runpy
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import forwardforward as ff
from forwardforward.data.synthetic import synthetic_dataset
from forwardforward.data.vision import VisionDataset
from forwardforward.errors import ConfigError, TrainingDiverged
from forwardforward.loop import Callback, Loop

ROOT = Path(__file__).resolve().parent.parent


def _data(n_train: int = 1000) -> VisionDataset:
    return synthetic_dataset(n_train=n_train, n_test=300, seed=1)


def _net(**kwargs: Any) -> ff.FFSequential:
    torch.manual_seed(0)
    options: dict[str, Any] = {
        "labels": ff.OverwritePixels(10, 784),
        "optimizer": lambda p: torch.optim.Adam(p, lr=0.01),
    }
    options.update(kwargs)
    layers = options.pop("layers", [ff.FFLinear(784, 64), ff.FFLinear(64, 64)])
    return ff.FFSequential(layers, **options)


class Recorder(nn.Module):
    """A user's layer: records whether its input could carry a gradient back."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.linear, self.out_features = nn.Linear(d_in, d_out), d_out
        self.inputs_with_grad: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        self.inputs_with_grad.append(x.requires_grad)
        return F.relu(self.linear(x * x.square().mean(1, keepdim=True).add(1e-8).rsqrt()))


def test_a_users_layer_and_loss_train_and_no_gradient_crosses_a_layer() -> None:
    calls: list[tuple[int, int]] = []

    def margin(pos: Tensor, neg: Tensor) -> Tensor:
        calls.append((len(pos), len(neg)))
        return F.softplus(4.0 * (neg - pos)).mean()

    first, second = Recorder(784, 64), Recorder(64, 64)
    net = _net(layers=[first, second], loss=margin)
    data = _data()
    history = ff.fit(net, data, epochs=3, batch_size=50, progress=False)
    assert [r["epoch"] for r in history] == [1, 2, 3] and "test_acc" in history[-1]
    assert history[-1]["test_acc"] > 0.8  # chance is 0.1
    assert ff.accuracy(net, data.test) == history[-1]["test_acc"]
    # every training forward of the second layer saw a detached input
    assert first.inputs_with_grad and not any(second.inputs_with_grad)
    assert calls[0] == (50, 50) and len(calls) == 2 * 3 * 20  # 2 layers, 3 epochs of 20 steps


def test_each_layer_steps_on_its_own_loss_only() -> None:
    """Layer 0's weight gradient is the gradient of layer 0's loss alone."""
    net = _net(optimizer=lambda p: torch.optim.SGD(p, lr=0.0))
    net.configure(1, 1)
    grads: dict[int, Tensor] = {}
    for i, layer in enumerate(net.layers):
        assert isinstance(layer, ff.FFLinear)
        layer.weight.register_hook(lambda g, i=i: grads.__setitem__(i, g.clone()))
    data = _data(100)
    x, y = data.train.images[:20], data.train.labels[:20]
    net.train_step(x, y, torch.arange(20), torch.Generator().manual_seed(3))
    # the same negatives, layer 0's loss alone
    idx, q = net.negatives(y, 10, torch.Generator().manual_seed(3), None)
    xf = net.flat(x)
    a = torch.cat([net.labels.embed_labels(xf, y), net.labels.embed(xf[idx], q)])
    layer0 = net.layers[0]
    assert isinstance(layer0, ff.FFLinear)
    (g0,) = torch.autograd.grad(net.layer_loss(0, layer0(a), 20), layer0.weight)
    assert torch.equal(grads[0], g0)  # the same kernels in the same order


def test_probe_readout_with_hard_negatives() -> None:
    net = _net(negatives=ff.Hard(), readout="probe", loss=ff.SymBa(alpha=4.0), schedule="cooldown")
    assert net.probe is not None
    history = ff.fit(net, _data(), epochs=3, batch_size=50, progress=False)
    assert "probe" in history[-1] and history[-1]["test_acc"] > 0.8
    x = _data(50).test.images[:7]
    expected = net.probe(net.probe_features(x)).argmax(1)
    assert torch.equal(net.predict(x), expected)


def test_inputs_as_tensors_a_dataset_and_a_dataloader() -> None:
    data = _data(400)
    x, y = data.train.images, data.train.labels
    steps: list[int] = []

    class CountSteps(Callback):
        def on_record(self, loop: Loop, record: dict[str, Any]) -> None:
            steps.append(loop.step)

    for source in ((x, y), data.train, TensorDataset(x, y)):
        net = _net()
        ff.fit(net, source, epochs=1, batch_size=40, callbacks=[CountSteps()], progress=False)
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    net = _net()
    history = ff.fit(
        net, loader, epochs=2, eval_data=data.test, callbacks=[CountSteps()], progress=False
    )
    assert steps == [10, 10, 10, 7, 14]  # 400 / 40 in memory; ceil(400 / 64) per loader epoch
    assert history[-1]["test_acc"] > 0.5


def test_the_same_seed_gives_the_same_run() -> None:
    a, b = _net(), _net()
    ha = ff.fit(a, _data(300), epochs=1, batch_size=50, progress=False, seed=5)
    hb = ff.fit(b, _data(300), epochs=1, batch_size=50, progress=False, seed=5)
    assert [r["loss0"] for r in ha] == [r["loss0"] for r in hb]
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_fit_with_a_checkpoint_resumes_exactly(tmp_path: Path) -> None:
    """A run stopped after its first epoch and started again from its checkpoint ends with the
    same weights, metrics and history as one that never stopped."""
    data = _data(300)
    whole = _net(negatives=ff.Hard(), readout="probe", schedule="cooldown")
    expected = ff.fit(whole, data, epochs=3, batch_size=50, progress=False, seed=4)

    class StopAfterFirstEpoch(Callback):
        def on_checkpoint(self, loop: Loop) -> None:
            if loop.next_epoch == 1:
                raise KeyboardInterrupt

    path = tmp_path / "run.pt"
    stopped = _net(negatives=ff.Hard(), readout="probe", schedule="cooldown")
    kwargs: dict[str, Any] = {"epochs": 3, "batch_size": 50, "progress": False, "seed": 4}
    with pytest.raises(KeyboardInterrupt):
        ff.fit(stopped, data, checkpoint=path, callbacks=[StopAfterFirstEpoch()], **kwargs)
    again = _net(negatives=ff.Hard(), readout="probe", schedule="cooldown")
    with torch.no_grad():  # whatever it starts from, the checkpoint's weights replace it
        for p in again.parameters():
            p.normal_()
    batches: list[int] = []

    class CountBatches(Callback):
        def on_batch_end(self, loop: Loop, metrics: dict[str, Tensor], batch: int) -> None:
            batches.append(loop.step)

    history = ff.fit(again, data, checkpoint=path, callbacks=[CountBatches()], **kwargs)
    assert batches == list(range(7, 19))  # epochs 2 and 3 only: 6 steps each

    def timeless(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if "seconds" not in k} for r in records]

    assert len(history) == 3 and timeless(history) == timeless(expected)
    for pa, pb in zip(whole.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)
    other = ff.FFSequential([ff.FFLinear(784, 64)], labels=ff.OverwritePixels(10, 784))
    with pytest.raises(ff.CheckpointError, match="another model"):
        ff.fit(other, data, checkpoint=path, **kwargs)


def test_a_nan_loss_stops_before_any_update() -> None:
    def broken(pos: Tensor, neg: Tensor) -> Tensor:
        return (pos - neg).mean() * float("nan")

    net = _net(loss=[ff.SymBa(), broken])
    net.configure(10, 1)
    before = [p.detach().clone() for p in net.parameters()]
    data = _data(50)
    with pytest.raises(TrainingDiverged, match=r"loss of layer 1 is nan at optimisation step 0"):
        net.train_step(data.train.images[:10], data.train.labels[:10], torch.arange(10), None)  # type: ignore[arg-type]
    assert all(torch.equal(p, q) for p, q in zip(before, net.parameters(), strict=True))


def test_clear_errors() -> None:
    with pytest.raises(ValueError, match="3 losses for 2 layers"):
        _net(loss=[ff.SymBa()] * 3)
    with pytest.raises(ValueError, match="unknown readout 'softmax'"):
        _net(readout="softmax")
    with pytest.raises(ConfigError, match="unknown schedule 'linear'"):
        _net(schedule="linear")
    with pytest.raises(ValueError, match="readout_layers"):
        _net(readout_layers=[2])
    with pytest.raises(ConfigError, match="cannot train on a list"):
        ff.fit(_net(), [1, 2, 3], epochs=1)
    with pytest.raises(ConfigError, match="3 inputs but 2 labels"):
        ff.fit(_net(), (torch.zeros(3, 784), torch.zeros(2)), epochs=1)
    with pytest.raises(RuntimeError, match="configure"):
        _net().train_step(
            torch.zeros(2, 784),
            torch.zeros(2, dtype=torch.long),
            torch.arange(2),
            torch.Generator(),
        )


# ---------------------------------------------------------------------------------------------
# The examples and the README, on synthetic data


def _synthetic_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ff.load_dataset`` (and the preset path's loader) give a small synthetic MNIST."""

    def fake(name: str, **kwargs: Any) -> VisionDataset:
        assert name == "mnist"
        return synthetic_dataset(n_train=1500, n_test=300, seed=2)

    monkeypatch.setattr(ff, "load_dataset", fake)
    monkeypatch.setattr("forwardforward.train.load_data", lambda *a, **k: fake("mnist"))


@pytest.mark.parametrize("script", ["custom_network.py", "custom_pieces.py"])
def test_the_examples_train_and_print_their_accuracy(
    script: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = ROOT / "examples" / script
    assert len(path.read_text().splitlines()) <= 40
    code = path.read_text()
    assert "load_preset(" not in code and "RunConfig(" not in code and "config" not in code
    _synthetic_mnist(monkeypatch)
    runpy.run_path(str(path), run_name="__main__")
    last = capsys.readouterr().out.strip().splitlines()[-1]
    found = re.fullmatch(r"test accuracy (0\.\d{4}|1\.0000)", last)
    assert found, last
    assert float(found.group(1)) > 0.8


def _readme_python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_readme_python_quick_start_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = _readme_python_blocks()
    assert len(blocks) >= 2, "the preset quick start and the custom network"
    _synthetic_mnist(monkeypatch)
    monkeypatch.setenv("FORWARDFORWARD_PROGRESS", "off")
    for block in blocks:
        code = block.replace('"train.epochs=2"', '"train.epochs=1"')
        exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
