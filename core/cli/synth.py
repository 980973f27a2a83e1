"""``python -m core synth``: write a synthetic IDRiD in the official layout.

Heavy modules are imported inside :func:`run`, so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Generate a synthetic IDRiD dataset: fundus-like photographs with microaneurysms, haemorrhages, hard and soft
exudates, optic disc and (for PDR) neovascularisation, drawn to the real dataset's sizes, colours and geometry.
Both halves are written in the official layout: the segmentation half (JPEG images, 1-bit TIFF masks, 2/3
train, 1/3 test, every image with lesions) and the grading half (JPEG images and the two label CSVs, 80/20,
every DR grade and DME class in both splits once --n-cls >= 25). Labels follow the ICDR grading and IDRiD's DME
definition, computed from what was drawn. The same seed gives byte-identical files.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="generate a synthetic IDRiD dataset (both halves, official layout)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="folder to write (new or empty, or a previous synthetic set, which is replaced)")
    parser.add_argument("--n-seg", type=int, default=20, help="segmentation images in all, split 2/3 train, 1/3 test (default 20)")
    parser.add_argument("--n-cls", type=int, default=60, help="grading images in all, split 80/20 (default 60)")
    parser.add_argument("--width", type=int, default=1024, help="image width in px; height keeps IDRiD's 4288x2848 aspect (default 1024)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same files (default 0)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: up to 2 for larger sets)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _distribution(counts: dict) -> str:
    return " ".join(f"{k}:{v}" for k, v in counts.items())


def run(args: argparse.Namespace) -> int:
    from core.data.synth import generate_dataset

    summary = generate_dataset(
        args.out,
        n_seg=args.n_seg,
        n_cls=args.n_cls,
        width=args.width,
        seed=args.seed,
        workers=args.workers,
        progress=not args.quiet,
    )
    seg, cls = summary.segmentation, summary.grading
    print(f"wrote {summary.n_images} images ({summary.width}x{summary.height}) to {summary.out} in {summary.elapsed_s:.1f} s")
    print(f"  segmentation: train {seg['train']}, test {seg['test']}; masks (train) {_distribution(summary.seg_masks['train'])}")
    print(f"  grading: train {cls['train']}, test {cls['test']}")
    for split in ("train", "test"):
        print(f"    {split:5s} DR grade {_distribution(summary.dr_grade[split])} | DME {_distribution(summary.dme_risk[split])}")
    return 0
