"""``python -m core fit-grader``: fit a run's grades on the lesions its segmentation expert finds."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fit-grader", help="fit DR and DME grades on a run's lesion evidence (weights/grader.safetensors)",
        description="Read every graded photograph of the run's train split with its segmentation expert, fit two "
                    "logistic regressions from that lesion evidence to the DR grade and DME risk, and save them in "
                    "the run; prediction and evaluation then take the grades from them. Training does this itself "
                    "with train.fit_grader: true.")
    parser.add_argument("--run", type=Path, required=True, help="run folder, e.g. checkpoints/idrid")
    parser.add_argument("--weights", default="best", help="best or last (default: %(default)s)")
    parser.add_argument("--cv", type=int, default=0, metavar="K",
                        help="instead of fitting: cross-validate the grader over K folds of the run's graded "
                             "photographs and write eval/grader-cv.json (mean and spread per figure)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.train.grader import cross_validate_grader, fit_run_grader

    if args.cv:
        report = cross_validate_grader(args.run, args.cv, weights=args.weights)
        print(f"lesion grader, {report['folds']} folds of {report['n_scored']} graded photographs "
              f"({report['n_fit_only']} more whose masks trained the run only ever fit it):")
        for name, value in report["summary"].items():
            if value["mean"] is None:
                print(f"  {name:<15} not measurable on these folds")
            else:
                sd = "" if value["sd"] is None else f" +- {value['sd']:.3f}"
                print(f"  {name:<15} {value['mean']:.3f}{sd} (folds: {value['folds']})")
        print(f"written: {args.run / 'eval' / 'grader-cv.json'}")
        return 0

    report = fit_run_grader(args.run, args.weights)
    print(f"lesion grader fitted on {report['n_train']} graded training photographs: {args.run / report['file']}")
    val = report.get("val")
    if val:
        print(f"validation ({val['n']} graded): DR accuracy {val['dr_accuracy']:.3f}, kappa {val['dr_kappa']:.3f}; "
              f"DME accuracy {val['dme_accuracy']:.3f}; joint {val['joint_accuracy']:.3f}")
    return 0
