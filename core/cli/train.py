"""``python -m core train``: train the gated model from a YAML config (also under torchrun for DDP)."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.errors import StudioError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train the gated multi-task model",
        description="Train the gated multi-task model. The run folder receives config.yaml, status.json, "
                    "log.jsonl, history.jsonl, train.log, weights/ and state/. Several processes: "
                    "torchrun --nproc_per_node N -m core train ...",
        epilog="Overrides use section.key=value, e.g. train.epochs=3 data.image_size=256 model.backbone=convnext_femto",
    )
    parser.add_argument("--config", type=Path, help="YAML config (configs/demo.yaml, configs/idrid-cpu.yaml, ...)")
    parser.add_argument("--out", type=Path, help="run folder (default: checkpoints/<name from the config>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its saved state")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    parser.add_argument("--folds", type=int, help="grouped k-fold cross-validation: the number of folds K")
    parser.add_argument("--fold", type=int, help="with --folds: the fold I (0..K-1) that is the validation split")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.train.trainer import train_from_files

    if args.config is None and not args.resume:
        print("no --config given: training with the built-in defaults (synthetic data)")
    overrides = list(args.overrides)
    if args.folds is not None:
        overrides += [f"data.folds={args.folds}", f"data.fold={args.fold or 0}"]
    elif args.fold is not None:
        raise StudioError("--fold needs --folds K")
    train_from_files(args.config, overrides, args.out, args.resume, args.overwrite)
    return 0
