"""Train presets and their backprop twins; store the results; print the README's results table.

    python benchmarks/presets.py run PRESET... [--set key=value ...] [--only ff|backprop] [--resume]
    python benchmarks/presets.py table [--write README.md]

Each run writes ``results/presets/<preset>.json`` (FF and backprop entries, merged with what is
already there) and keeps the run folder under ``runs/bench/``. A run with ``--set
train.seed=N`` is another seed of the preset: it is stored beside the preset's own run (under
``seeds``), and the table shows the mean of the seeds with each seed's figure. ``table`` prints
a Markdown table of every stored result, with the command that produced it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from _common import cpu_model

from forwardforward.config import load_preset, preset_names
from forwardforward.perf import keep_freed_memory
from forwardforward.train import CHECKPOINT, Trainer

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"
STORE = ROOT / "results" / "presets"


def machine() -> str:
    """The CPU's model and matrix instructions (see ``_common.cpu_model``) and the threads."""
    return f"{cpu_model()}, {torch.get_num_threads()} threads"


def run(
    preset: str, overrides: list[str], kinds: list[str], data_dir: str | None, resume: bool
) -> None:
    STORE.mkdir(parents=True, exist_ok=True)
    path = STORE / f"{preset}.json"
    config = load_preset(preset, overrides)
    seed = next((o.split("=", 1)[1].strip() for o in overrides if o.startswith("train.seed")), None)
    for kind in kinds:
        suffix = f"-seed{seed}" if seed is not None else ""
        out = ROOT / "runs" / "bench" / f"{preset}-{kind}{suffix}"
        again = resume and (out / CHECKPOINT).exists()
        if not again:
            shutil.rmtree(out, ignore_errors=True)
        trainer = Trainer(
            config, out_dir=out, data_dir=data_dir, backprop=kind == "backprop", progress=False
        )
        if again:
            trainer.resume()
            print(f"{preset} {kind}: resumed at step {trainer.step}", flush=True)
        results = trainer.fit()
        if config.train.init and kind == "ff":
            # the FF layers were trained by another run: count its time too
            source = json.loads((Path(config.train.init) / "results.json").read_text())
            results.update(init_run=config.train.init, init_wall_seconds=source["wall_seconds"])
        cmd = f"ff train {preset}" + "".join(f" --set {o}" for o in overrides)
        results.update(
            command=cmd + (" --backprop" if kind == "backprop" else ""),
            overrides=overrides,
            reference=config.reference,
            description=config.description,
            date=time.strftime("%Y-%m-%d"),
            machine=machine(),
            history=trainer.history,
        )
        # read again: the other kind may have finished meanwhile in another process
        stored: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        if seed is not None:  # another seed, beside the preset's own run
            results.pop("history")
            stored.setdefault("seeds", {})[f"{kind}:{seed}"] = results
        else:
            stored[kind] = results
        path.write_text(json.dumps(stored, indent=2) + "\n")
        print(
            f"{preset} {kind}: test accuracy {results['test_acc']:.4f} "
            f"in {results['wall_seconds']:.0f} s",
            flush=True,
        )


TEXT_DATASETS = ("aesop",)
BASELINES = ROOT / "results" / "aesop_baselines.json"


def _pct(entry: dict[str, Any] | None, key: str) -> str:
    return f"{100 * entry[key]:.1f}%" if entry and key in entry else ""


def text_table(stored_runs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Next-character presets: accuracy over the 90 predicted positions of the training and
    the held-out strings (teacher-forced) and held-out perplexity, FF next to its twin, then
    the count baselines of ``benchmarks/aesop_baselines.py``."""
    rows = [
        "",
        "Next-character prediction on Aesop's fables (per-character accuracy over the 90 "
        "predicted positions of each string, teacher-forced; perplexity where the model gives "
        "probabilities):",
        "",
        "| model | train strings | held-out strings | held-out perplexity | published / seed "
        "figure | wall time | command |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, stored in stored_runs:
        for kind, label in (("ff", "FF"), ("backprop", "backprop twin")):
            entry = stored.get(kind)
            if not entry:
                rows.append(f"| {name} ({label}) | not run | | | | | |")
                continue
            ppl = f"{entry['test_perplexity']:.2f}" if "test_perplexity" in entry else ""
            ref = entry.get("reference", "") if kind == "ff" else ""
            rows.append(
                f"| {name} ({label}) | {_pct(entry, 'train_acc')} | {_pct(entry, 'test_acc')} "
                f"| {ppl} | {ref} | {entry['wall_seconds']:.0f} s | `{entry['command']}` |"
            )
    if BASELINES.exists():
        for name, entry in json.loads(BASELINES.read_text()).items():
            ppl = f"{entry['test_perplexity']:.2f}" if "test_perplexity" in entry else ""
            rows.append(
                f"| {name} | {_pct(entry, 'train_acc')} | {_pct(entry, 'test_acc')} | {ppl} "
                "| | | `python benchmarks/aesop_baselines.py` |"
            )
    return rows


def _error_cell(stored: dict[str, Any], kind: str) -> str:
    """The test error of ``kind``; with other seeds stored, their mean and each seed's."""
    entry = stored.get(kind)
    if not entry:
        return "not run"
    seeds = [(entry.get("seed", "preset"), entry["test_error_pct"])]
    for key, other in sorted(stored.get("seeds", {}).items()):
        if key.split(":")[0] == kind:
            seeds.append((key.split(":")[1], other["test_error_pct"]))
    if len(seeds) == 1:
        return f"{entry['test_error_pct']:.2f}%"
    mean = sum(e for _, e in seeds) / len(seeds)
    each = ", ".join(f"{e:.2f}%" for _, e in seeds)
    return f"{mean:.2f}% (mean of {len(seeds)} seeds: {each})"


def table() -> str:
    rows = [
        "| preset | FF test error | backprop twin error | published / seed figure | FF wall time "
        "| command |",
        "|---|---|---|---|---|---|",
    ]
    text_runs: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(STORE.glob("*.json")):
        stored = json.loads(path.read_text())
        ff, bp = stored.get("ff"), stored.get("backprop")
        if (ff or bp or {}).get("dataset") in TEXT_DATASETS:
            text_runs.append((path.stem, stored))
            continue
        # the preset's own reference as it reads now (the stored one is the run's copy)
        names = preset_names()
        ref = (
            load_preset(path.stem).reference
            if path.stem in names
            else (ff or bp or {}).get("reference", "")
        )
        ff_err, bp_err = _error_cell(stored, "ff"), _error_cell(stored, "backprop")
        wall = f"{ff['wall_seconds']:.0f} s" if ff else ""
        if ff and "init_wall_seconds" in ff:
            total = ff["wall_seconds"] + ff["init_wall_seconds"]
            wall = f"{total:.0f} s (of which {ff['init_wall_seconds']:.0f} s: `{ff['init_run']}`)"
        cmd = f"`{ff['command']}`" if ff else ""
        rows.append(f"| {path.stem} | {ff_err} | {bp_err} | {ref} | {wall} | {cmd} |")
    if text_runs:
        rows += text_table(text_runs)
    missing = [name for name in preset_names() if not (STORE / f"{name}.json").exists()]
    if missing:
        rows += ["", "Not run to completion yet: " + ", ".join(f"`{m}`" for m in missing) + "."]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run")
    p.add_argument("presets", nargs="*")
    p.add_argument("--all", action="store_true", help="every bundled preset")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--only", choices=["ff", "backprop"])
    p.add_argument("--data-dir")
    p.add_argument(
        "--resume", action="store_true", help="continue a run folder that holds a checkpoint"
    )
    t = sub.add_parser("table")
    t.add_argument("--write", help="replace the table between the results markers of this file")
    args = parser.parse_args()
    keep_freed_memory()
    if args.cmd == "table":
        if args.write:
            path = Path(args.write)
            text = path.read_text()
            start, end = text.index(START) + len(START), text.index(END)
            path.write_text(text[:start] + "\n" + table() + "\n" + text[end:])
            print(f"updated {path}")
        else:
            print(table())
        return
    kinds = [args.only] if args.only else ["ff", "backprop"]
    presets = preset_names() if args.all else args.presets
    if not presets:
        parser.error("name presets or give --all")
    for preset in presets:
        run(preset, args.set, kinds, args.data_dir, args.resume)


if __name__ == "__main__":
    main()
