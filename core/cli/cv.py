"""``python -m core cv``: the mean and spread of a recipe's figures over its cross-validation folds."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cv", help="summarise the folds of a cross-validation (mean and standard deviation of each figure)",
        description="Read the evaluation of each fold's run (train --folds K --fold I, then evaluate --split val "
                    "--full-res) and print every figure's mean, standard deviation and per-fold values.")
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="one run folder per fold")
    parser.add_argument("--split", default="val", help="the evaluated split of each run (default: %(default)s)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.evaluate.crossval import cross_validate

    rows = cross_validate(args.runs, args.split)
    print(f"{'figure':32s} {'mean':>7s} {'sd':>7s}  folds")
    for row in rows:
        mean = "n/a" if row.mean is None else f"{row.mean:.3f}"
        sd = "n/a" if row.sd is None else f"{row.sd:.3f}"
        print(f"{row.figure:32s} {mean:>7s} {sd:>7s}  {', '.join(f'{v:.3f}' for v in row.values)}")
    return 0
