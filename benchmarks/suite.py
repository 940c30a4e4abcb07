"""Run every benchmark, each in its own process (so that each reports its own peak memory),
then regenerate BENCHMARKS.md.

    python benchmarks/suite.py [--device cpu|cuda] [--quick]

``--quick`` runs fewer steps and repeats (a smoke run; its figures are noisier).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import report

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    device = ["--device", args.device] if args.device else []
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    steps = ["--steps", "3"] if args.quick else []
    repeats = ["--repeats", "1"] if args.quick else []
    jobs = [
        ["speed.py", "--no-report", *steps, *device],
        ["time_to_accuracy.py", *data],
        ["eval_speed.py", *repeats, *data, *device],
    ]
    for job in jobs:
        print(f"== {' '.join(job)}", flush=True)
        subprocess.run([sys.executable, str(HERE / job[0]), *job[1:]], check=True)
    report.write()


if __name__ == "__main__":
    main()
