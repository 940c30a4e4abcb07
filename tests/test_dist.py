"""Distributed FF on two gloo processes on 127.0.0.1: data parallel and the layer pipeline give
the one-process run; a killed process stops the other with its rank named; resume finishes.

Each test starts its processes itself (bounded in time) with the variables torchrun sets.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import forwardforward as ff
from forwardforward.checkpoint import read_checkpoint
from forwardforward.config import DistConfig, validate
from forwardforward.dist import World, check_pipeline, data_parallel, init_world, partition
from forwardforward.errors import CheckpointError, ConfigError
from forwardforward.nets.feedforward import FFNet
from forwardforward.train import Trainer, build_net

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="this torch build has no torch.distributed"
)

WORKER = Path(__file__).with_name("dist_worker.py")
SGD = ["optim.name=sgd", "optim.lr=0.05", "readout.probe_optimizer=sgd"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rank_env(rank: int, size: int, port: int, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RANK=str(rank),
        WORLD_SIZE=str(size),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
        **extra,
    )
    return env


def spawn(
    args: list[str], size: int = 2, extra: dict[int, dict[str, str]] | None = None
) -> list[subprocess.Popen[str]]:
    port = free_port()
    return [
        subprocess.Popen(
            [sys.executable, *args],
            env=rank_env(r, size, port, **(extra or {}).get(r, {})),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(size)
    ]


def finish(procs: list[subprocess.Popen[str]], timeout: float = 120) -> list[tuple[int, str]]:
    """Every process's exit status and stderr; kills them all after ``timeout`` seconds."""
    out = []
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            _, err = p.communicate(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError(f"a process hung past {timeout} s") from None
        out.append((p.returncode, err))
    return out


def run_workers(tmp: Path, overrides: list[str]) -> dict[str, Any]:
    out = tmp / f"dist-{abs(hash(tuple(overrides)))}.pt"
    for code, err in finish(spawn([str(WORKER), str(out), *overrides])):
        assert code == 0, err[-3000:]
    saved: dict[str, Any] = torch.load(out, weights_only=True)
    return saved


def worker_base() -> list[str]:
    """The worker's small problem (its ``BASE`` overrides), read from the worker itself."""
    spec = importlib.util.spec_from_file_location("dist_worker", WORKER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.BASE)


def run_one(overrides: list[str]) -> Trainer:
    trainer = Trainer(ff.load_preset("mnist-quick", [*worker_base(), *overrides]), progress=False)
    trainer.fit()
    return trainer


def assert_same_metrics(
    one: list[dict[str, Any]], two: list[dict[str, Any]], tolerance: float
) -> None:
    """The same metrics (losses, accuracies) in every epoch record, within ``tolerance``."""
    skip = ("seconds", "phase", "epoch", "step")
    assert len(one) == len(two)
    for a, b in zip(one, two, strict=True):
        keys = {k for k in a if not any(w in k for w in skip)}
        assert keys == {k for k in b if not any(w in k for w in skip)}
        for k in keys:
            assert a[k] == pytest.approx(b[k], abs=tolerance), k


def test_data_parallel_gives_the_one_process_weights(tmp_path: Path) -> None:
    # mnist-quick's own step (hard negatives scored by the joint probe, peer normalisation)
    # with SGD: each gradient is the same sum taken in another order (a few fp32 ulps), which
    # 20 steps of SGD keep far below 1e-5 (Adam would magnify the ulps of near-zero gradients
    # into steps of up to its learning rate)
    one = run_one(SGD)
    two = run_workers(tmp_path, [*SGD, "dist.mode=ddp"])
    for k, v in one.net.state_dict().items():
        torch.testing.assert_close(two["state"][k], v, rtol=0, atol=1e-5, msg=k)
    assert_same_metrics(one.history, two["history"], 1e-5)
    assert two["results"]["dist"] == {"mode": "ddp", "world_size": 2}


@pytest.mark.parametrize("buffer", [2, 0])
def test_pipeline_gives_the_one_process_updates(tmp_path: Path, buffer: int) -> None:
    # every layer sees batch t after its own t updates, on an input computed by the layers
    # below before their update t: the one process's order; buffer 0 runs without overlap
    scored = ["negatives.score_layers=[0]"]  # hard negatives chosen on the first stage
    one = run_one(scored)
    two = run_workers(tmp_path, [*scored, "dist.mode=pipeline", f"dist.buffer={buffer}"])
    for k, v in one.net.state_dict().items():
        torch.testing.assert_close(two["state"][k], v, rtol=0, atol=1e-6, msg=k)
    assert_same_metrics(one.history, two["history"], 1e-6)
    assert two["results"]["test_acc"] == one.finish()["test_acc"]


def test_pipeline_predicts_by_goodness_through_the_pipe(tmp_path: Path) -> None:
    # three layers on two stages, random negatives, every label tried through both stages
    overrides = [
        "model.layers=[48, 48, 48]",
        "negatives.kind=random_wrong",
        "negatives.scores=goodness",
        "readout.kind=goodness",
    ]
    one = run_one(overrides)
    two = run_workers(tmp_path, [*overrides, "dist.mode=pipeline"])
    expected = one.finish()
    assert expected["test_acc"] > 0.3  # it learned something to agree on
    # the same weights as one process (3 stages of a 2-process run: layers 0 | 1-2)
    for k, v in one.net.state_dict().items():
        torch.testing.assert_close(two["state"][k], v, rtol=0, atol=1e-6, msg=k)
    assert two["results"]["test_acc"] == pytest.approx(expected["test_acc"], abs=0.0)


@pytest.mark.parametrize("mode", ["ddp", "pipeline"])
def test_a_killed_process_is_named_and_resume_finishes(tmp_path: Path, mode: str) -> None:
    run = tmp_path / "run"
    args = [
        "-m", "forwardforward", "train", "mnist-quick", "--quiet", "--out", str(run),
        "--set", "data.dataset=synthetic", "--set", "data.fraction=0.1",
        "--set", "model.layers=[64, 64]", "--set", "train.epochs=3",
        "--set", "train.batch_size=20", "--set", "train.threads=1",
        "--set", "negatives.score_layers=[0]", "--set", f"dist.mode={mode}",
    ]  # fmt: skip
    tic = time.monotonic()
    # rank 1 kills itself in epoch 2 (step 15 of 30), after epoch 1's checkpoint
    procs = spawn(args, extra={1: {"FORWARDFORWARD_KILL_AT_STEP": "15:KILL"}})
    (code0, err0), (code1, _) = finish(procs, timeout=90)
    assert code1 == -9
    assert code0 != 0
    assert time.monotonic() - tic < 60 + 30  # the 60 s bound, plus both processes' start-up
    assert "lost rank 1" in err0, err0[-2000:]
    assert "--resume" in err0
    assert (run / "checkpoint.pt").is_file() and not (run / "results.json").exists()
    for code, err in finish(spawn(["-m", "forwardforward", "train", "--resume", str(run)])):
        assert code == 0, err[-3000:]
    results = json.loads((run / "results.json").read_text())
    assert results["epochs"] == 3 and results["dist"]["world_size"] == 2
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    # exactly where a run that was never interrupted ends
    whole = tmp_path / "whole"
    command = [*args[: args.index("--out") + 1], str(whole), *args[args.index("--out") + 2 :]]
    for code, err in finish(spawn(command)):
        assert code == 0, err[-3000:]
    resumed, never = (read_checkpoint(d / "checkpoint.pt")["model"] for d in (run, whole))
    assert resumed.keys() == never.keys()
    for k in never:
        assert torch.equal(resumed[k], never[k]), k
    # a run of 2 processes resumes with 2, not with 1
    config = ff.load_preset("mnist-quick", ["data.dataset=synthetic", "data.fraction=0.1",
                                            "model.layers=[64, 64]", "train.batch_size=20",
                                            "negatives.score_layers=[0]"])  # fmt: skip
    with pytest.raises(CheckpointError, match="written by 2 process"):
        Trainer(config, out_dir=run, progress=False).resume()


def test_outside_torchrun_the_error_says_how_to_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ConfigError, match="torchrun --standalone --nproc-per-node"):
        init_world(DistConfig(mode="ddp"), torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"unknown dist\.mode"):
        ff.load_preset("mnist-quick", ["dist.mode=horovod"]).dist.check()
    with pytest.raises(ConfigError, match=r"dist\.timeout"):
        DistConfig(timeout=0).check()


def test_modes_refuse_what_they_cannot_keep_exact() -> None:
    world = World(rank=0, size=2, local_rank=0, backend="gloo", timeout=60.0)
    conv = ff.load_preset("conv-mnist-quick")
    with pytest.raises(ConfigError, match="FFNet"):
        data_parallel(world, build_net(conv, (1, 28, 28), 10))
    greedy = ff.load_preset("pff-mnist")
    net = build_net(greedy, (1, 28, 28), 10)
    if greedy.train.schedule == "greedy":
        with pytest.raises(ConfigError, match="simultaneous"):
            check_pipeline(net)
    with pytest.raises(ConfigError, match=r"negatives\.score_layers"):
        validate(ff.load_preset("mnist-quick", ["negatives.kind=random_wrong",
                                                "negatives.score_layers=[0]"]))  # fmt: skip
    assert isinstance(build_net(ff.load_preset("mnist-quick"), (1, 28, 28), 10), FFNet)


@settings(max_examples=60, deadline=None)
@given(
    costs=st.lists(st.integers(1, 50), min_size=1, max_size=9),
    parts=st.integers(1, 9),
)
def test_partition_is_contiguous_and_balanced(costs: list[int], parts: int) -> None:
    if parts > len(costs):
        with pytest.raises(ConfigError, match="at least"):
            partition(costs, parts)
        return
    groups = partition(costs, parts)
    assert [i for g in groups for i in g] == list(range(len(costs)))
    assert all(len(g) > 0 for g in groups)
    largest = max(sum(costs[i] for i in g) for g in groups)
    # no contiguous split does better (brute force over the cut points)
    from itertools import combinations

    best = min(
        max(sum(costs[a:b]) for a, b in zip((0, *cuts), (*cuts, len(costs)), strict=True))
        for cuts in combinations(range(1, len(costs)), parts - 1)
    )
    assert largest == best
