"""``python -m core evaluate``: score a run on a split and save the results beside it."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.run.folder import RunDir
from core.run.summary import EvalSummary


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="score a run on a split and save eval/<split>/ in the run folder",
        description="Score a run: classification (accuracy, macro P/R/F1, confusion, kappa, joint accuracy), "
                    "segmentation (Dice and IoU pooled and per image, pixel AUPR), gate (accuracy, routing "
                    "confusion, misrouted samples). Writes summary.json, predictions.csv, masks/, curves.json.")
    parser.add_argument("--run", type=Path, required=True, help="run folder, e.g. checkpoints/demo")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"], help="default: %(default)s")
    parser.add_argument("--data", type=Path, help="a metadata JSON to evaluate on (default: the run's own data)")
    parser.add_argument("--full-res", action="store_true",
                        help="score the masks at the original image size (predictions upsampled)")
    parser.add_argument("--weights", default="best", help="best or last (default: %(default)s)")
    parser.add_argument("--gate-audit", action="store_true",
                        help="also ask the gate again on each photograph with masks reduced 4x and re-encoded "
                             "like IDRiD's grading copies: does it decide on content or on the file's history?")
    parser.set_defaults(func=run)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def format_summary(summary: EvalSummary) -> str:
    lines = [f"{summary.run} on {summary.split}: {summary.n} samples "
             f"({summary.n_segmentation} segmentation, {summary.n_classification} graded), {summary.seconds} s"]
    gate = summary.gate
    if gate.accuracy is not None:
        by_task = ", ".join(f"{k} {v:.3f}" for k, v in (gate.accuracy_by_task or {}).items() if v is not None)
        lines.append(f"gate accuracy {gate.accuracy:.3f} ({by_task}), misrouted {gate.misrouted}"
                     + (f" (missed {gate.missed}, wasted {gate.wasted})" if gate.missed is not None else "")
                     + (f"; target: {gate.target}" if gate.target else ""))
        matrix = "; ".join(f"{row} -> " + "/".join(map(str, counts))
                           for row, counts in zip(gate.row_labels or [], gate.confusion_matrix or [], strict=True))
        lines.append(f"  routing (true -> segmentation/classification): {matrix}")
        if gate.accuracy_by_dr_grade:
            lines.append("  gate on graded-only photographs by DR grade: " + ", ".join(
                f"{g}: {v['accuracy']:.2f} of {v['n']}" for g, v in gate.accuracy_by_dr_grade.items()))
    check = gate.shortcut_check
    if check:
        lines.append(f"shortcut check ({check['degradation']}) on {check['n']} photographs with masks: "
                     f"{check['route_flips']} route flips, p(segmentation) moves by "
                     f"{check['mean_abs_shift_p_segmentation']} on average: "
                     + ("passed" if check["passed"] else "FAILED") + f" ({check['rule']})")
    cls = summary.classification
    if cls.dr.accuracy is not None:
        kappa = cls.dr.kappa_quadratic
        lines.append(f"DR accuracy {cls.dr.accuracy:.3f}, macro F1 {cls.dr.f1_macro:.3f}, "
                     f"kappa {kappa if kappa is None else round(kappa, 3)}; DME accuracy {cls.dme.accuracy:.3f}; "
                     f"joint {cls.joint_accuracy:.3f}")
    if summary.referable:
        for source in ("gate", "grades"):
            scores = summary.referable.get(source)
            if scores:
                lines.append(f"referable DR by the {source}: ROC AUC {_num(scores['roc_auc'])}, sensitivity "
                             f"{_num(scores['sensitivity'])}, specificity {_num(scores['specificity'])} at "
                             f"{scores['threshold']} ({scores['positives']} of {scores['n']} referable)")
    lesions = summary.segmentation.lesions
    if lesions:
        lines.append(f"segmentation at {summary.segmentation.resolution}:")
        for code, scores in lesions.items():
            parts = [f"{k} {v:.3f}" for k, v in vars(scores).items() if isinstance(v, float)]
            lines.append(f"  {code}: " + ", ".join(parts))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from core.evaluate.runner import evaluate_run

    summary = evaluate_run(args.run, args.split, args.data, args.full_res, args.weights,
                           gate_audit=args.gate_audit)
    print(format_summary(summary))
    print(f"wrote {RunDir.of(args.run).eval_dir(args.split)}")
    return 0
