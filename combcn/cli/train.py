"""``combcn train CONFIG``: train 3DCN + CombCN (paper §3) from a YAML or TOML config."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from typing import Any

from combcn.cli import DefaultsHelpFormatter, options

log = logging.getLogger("combcn.cli.train")


def run(args: argparse.Namespace) -> int:
    from combcn.train.config import load_config
    from combcn.train.trainer import export_weights, train

    cfg = load_config(args.config)
    overrides: dict[str, Any] = {}
    if args.out:
        overrides["out"] = args.out
    if args.iterations:
        overrides["iterations"] = args.iterations
    if args.minutes is not None:
        overrides["max_minutes"] = args.minutes
    if args.threads:
        overrides["threads"] = args.threads
    if args.device:
        overrides["device"] = args.device
    if args.seed is not None:
        overrides["seed"] = args.seed
    if overrides:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **overrides))
    if args.export:
        from combcn.train.trainer import prepare_data

        _, val_clips = prepare_data(cfg)
        prov = export_weights(cfg.train.out, args.export, which=args.export_which, validate=val_clips)
        print(
            f"exported {cfg.train.out}/{args.export_which}.pt -> {args.export} "
            f"({prov.get('iterations')} iterations, validation {prov.get('validation')})"
        )
        return 0
    result = train(cfg, resume=args.resume, progress=args.progress == "bar")
    print(
        f"{result.status}: {result.iteration} iterations, {result.wall_time_s / 3600:.2f} h, "
        f"best validation L1 {result.best_val}, outputs in {result.out}"
    )
    return 3 if result.status == "nan" else 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the 3DCN + CombCN model from a config file",
        description="Train 3DCN + CombCN (Wang et al. 2019) on clips listed in a YAML or TOML config "
        "(sections model, data, holes, train; 'base: other.yaml' starts from another config and "
        "changes only the keys given; see configs/ and docs/MODEL.md). Writes checkpoint.pt "
        "(every train.checkpoint_minutes), best.pt/last.pt weights, log.csv, val.csv and loss.png to "
        "train.out. Ctrl-C or SIGTERM checkpoints and stops; --resume continues.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("config", help="training config (.yaml, .yml or .toml; may name a base config)")
    p.add_argument("-r", "--resume", action="store_true", help="continue from train.out/checkpoint.pt")
    p.add_argument("-o", "--out", default=None, help="run directory (overrides train.out)")
    p.add_argument(
        "-n",
        "--iterations",
        type=options.integer(1),
        default=None,
        help="total iterations (overrides train.iterations)",
    )
    p.add_argument(
        "-m",
        "--minutes",
        type=options.number(0.0, lo_open=True),
        default=None,
        help="stop with a checkpoint after this many minutes (overrides train.max_minutes)",
    )
    p.add_argument(
        "-t",
        "--threads",
        type=options.threads,
        default=None,
        help="torch CPU threads (overrides train.threads)",
    )
    p.add_argument("-d", "--device", default=None, help="cpu or cuda (overrides train.device)")
    p.add_argument(
        "-s",
        "--seed",
        type=options.seed,
        default=None,
        help="seed of the training windows and holes (overrides train.seed): a replicate of a run",
    )
    p.add_argument("-p", "--progress", choices=["bar", "none"], default="bar", help="progress display")
    p.add_argument(
        "-e",
        "--export",
        default=None,
        metavar="DEST",
        help="do not train: export the run's weights to DEST (fp16) with PROVENANCE.json beside it",
    )
    p.add_argument(
        "-w", "--export-which", choices=["best", "last"], default="best", help="which weights --export takes"
    )
    p.set_defaults(func=run)
