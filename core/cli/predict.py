"""``python -m core predict``: a trained run applied to an image or a folder of images."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from core.errors import StudioError

SOME_FAILED = 3  # 1 is "nothing predicted" (and every other command's error); 2 is argparse's usage error


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="predict an image or a folder with a trained run",
        description="Route each image with the gate and run the chosen expert (--both: both experts). Writes "
                    "predictions.csv (one row per image; unreadable files get a row with their error) and "
                    "masks/<image>_<LESION>.png, 1-bit, at the original size (--masks canvas: at the model's canvas; "
                    "--masks none: no masks). Photographs are decoded ahead and masks encoded behind in worker "
                    "threads while the model runs batches of --batch-size. Exit status: 0 when every image was "
                    "predicted, 1 when none could be, 2 for a mistake in the command (a bad option, a missing run "
                    "or input), 3 when some failed (their rows say why).")
    parser.add_argument("--run", type=Path, required=True, help="run folder, e.g. checkpoints/demo")
    parser.add_argument("--input", type=Path, required=True, help="an image file or a folder of images")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--both", action="store_true", help="run both experts on every image")
    parser.add_argument("--threshold", type=float, default=0.5, help="mask threshold (default: %(default)s)")
    parser.add_argument("--masks", choices=["original", "canvas", "none"], default="original",
                        help="write lesion masks at the original size, at the model's canvas, or not at all "
                             "(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=4, help="photographs per forward pass (default: %(default)s)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.infer.batch import predict_paths
    from core.infer.predictor import Predictor

    if args.batch_size < 1:
        raise StudioError(f"--batch-size must be at least 1, not {args.batch_size}")
    predictor = Predictor.from_run(args.run)
    started = time.perf_counter()
    rows = predict_paths(predictor, args.input, args.out, both=args.both, threshold=args.threshold,
                         masks=args.masks, batch_size=args.batch_size)
    seconds = time.perf_counter() - started
    failed = [r for r in rows if r.get("error")]
    done = len(rows) - len(failed)
    print(f"predicted {done} image(s), {len(failed)} failed, in {seconds:.1f} s ({done / seconds:.2f} images/s); "
          f"wrote {args.out / 'predictions.csv'}")
    if done:
        segmented = sum("segmentation" in r.get("experts_run", "") for r in rows if not r.get("error"))
        how = ("--both: every photograph" if args.both else
               f"routed by the gate of {predictor.name} at its operating point {predictor.gate_threshold:g}")
        print(f"the lesion decoder ran on {segmented} of {done} ({segmented / done:.0%}); {how}")
    for row in failed:
        print(f"  {row['error']}")
    if not failed:
        return 0
    return 1 if len(failed) == len(rows) else SOME_FAILED
