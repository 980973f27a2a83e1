"""``python -m core gate-threshold``: set a referable gate's operating point on the validation split."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "gate-threshold", help="choose a referable gate's threshold on p(segmentation) for a sensitivity",
        description="Run the gate of a run trained with model.gate_target: referable on its validation photographs "
                    "and set infer.gate_threshold in its config.yaml where it still sends the wanted share of referable "
                    "photographs to the segmentation expert: halfway between the lowest referable score kept and the "
                    "next lower score. Training and fit-gate do this themselves (train.gate_sensitivity).")
    parser.add_argument("--run", type=Path, required=True, help="run folder, e.g. checkpoints/idrid")
    parser.add_argument("--sensitivity", type=float, default=0.9, help="wanted sensitivity (default: %(default)s)")
    parser.add_argument("--split", default="val", help="split to choose on (default: %(default)s)")
    parser.add_argument("--weights", default="best", help="best or last (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true", help="print the choice without writing it")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.train.operating_point import choose_gate_threshold

    report = choose_gate_threshold(args.run, args.split, args.sensitivity, args.weights, write=not args.dry_run)
    print(f"gate threshold {report['threshold']} on {report['n']} {args.split} photographs ({report['positives']} "
          f"referable): sensitivity {report['sensitivity']:.3f}, specificity {report['specificity']:.3f}, ROC AUC "
          f"{report['roc_auc']:.3f}; {report['spared_decoder']:.0%} spared the decoder"
          + ("" if args.dry_run else f"; written to {args.run / 'config.yaml'}"))
    return 0
