"""``python -m core fit-gate``: give a run whose lesions were trained alone a gate that routes and grade heads."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fit-gate", help="fit a lesion gate and the classification expert onto a run's frozen backbone and decoder",
        description="With the run's backbone and decoder frozen, read every training photograph once, teach a "
                    "coarse lesion head to draw at stride 16 what the decoder draws, then fit a linear gate (referable "
                    "DR) and the DR and DME heads on its summary as class-balanced logistic regressions (with "
                    "--gate-input glance, on the summary of the decoder's own maps of a smaller copy of each "
                    "photograph instead), and choose the gate's operating point on the validation split for a "
                    "sensitivity. The run then routes by its gate "
                    "(infer.route: gate); its lesion maps and lesion grades do not change.")
    parser.add_argument("--run", type=Path, required=True, help="run folder, e.g. checkpoints/idrid")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the fitted run to this new folder instead of changing --run")
    parser.add_argument("--sensitivity", type=float, default=0.9, help="wanted sensitivity (default: %(default)s)")
    parser.add_argument("--epochs-coarse", type=int, default=60, help="coarse head epochs (default: %(default)s)")
    parser.add_argument("--gate-input", choices=("lesions", "glance", "pooled"), default="lesions",
                        help="what the gate reads: a coarse copy of the decoder's lesion maps, the decoder's own maps "
                             "of a smaller copy of the canvas (see --glance-size), or the pooled backbone features "
                             "(default: %(default)s)")
    parser.add_argument("--glance-size", type=int, default=None,
                        help="with --gate-input glance: the longer side in px of the canvas's copy the glance reads "
                             "(default: 384, for the 512-px canvas)")
    parser.add_argument("--coarse-reads", choices=("pyramid", "deep"), default="pyramid",
                        help="what the coarse lesion head reads: every backbone stage pooled to its stride-16 grid, "
                             "or the stride-16 and stride-32 features alone (default: %(default)s)")
    parser.add_argument("--views", type=int, default=1,
                        help="views of each training photograph the coarse head learns from: 1 as taken, up to 4 with "
                             "its flips (4 helped the synthetic demo, 1 was best on real IDRiD; default: %(default)s)")
    parser.add_argument("--summary", choices=("rich", "basic"), default=None,
                        help="what the gate and the grade heads read of the coarse maps: ten numbers per lesion (with "
                             "counts of cells above 0.5 and 0.2) or four (default: the run's model.coarse_summary)")
    parser.add_argument("--c", type=float, default=None,
                        help="inverse L2 strength of the gate's logistic regression (default: 1 with the rich "
                             "summary, 0.1 with the basic one)")
    parser.add_argument("--keep-coarse", action="store_true",
                        help="keep the run's own coarse lesion head and refit only the gate's and the grade heads' "
                             "regressions (a run fitted by fit-gate before)")
    parser.add_argument("--c-grades", type=float, default=0.1,
                        help="inverse L2 strength of the DR and DME heads' logistic regressions "
                             "(default: %(default)s)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.train.posthoc import fit_gate

    report = fit_gate(args.run, args.out, epochs_coarse=args.epochs_coarse, c=args.c, sensitivity=args.sensitivity,
                      gate_input=args.gate_input, coarse_reads=args.coarse_reads,
                      views=args.views, coarse_summary=args.summary, c_grades=args.c_grades,
                      keep_coarse=args.keep_coarse, glance_size=args.glance_size)
    point = report["operating_point"]
    target = args.out or args.run
    print(f"gate fitted on {report['n_train']} training photographs of {report['source']}; on {point['n']} "
          f"validation photographs ({point['positives']} referable): ROC AUC {point['roc_auc']:.3f}, threshold "
          f"{point['threshold']}, sensitivity {point['sensitivity']:.3f}, specificity {point['specificity']:.3f}, "
          f"{point['spared_decoder']:.0%} spared the decoder; written to {target}")
    return 0
