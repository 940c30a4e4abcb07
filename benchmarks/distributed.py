"""Distributed FF on this machine: mnist-quick's accuracy and wall time on one process and on
two (data parallel, layer pipeline), and the pipeline's throughput on 4x2000 against the
communication-volume model of docs/distributed.md.

    python benchmarks/distributed.py mnist [--data-dir DIR]    # results/distributed_mnist.json
    python benchmarks/distributed.py throughput [--data-dir DIR]  # distributed_throughput.json
    python benchmarks/distributed.py contention [--data-dir DIR]  # distributed_contention.json

Every process runs one thread (``train.threads=1``), so that two processes share the two cores
fairly against one. The runs are launched the way a user launches them: ``ff train`` for one
process, ``torchrun --standalone --nproc-per-node 2 -m forwardforward train ...`` for two.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import ROOT, environment, matmul_peaks, write_result

PYTHON = sys.executable
TORCHRUN = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
PIPE_SCORES = "negatives.score_layers=[0]"
"""mnist-quick scores its hard negatives with the probe over both layers; in the pipeline they
are chosen on the first stage, so the probe that scores them reads layer 0."""


def train(launcher: list[str], preset: str, overrides: list[str], out: Path) -> dict[str, Any]:
    """One ``ff train`` run (under ``launcher``); its results.json and its command line."""
    sets = [a for o in ["train.threads=1", *overrides] for a in ("--set", o)]
    cmd = [*launcher, "-m", "forwardforward", "train", preset, "--quiet", "--out", str(out), *sets]
    tic = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    results["process_seconds"] = round(time.perf_counter() - tic, 2)
    head = (
        "torchrun --standalone --nproc-per-node 2 -m forwardforward"
        if launcher != [PYTHON]
        else "ff"
    )
    results["command"] = " ".join([head, "train", preset, *sets])
    return results


def mnist(data_dir: str | None) -> dict[str, Any]:
    if data_dir:
        os.environ["FORWARDFORWARD_DATA"] = data_dir
    tmp = Path(tempfile.mkdtemp(prefix="ff-dist-"))
    runs: dict[str, Any] = {}
    plan: list[tuple[str, list[str], list[str]]] = [
        ("one process", [PYTHON], []),
        ("one process, pipeline's scorer", [PYTHON], [PIPE_SCORES]),
        ("ddp, 2 processes", TORCHRUN, ["dist.mode=ddp"]),
        ("pipeline, 2 processes", TORCHRUN, ["dist.mode=pipeline", PIPE_SCORES]),
    ]
    for name, launcher, overrides in plan:
        print(f"{name} ...", file=sys.stderr, flush=True)
        runs[name] = train(launcher, "mnist-quick", overrides, tmp / name.replace(" ", "_"))
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "runs": runs,
        "command": "python benchmarks/distributed.py mnist",
        "matmul_peak_flops_per_s": _one_thread_peaks(),
        **environment(torch.device("cpu")),
    }


# -- throughput ----------------------------------------------------------------------------------

THROUGHPUT = [
    "data.fraction=0.25",  # 15,000 MNIST images: 15 steps of 1000 per epoch
    "model.layers=[2000, 2000, 2000, 2000]",
    "train.batch_size=1000",
    "train.epochs=3",
    "train.eval_every=10",  # the test split is scored after the last epoch only
    "negatives.score_layers=[0, 1]",  # the first stage holds layers 0-1
    "train.threads=1",
]


def worker(out: str, overrides: list[str]) -> None:
    """One process of a throughput run: train, then write the steady epoch's time and the
    bytes this rank sent (pipeline) or all-reduced (data parallel)."""
    import forwardforward as ff
    from forwardforward.train import Trainer

    trainer = Trainer(ff.load_preset("mnist-quick", overrides), progress=False)
    trainer.fit()
    history = trainer.history
    steps = trainer.steps_per_epoch
    stage, shard = trainer.stage, trainer.net.shard
    sends = stage.training_sends if stage is not None else []
    reduced = getattr(shard, "bytes_reduced", 0)
    if trainer.is_main:
        Path(out).write_text(
            json.dumps(
                {
                    # the second epoch: warm, from the first epoch's end to the second's
                    "epoch_seconds": history[1]["elapsed_seconds"] - history[0]["elapsed_seconds"],
                    "steps_per_epoch": steps,
                    "batch_size": trainer.config.train.batch_size,
                    "bytes_sent_per_step": sum(sends) / max(len(sends), 1),
                    "bytes_reduced_per_step": reduced / max(steps * len(history), 1),
                    "stages": [list(s) for s in stage.stages] if stage else None,
                    "test_acc": history[-1].get("test_acc"),
                }
            )
        )
    trainer.close()


def bandwidth() -> float:
    """Bytes per second of a 40 MB gloo send between two processes on this host."""
    code = (
        "import os, time, torch, torch.distributed as d\n"
        "d.init_process_group('gloo')\n"
        "t = torch.zeros(10_000_000)\n"
        "d.barrier(); best = 1e9\n"
        "for _ in range(5):\n"
        "    tic = time.perf_counter()\n"
        "    d.send(t, 1) if d.get_rank() == 0 else d.recv(t, 0)\n"
        "    d.barrier(); best = min(best, time.perf_counter() - tic)\n"
        "if d.get_rank() == 0: print(t.numel() * 4 / best)\n"
    )
    done = subprocess.run(
        [*TORCHRUN, "--no-python", PYTHON, "-c", code],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return float(done.stdout.split()[-1])


def throughput() -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="ff-tput-"))
    script = str(Path(__file__).resolve())
    out: dict[str, Any] = {}
    for name, launcher, extra in (
        ("one process", [PYTHON], []),
        ("pipeline, 2 processes", TORCHRUN, ["dist.mode=pipeline"]),
        ("ddp, 2 processes", TORCHRUN, ["dist.mode=ddp"]),
    ):
        print(f"{name} ...", file=sys.stderr, flush=True)
        target = tmp / f"{len(out)}.json"
        cmd = [*launcher, script, "worker", str(target), *THROUGHPUT, *extra]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
        r = json.loads(target.read_text())
        r["images_per_second"] = r["steps_per_epoch"] * r["batch_size"] / r["epoch_seconds"]
        out[name] = r
    shutil.rmtree(tmp, ignore_errors=True)
    link = bandwidth()
    one = out["one process"]
    model = pipeline_model(
        [784, 2000, 2000, 2000, 2000], out["pipeline, 2 processes"]["stages"], 1000, link,
        one["epoch_seconds"] / one["steps_per_epoch"], one["steps_per_epoch"],
    )  # fmt: skip
    return {
        "runs": out,
        "link_bytes_per_second": link,
        "model": model,
        "measured_speedup": out["pipeline, 2 processes"]["images_per_second"]
        / one["images_per_second"],
        "ddp_speedup": out["ddp, 2 processes"]["images_per_second"] / one["images_per_second"],
        "matmul_peak_flops_per_s": _one_thread_peaks(),
        **environment(torch.device("cpu")),
    }


def contention() -> dict[str, Any]:
    """Two one-process runs of the throughput net side by side against one alone: how much a
    process slows when another computes beside it (shared caches and memory bandwidth), the
    factor the model's compute time leaves out."""
    tmp = Path(tempfile.mkdtemp(prefix="ff-cont-"))
    script = str(Path(__file__).resolve())
    config = [*THROUGHPUT[:3], "train.epochs=2", *THROUGHPUT[4:]]

    def start(name: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [PYTHON, script, "worker", str(tmp / name), *config], cwd=ROOT, text=True
        )

    alone = start("alone.json")
    alone.wait()
    pair = [start("a.json"), start("b.json")]
    for p in pair:
        p.wait()
    if alone.returncode or any(p.returncode for p in pair):
        raise SystemExit("a contention run failed")
    seconds = {
        n: json.loads((tmp / f"{n}.json").read_text())["epoch_seconds"] for n in ("alone", "a", "b")
    }
    shutil.rmtree(tmp, ignore_errors=True)
    both = (seconds["a"] + seconds["b"]) / 2
    return {
        "epoch_seconds_alone": seconds["alone"],
        "epoch_seconds_side_by_side": both,
        "speed_side_by_side": seconds["alone"] / both,
        "command": "python benchmarks/distributed.py contention",
        "matmul_peak_flops_per_s": _one_thread_peaks(),
        **environment(torch.device("cpu")),
    }


def _one_thread_peaks() -> dict[str, float]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return matmul_peaks(torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)


def pipeline_model(
    widths: list[int],
    stages: list[list[int]],
    batch: int,
    link: float,
    step_seconds: float,
    steps: int = 60,
    negatives: int = 1,
    probe: bool = True,
) -> dict[str, Any]:
    """The communication-volume model of docs/distributed.md, for a fully connected net of
    ``widths`` (input first) cut into ``stages``.

    Bytes a stage sends per step (fp32): every positive and negative row of its last layer,
    ``(1 + K) B H``, the neutral pass ``B H``, the readout features gathered so far (the
    probe learns on the last stage) and the labels (int64); a backprop pipeline sends ``B H``
    forward and ``B H`` back (the gradient). Time per step: the slowest stage's share of the
    one-process step (its share of ``in x out`` products) plus its send at ``link`` bytes per
    second. An epoch of ``steps`` steps also fills the pipe once: the first batch passes every
    stage before the slowest stage's rate sets in.
    """
    work = [widths[i] * widths[i + 1] for i in range(len(widths) - 1)]
    total = sum(work)
    per_stage: list[dict[str, Any]] = []
    for k, layers in enumerate(stages):
        last = layers[-1]
        h = widths[last + 1]
        rows = (1 + negatives) * batch * h + (batch * h if probe else 0)
        feats = batch * sum(widths[i + 1] for i in range(last + 1)) if probe else 0
        ff_bytes = 4 * (rows + feats) + 8 * batch if k < len(stages) - 1 else 0  # and labels
        bp_bytes = 4 * 2 * batch * h if k < len(stages) - 1 else 0
        compute = step_seconds * sum(work[i] for i in layers) / total
        per_stage.append(
            {
                "layers": layers,
                "compute_seconds": compute,
                "ff_bytes_per_step": ff_bytes,
                "backprop_bytes_per_step": bp_bytes,
                "send_seconds": ff_bytes / link,
            }
        )
    slowest = max(s["compute_seconds"] + s["send_seconds"] for s in per_stage)
    fill = sum(s["compute_seconds"] + s["send_seconds"] for s in per_stage) - slowest
    epoch = steps * slowest + fill
    return {
        "stages": per_stage,
        "predicted_step_seconds": slowest,
        "steady_speedup": step_seconds / slowest,
        "steps_per_epoch": steps,
        "predicted_epoch_seconds": epoch,
        "predicted_speedup": steps * step_seconds / epoch,
    }


def predictions(step_seconds_per_layer: float, link: float) -> dict[str, Any]:
    """What the model predicts for 4 and 16 nodes (one stage per node, one 2000-wide layer per
    stage: 4x2000 on 4 nodes, 16x2000 on 16), with the measured link."""
    out = {}
    for nodes in (4, 16):
        widths = [784] + [2000] * nodes
        work = [widths[i] * widths[i + 1] for i in range(nodes)]
        step = step_seconds_per_layer * sum(work) / (2000 * 2000)
        out[f"{nodes} nodes"] = pipeline_model(
            widths, [[i] for i in range(nodes)], 1000, link, step
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("mnist")
    p.add_argument("--data-dir")
    t = sub.add_parser("throughput")
    t.add_argument("--data-dir")
    c = sub.add_parser("contention")
    c.add_argument("--data-dir")
    w = sub.add_parser("worker")
    w.add_argument("out")
    w.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as each process of the runs: the peaks are one thread's
    if args.what == "worker":
        worker(args.out, args.overrides)
        return 0
    if args.what == "mnist":
        write_result("distributed_mnist", mnist(args.data_dir))
        return 0
    if args.data_dir:
        os.environ["FORWARDFORWARD_DATA"] = args.data_dir
    if args.what == "contention":
        write_result("distributed_contention", contention())
        return 0
    result = throughput()
    one = result["runs"]["one process"]
    per_layer = one["epoch_seconds"] / one["steps_per_epoch"] * 4e6 / (784 * 2000 + 3 * 4e6)
    result["predictions"] = predictions(per_layer, result["link_bytes_per_second"])
    result["command"] = "python benchmarks/distributed.py throughput"
    write_result("distributed_throughput", result)
    print(json.dumps({k: result[k] for k in ("measured_speedup", "ddp_speedup")}, indent=1))
    print(f"model: {result['model']['predicted_speedup']:.2f}x", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
