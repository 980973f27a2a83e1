"""``python -m core bench``: routing, sharing, data, inference, shipped-gate, compute and memory figures as ratios."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="measure training, data and inference speed (ratios measured in one run)",
        description="Measure the studio's performance targets and print a table (Markdown). Every target is a "
                    "ratio of two timings taken in this run; absolute figures are printed beside them. --quick "
                    "is a smoke test (small sizes, under 2 minutes on 2 cores); the full run takes about 10-15 "
                    "minutes on 2 cores. Uses ../shared/idrid for the data figures when present, otherwise "
                    "generates a few full-size synthetic photographs.")
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (smoke test)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cpu (default): float32 at 512 px with convnext_atto; cuda: bf16 and channels_last "
                             "at 1024 px with convnext_tiny")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON to this file")
    parser.add_argument("--shared", type=Path, default=None,
                        help="an IDRiD root with full-size segmentation photographs (default: ../shared/idrid)")
    parser.add_argument("--only", nargs="+", default=None,
                        # core.bench.runner.MEASUREMENTS, written out: importing it would load torch for --help
                        choices=["routing", "sharing", "data", "inference", "gate", "compute", "memory"],
                        help="run only these measurements")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.bench.runner import run_benchmark

    run_benchmark(quick=args.quick, device=args.device, out=args.out, shared=args.shared, only=args.only)
    return 0
