"""The ``ff`` command: data, presets, training, evaluation.

ff data list | verify | fetch
ff presets
ff show PRESET [--set key=value ...]
ff train PRESET [--set key=value ...] [--out RUN_DIR] [--init RUN_DIR] [--backprop]
ff train --resume RUN_DIR
ff eval RUN_DIR
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from forwardforward.errors import FFError
from forwardforward.perf import keep_freed_memory


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        help="data directory (default: $FORWARDFORWARD_DATA, else ~/.cache/forwardforward)",
    )


def _cmd_data_list(args: argparse.Namespace) -> int:
    from forwardforward.data import CATALOG, resolve_data_dir
    from forwardforward.data.fetch import present_form

    root = resolve_data_dir(args.data_dir)
    print(f"data directory: {root}")
    for name, spec in CATALOG.items():
        folder = root / spec.folder
        forms = [present_form(folder, f) for f in spec.files.values()]
        present = sum((folder / f.name).is_file() for f in forms)
        print(
            f"  {name:<14} {spec.num_classes} classes, images {spec.image_shape}, "
            f"{present}/{len(spec.files)} files present in {root / spec.folder}"
        )
    return 0


def _cmd_data_verify(args: argparse.Namespace) -> int:
    from forwardforward.data import CATALOG, dataset_spec, resolve_data_dir, verify_dataset

    root = resolve_data_dir(args.data_dir)
    names = [dataset_spec(n).name for n in args.names] if args.names else list(CATALOG)
    bad = 0
    print(f"data directory: {root}")
    for name in names:
        reports = verify_dataset(name, root)
        if not args.names and all(r.status == "missing" for r in reports):
            print(f"  {name}: not present")
            continue
        for r in reports:
            detail = f" ({r.detail})" if r.detail and r.status != "verified" else ""
            print(f"  {r.status:<8} {name}/{r.file}{detail}")
            if r.status == "corrupt" or (args.names and r.status == "missing"):
                bad += 1
    if bad:
        print(f"{bad} file(s) failed verification", file=sys.stderr)
        return 1
    return 0


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from forwardforward.data import fetch_dataset

    for name in args.names:
        paths = fetch_dataset(name, args.data_dir, timeout=args.timeout, progress=not args.quiet)
        for p in paths:
            print(f"verified {p}")
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    from forwardforward.config import load_preset, preset_names

    for name in preset_names():
        cfg = load_preset(name)
        print(f"{name:<24} {cfg.description}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from forwardforward.config import load_preset, to_dict

    print(json.dumps(to_dict(load_preset(args.preset, args.set)), indent=2))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from forwardforward.config import RunConfig, from_dict, load_preset
    from forwardforward.train import CONFIG, Trainer

    if args.resume:
        out = Path(args.resume)
        if args.preset or args.set or args.init:
            raise FFError("--resume continues a run exactly as it was: give no preset or --set")
        meta = json.loads((out / CONFIG).read_text()) if (out / CONFIG).is_file() else None
        if meta is None:
            raise FFError(f"{out}: not a run folder (no {CONFIG})")
        config = from_dict(RunConfig, meta["config"])
        backprop = meta["kind"] == "backprop"
    else:
        if not args.preset:
            raise FFError("give a preset name (see `ff presets`) or --resume RUN_DIR")
        config = load_preset(
            args.preset, args.set + ([f"train.init={args.init}"] * bool(args.init))
        )
        backprop = args.backprop
        suffix = "-backprop" if backprop else ""
        out = Path(args.out or f"runs/{config.name}{suffix}-{time.strftime('%Y%m%d-%H%M%S')}")
    trainer = Trainer(
        config,
        out_dir=out,
        data_dir=args.data_dir,
        backprop=backprop,
        progress=not args.quiet,
        download=False if args.no_download else None,
    )
    if args.resume:
        trainer.resume()
    try:
        results = trainer.fit()
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; the last checkpoint is kept. Continue with: ff train --resume {out}",
            file=sys.stderr,
        )
        return 130
    trainer.close()
    if trainer.is_main:
        print(json.dumps(results, indent=2))
        print(f"run folder: {trainer.out_dir}", file=sys.stderr)
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from forwardforward.loop import accuracy
    from forwardforward.train import load_data, load_run, resolve_device

    device = resolve_device(args.device)
    config, kind, net, _ = load_run(Path(args.run_dir), str(device))
    ds = load_data(config, args.data_dir, device)
    split = {"test": ds.test, "val": ds.val, "train": ds.train}[args.split]
    if split is None:
        raise FFError(f"the run has no {args.split} split (data.val_fraction = 0)")
    tic = time.perf_counter()
    acc = accuracy(net, split, config.train.eval_batch_size)
    result = {
        "run": str(args.run_dir),
        "kind": kind,
        "split": args.split,
        "accuracy": acc,
        "error_pct": round(100 * (1 - acc), 3),
        "examples": len(split),
        "seconds": round(time.perf_counter() - tic, 3),
    }
    print(json.dumps(result, indent=2))
    return 0


def _cmd_plot_masks(args: argparse.Namespace) -> int:
    from forwardforward.data import load_dataset
    from forwardforward.data.synthetic import synthetic_dataset
    from forwardforward.errors import DataError
    from forwardforward.plots import masks_figure, write_png

    try:
        images = load_dataset(args.dataset, data_dir=args.data_dir).test.float()
    except DataError as exc:
        print(f"{exc}\nusing the synthetic dataset instead", file=sys.stderr)
        images = synthetic_dataset().test.float()
    path = write_png(Path(args.out), masks_figure(images, seed=args.seed, blurs=args.blurs))
    print(f"wrote {path}: rows are image a, image b, mask, hybrid negative")
    return 0


def _cmd_plot_fields(args: argparse.Namespace) -> int:
    from forwardforward.plots import fields_figure, write_png
    from forwardforward.train import load_run

    _, _, net, _ = load_run(Path(args.run_dir))
    layers = getattr(net, "layers", None)
    in_shape = getattr(net, "in_shape", None)
    if layers is None or in_shape is None:
        raise FFError(f"{args.run_dir}: this run's network has no first layer to draw")
    out = Path(args.out or Path(args.run_dir) / "fields.png")
    write_png(out, fields_figure(layers[0], in_shape, n=args.units))
    print(f"wrote {out}")
    return 0


def _cmd_plot_settling(args: argparse.Namespace) -> int:
    import torch

    from forwardforward.checkpoint import atomic_write_bytes
    from forwardforward.nets.recurrent import RecurrentFFNet
    from forwardforward.plots import MATPLOTLIB_MISSING, settling_png
    from forwardforward.train import load_data, load_run

    config, _, net, _ = load_run(Path(args.run_dir))
    if not isinstance(net, RecurrentFFNet):
        raise FFError(f"{args.run_dir}: settling needs a recurrent run (model.kind = 'recurrent')")
    ds = load_data(config, args.data_dir, torch.device("cpu"))
    x = ds.test.images[: args.images]
    c = net.num_classes
    g = net.settle(x.repeat_interleave(c, 0), torch.arange(c).repeat(x.shape[0]))  # (T, L, N C)
    layers = net.readout_layers
    per_label = g[:, layers].sum(1).view(-1, x.shape[0], c).permute(1, 2, 0)  # (N, C, T)
    out = Path(args.out or Path(args.run_dir) / "settling.png")
    window = config.recurrent.window
    data, used = settling_png(x.float() / 255, per_label, ds.test.labels[: args.images],
                              (window[0], window[1]))  # fmt: skip
    if used == "builtin":
        print(MATPLOTLIB_MISSING, file=sys.stderr)
    atomic_write_bytes(out, lambda f: f.write(data))
    print(f"wrote {out}: per image, goodness of each label (rows) over the iterations (columns)")
    return 0


def _cmd_plot_curves(args: argparse.Namespace) -> int:
    from forwardforward.checkpoint import atomic_write_bytes
    from forwardforward.plots import MATPLOTLIB_MISSING, curves_png, read_run

    runs = [read_run(r) for r in args.runs]
    data, backend = curves_png(runs, args.metric, args.x, args.backend)
    if backend == "builtin" and args.backend == "auto":
        print(MATPLOTLIB_MISSING, file=sys.stderr)
    out = Path(args.out or runs[0].path / "curves.png")
    atomic_write_bytes(out, lambda f: f.write(data))
    print(f"wrote {out}: {', '.join(r.label for r in runs)}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from forwardforward.data.text import decode, encode, normalise
    from forwardforward.nets.sequence import SequenceFFNet
    from forwardforward.train import load_run

    _, _, net, _ = load_run(Path(args.run_dir))
    if not isinstance(net, SequenceFFNet):
        raise FFError(f"{args.run_dir}: generate needs a text run (data.dataset = 'aesop')")
    prompt = normalise(args.prompt)
    if not prompt:
        raise FFError("the prompt has no character of the alphabet")
    prompt = prompt[-net.context :].rjust(net.context)
    if not 0 < args.top_p <= 1:
        raise FFError(f"--top-p must be in (0, 1], got {args.top_p}")
    gen = torch.Generator().manual_seed(args.seed)
    codes = net.generate(encode(prompt)[None], args.length, args.temperature, gen, args.top_p)
    print(decode(codes[0]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ff", description="Forward-Forward training for PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="list, verify and fetch datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    p = data_sub.add_parser("list", help="the catalog and what is present")
    _add_data_dir(p)
    p.set_defaults(func=_cmd_data_list)
    p = data_sub.add_parser(
        "verify", help="check present files' sizes and sha256 against the catalog"
    )
    p.add_argument("names", nargs="*", help="datasets (default: every present one)")
    _add_data_dir(p)
    p.set_defaults(func=_cmd_data_verify)
    p = data_sub.add_parser("fetch", help="download missing files from the mirrors, verified")
    p.add_argument("names", nargs="+", help="datasets, e.g. mnist fashion_mnist")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per connection")
    p.add_argument(
        "--no-progress", "--quiet", dest="quiet", action="store_true", help="no progress bar"
    )
    _add_data_dir(p)
    p.set_defaults(func=_cmd_data_fetch)

    p = sub.add_parser("presets", help="list the bundled presets")
    p.set_defaults(func=_cmd_presets)

    p = sub.add_parser("show", help="print a preset's resolved configuration")
    p.add_argument("preset")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_cmd_show)

    p = sub.add_parser("train", help="train a preset; writes a run folder")
    p.add_argument("preset", nargs="?", help="preset name or path to a .toml file")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an option, e.g. --set train.epochs=5 (repeatable)",
    )
    p.add_argument("--out", help="run folder (default: runs/PRESET-TIMESTAMP)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument(
        "--init",
        metavar="RUN_DIR",
        help="start from the FF layers of a trained run (train.init), e.g. FF+C on a trained FFNet",
    )
    p.add_argument("--backprop", action="store_true", help="train the backprop twin instead")
    p.add_argument(
        "--no-progress",
        "--quiet",
        dest="quiet",
        action="store_true",
        help="no progress output (default: a bar on a terminal, one line per epoch in a log)",
    )
    p.add_argument(
        "--no-download",
        action="store_true",
        help="never download missing data files (also: FORWARDFORWARD_OFFLINE=1)",
    )
    _add_data_dir(p)
    p.set_defaults(func=_cmd_train)

    plot = sub.add_parser("plot", help="figures as PNG files")
    plot_sub = plot.add_subparsers(dest="plot_command", required=True, metavar="FIGURE")
    p = plot_sub.add_parser("masks", help="example hybrid-image masks and negatives")
    p.add_argument("--out", default="masks.png")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--blurs", type=int, default=6)
    _add_data_dir(p)
    p.set_defaults(func=_cmd_plot_masks)
    p = plot_sub.add_parser("fields", help="the first layer's receptive fields of a run")
    p.add_argument("run_dir")
    p.add_argument("--out", help="default: RUN_DIR/fields.png")
    p.add_argument("--units", type=int, default=64)
    p.set_defaults(func=_cmd_plot_fields)

    p = plot_sub.add_parser("settling", help="goodness per label over the iterations (recurrent)")
    p.add_argument("run_dir")
    p.add_argument("--out", help="default: RUN_DIR/settling.png")
    p.add_argument("--images", type=int, default=6)
    _add_data_dir(p)
    p.set_defaults(func=_cmd_plot_settling)

    p = plot_sub.add_parser(
        "curves", help="training curves of runs from their metrics.jsonl (FF beside its twin)"
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders written by `ff train`")
    p.add_argument("--out", help="default: curves.png in the first RUN")
    p.add_argument(
        "--metric",
        action="append",
        metavar="NAMES",
        help="one panel of these metrics, comma-separated names or patterns, e.g. test_acc or "
        "'loss*,probe' (repeatable; default: evaluation accuracy, losses, training accuracy)",
    )
    p.add_argument(
        "--x", choices=["epoch", "time"], default="epoch", help="epochs or wall-clock seconds"
    )
    p.add_argument(
        "--backend",
        choices=["auto", "matplotlib", "builtin"],
        default="auto",
        help="auto: matplotlib when installed, else the built-in PNG writer",
    )
    p.set_defaults(func=_cmd_plot_curves)

    p = sub.add_parser("generate", help="sample text from a trained Aesop run")
    p.add_argument("run_dir")
    p.add_argument("--prompt", default="the fox ")
    p.add_argument("--length", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.0, help="0: always the best character")
    p.add_argument(
        "--top-p", type=float, default=1.0, help="nucleus sampling: keep this much probability"
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("eval", help="accuracy of a saved run")
    p.add_argument("run_dir")
    p.add_argument("--split", choices=["test", "val", "train"], default="test")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    _add_data_dir(p)
    p.set_defaults(func=_cmd_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ff``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.func in (_cmd_train, _cmd_eval, _cmd_generate, _cmd_plot_settling):
        keep_freed_memory()  # large tensors reuse heap memory instead of fresh page-faulted maps
    try:
        code: int = args.func(args)
    except FFError as exc:
        print(f"ff: error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
