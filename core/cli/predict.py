"""``python -m core predict``: a trained run applied to an image or a folder of images."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="predict an image or a folder with a trained run",
        description="Route each image with the gate and run the chosen expert (--both: both experts). Writes "
                    "masks/<image>_<LESION>.png at the original size and predictions.csv (one row per image; "
                    "unreadable files get a row with their error).")
    parser.add_argument("--run", type=Path, required=True, help="run folder, e.g. checkpoints/demo")
    parser.add_argument("--input", type=Path, required=True, help="an image file or a folder of images")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--both", action="store_true", help="run both experts on every image")
    parser.add_argument("--threshold", type=float, default=0.5, help="mask threshold (default: %(default)s)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.infer.batch import predict_paths
    from core.infer.predictor import Predictor

    predictor = Predictor.from_run(args.run)
    rows = predict_paths(predictor, args.input, args.out, both=args.both, threshold=args.threshold)
    failed = [r for r in rows if r.get("error")]
    print(f"predicted {len(rows) - len(failed)} image(s), {len(failed)} failed; wrote {args.out / 'predictions.csv'}")
    for row in failed:
        print(f"  {row['error']}")
    return 1 if failed and len(failed) == len(rows) else 0
