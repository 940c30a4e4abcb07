"""The recurrent net's training diagnostics (``benchmarks/recurrent_diagnose.py``): the goodness
it records is the net's own, the label's effect and the loss are measured, and measuring
changes nothing in the net."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import recurrent_diagnose as rd  # type: ignore[import-not-found, unused-ignore]
import recurrent_memory as rm  # type: ignore[import-not-found, unused-ignore]
from test_recurrent import BASE

from forwardforward.config import load_preset
from forwardforward.nets.recurrent import RecurrentFFNet

# the recurrent net's tests' small net, with the label hidden for two of six steps
EXTRA = ["recurrent.window=[3, 6]", "recurrent.label_hidden_steps=2", "recurrent.lateral=true"]


def _net(*extra: str) -> RecurrentFFNet:
    torch.manual_seed(0)
    return RecurrentFFNet(
        load_preset("mnist-quick", [*BASE, *EXTRA, *extra]), (4, 5), 3, frames=True
    )


def test_recorded_goodness_is_the_nets_settling_goodness() -> None:
    net = _net().eval()
    x, y = torch.rand(7, 4, 5), torch.randint(0, 3, (7,))
    got = rd.paths(net, x, y)
    torch.testing.assert_close(got["goodness"], net.settle(x, y))
    assert got["top_down"].shape == (6,)


def test_positives_and_negatives_differ_only_once_the_label_is_shown() -> None:
    net = _net().eval()
    x, y = torch.rand(7, 4, 5), torch.randint(0, 3, (7,))
    pos, neg = rd.paths(net, x, y)["goodness"], rd.paths(net, x, (y + 1) % 3)["goodness"]
    torch.testing.assert_close(pos[:2], neg[:2], rtol=0, atol=0)
    assert (pos[2:, -1] - neg[2:, -1]).abs().max() > 1e-4  # the top layer sees the label first


def test_measuring_records_every_layer_and_leaves_the_net_unchanged() -> None:
    net = _net().train()
    x, y = torch.rand(9, 4, 5), torch.randint(0, 3, (9,))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    diag = rd.Diagnose(net, x, y, every=1, seed=0, per_epoch=4)
    diag.measure(2)
    (point,) = diag.points
    assert point["epoch"] == 0.5 and net.training
    assert len(point["loss"]) == len(point["grad_norm"]) == len(point["ordered"]) == 2
    assert all(math.isfinite(v) and v > 0 for v in point["loss"] + point["grad_norm"])
    assert 0 < rd.label_share(point) < 1
    assert point["top_label_difference"] > 0
    assert len(point["per_step_pos"][0]) == 6
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize("maximize", [True, False])
def test_the_loss_recorded_is_the_objective_on_the_shown_steps(maximize: bool) -> None:
    net = _net(f"model.maximize={str(maximize).lower()}").eval()
    x, y = torch.rand(9, 4, 5), torch.randint(0, 3, (9,))
    diag = rd.Diagnose(net, x, y, every=1, seed=0, per_epoch=1)
    diag.measure(0)
    gp, gn = net.settle(x, y), net.settle(x, diag.q)
    s = 1.0 if net.config.model.maximize else -1.0  # scores: higher is more positive
    want = sum(float(net.objective.loss(0, s * gp[t, 0], s * gn[t, 0])) for t in range(2, 6)) / 4
    assert math.isclose(diag.points[0]["loss"][0], want, rel_tol=1e-6)
    assert bool((diag.q != y).all())


def test_the_figure_is_drawn_from_the_measured_points(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    net = _net().train()
    x, y = torch.rand(9, 4, 5), torch.randint(0, 3, (9,))
    diag = rd.Diagnose(net, x, y, every=1, seed=0, per_epoch=2)
    diag.measure(0)
    diag.measure(1)
    out = tmp_path / "diagnose.png"
    rd.figure(diag.points, net.config.recurrent, "test", out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ridge_reads_a_class_written_into_the_features_and_not_noise() -> None:
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (300,), generator=gen)
    noise = torch.randn(300, 6, generator=gen)
    signal = noise.clone()
    signal[:, :3] += 5.0 * torch.nn.functional.one_hot(y, 3)  # the class, in three features
    assert rm.ridge_accuracy(signal[:200], y[:200], signal[200:], y[200:]) == 1.0
    assert rm.ridge_accuracy(noise[:200], y[:200], noise[200:], y[200:]) < 0.6


def test_memory_features_are_every_layers_state_at_the_last_row_and_averaged() -> None:
    net = _net().eval()
    x = torch.rand(5, 4, 5)
    f = rm.features(net, x)
    assert f["last_row"].shape == f["mean_over_rows"].shape == (5, 12 + 8)
    torch.testing.assert_close(f["last_row"][:, :12].norm(dim=1), torch.ones(5))
