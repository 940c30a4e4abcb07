"""Unigram and bigram baselines for next-character prediction on Aesop's fables.

    python benchmarks/aesop_baselines.py [--data-dir DIR]

Counts come from the 248 training strings (add-one smoothing). Accuracy is over the 90
predicted positions of each string, teacher-forced (the real previous characters), on the
training and the held-out strings; perplexity is exp of the mean negative log-likelihood.
Writes ``results/aesop_baselines.json``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from forwardforward.data.text import ALPHABET, load_aesop, windows

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    data = load_aesop(args.data_dir)
    n = len(ALPHABET)
    ctx, nxt = windows(data.train)
    unigram = torch.bincount(nxt, minlength=n).double() + 1
    unigram /= unigram.sum()
    bigram = torch.ones(n, n, dtype=torch.float64)
    bigram.index_put_((ctx[:, -1], nxt), torch.ones(len(nxt), dtype=torch.float64), accumulate=True)
    bigram /= bigram.sum(1, keepdim=True)
    results: dict[str, dict[str, float]] = {}
    for split, strings in (("train", data.train), ("test", data.test)):
        c, t = windows(strings)
        for name, probs in (("unigram", unigram.expand(len(t), n)), ("bigram", bigram[c[:, -1]])):
            acc = float((probs.argmax(1) == t).double().mean())
            ppl = math.exp(float(-probs.gather(1, t[:, None]).log().mean()))
            results.setdefault(name, {})[f"{split}_acc"] = acc
            results[name][f"{split}_perplexity"] = ppl
    results["chance"] = {"train_acc": 1 / n, "test_acc": 1 / n}
    out = ROOT / "results" / "aesop_baselines.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
