"""A run's evaluation as the Dashboard shows it: read back from ``eval/<split>/`` (the typed summary of
``core.run.summary``, the precision-recall curves and the per-image predictions), and the rows of the
challenge-metric, gate and misrouted tables, the confusion and routing matrices."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import DataError
from core.run.folder import RunDir
from core.run.summary import EvalSummary
from core.vocabulary import DME_NAMES, DR_NAMES, LESION_NAMES, LESIONS


@dataclass
class Evaluation:
    split: str
    summary: EvalSummary
    curves: dict[str, Any]
    predictions: list[dict[str, str]]

    @property
    def resolution(self) -> str:
        return self.summary.resolution

    @property
    def caption(self) -> str:
        s = self.summary
        return (f"{s.split} split, {s.n} images ({s.n_segmentation} segmentation, {s.n_classification} graded), "
                f"{self.resolution}, {s.weights} weights")


def load_evaluation(path: Path | str, split: str) -> Evaluation | None:
    """``eval/<split>/`` of a run, or None when it was not evaluated on that split; a damaged file raises."""
    run = RunDir(Path(path))
    if not run.summary(split).exists():
        return None
    summary = EvalSummary.load(run.summary(split))  # a DataError naming the file when it is damaged or foreign
    try:
        curves_path = run.curves(split)
        curves = json.loads(curves_path.read_text(encoding="utf-8")) if curves_path.exists() else {}
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"evaluation files in {run.eval_dir(split)} are unreadable ({error}); evaluate the run "
                        "again") from None
    from core.evaluate.gallery import read_predictions

    try:
        predictions = read_predictions(path, split)
    except DataError:
        predictions = []
    return Evaluation(split, summary, curves, predictions)


def _fmt(value: Any, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    if isinstance(value, (int, float)):
        return f"{value:.1%}" if percent else f"{value:.3f}"
    return str(value)


def challenge_rows(evaluation: Evaluation) -> list[dict[str, str]]:
    """The IDRiD challenge's own measures (AUPR per lesion; DR and DME accuracy, joint accuracy) and the gate."""
    s = evaluation.summary
    cls, seg, gate = s.classification, s.segmentation, s.gate
    rows = [{"measure": "Gate accuracy", "value": _fmt(gate.accuracy, True),
             "what": f"{gate.misrouted} of {gate.n} images misrouted"}]
    if gate.trained is False:
        rows = [{"measure": "Gate", "value": "not trained", "what": gate.note or ""}]
    for code in LESIONS:
        lesion = seg.lesions.get(code)
        if lesion is not None:
            rows.append({"measure": f"AUPR {code}", "value": _fmt(lesion.aupr),
                         "what": f"sub-challenge 1: pixel precision-recall, {LESION_NAMES[code]}"})
    dr, dme = cls.dr, cls.dme
    if dr.n:
        rows += [
            {"measure": "DR grade accuracy", "value": _fmt(dr.accuracy, True),
             "what": f"sub-challenge 2, {dr.n} graded images"},
            {"measure": "DR quadratic kappa", "value": _fmt(dr.kappa_quadratic), "what": "agreement on grade"},
            {"measure": "DME risk accuracy", "value": _fmt(dme.accuracy, True), "what": "sub-challenge 2"},
            {"measure": "Joint DR + DME accuracy", "value": _fmt(cls.joint_accuracy, True),
             "what": "sub-challenge 3: both right"},
        ]
    routed = s.routing or {}
    if routed.get("share_to_decoder") is not None:
        rows.append({"measure": "Sent to the lesion decoder", "value": _fmt(routed["share_to_decoder"], True),
                     "what": f"{routed['to_decoder']} of {routed['n']} photographs "
                             + ("(the run serves both experts to every photograph: infer.route both)"
                                if routed.get("route") == "both" else
                                f"at the operating point {routed['threshold']:g} on p(segmentation)")})
    if routed.get("share_graded_only_spared") is not None:
        rows.append({"measure": "Graded-only photographs spared the decoder",
                     "value": _fmt(routed["share_graded_only_spared"], True),
                     "what": f"{routed['graded_only_spared']} of {routed['graded_only']}: graded by the "
                             "classification expert alone"})
    for source, what in (("gate", "the gate's p(segmentation)"), ("grades", "the grades: DR >= 2 or DME >= 1")):
        scores = (s.referable or {}).get(source)
        if scores and scores.get("roc_auc") is not None:
            rows.append({"measure": f"Referable DR by the {source}: ROC AUC", "value": _fmt(scores["roc_auc"]),
                         "what": f"{what}; sensitivity {_fmt(scores['sensitivity'], True)}, specificity "
                                 f"{_fmt(scores['specificity'], True)} at {scores['threshold']} "
                                 f"({scores['positives']} of {scores['n']} referable)"})
    return rows


@dataclass
class GateRoc:
    """The gate's ROC on a split, from predictions.csv, with the run's operating point."""

    fpr: list[float]
    tpr: list[float]
    auc: float | None
    point: tuple[float, float] | None
    threshold: float
    positive: str  # what a positive is: "referable" or "segmentation target"


def gate_roc(evaluation: Evaluation) -> GateRoc | None:
    """p(segmentation) against the gate's target (photographs whose target is one route; "either" left out)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    rows = [r for r in evaluation.predictions if r.get("gate_target") in ("segmentation", "classification")]
    truth = np.array([r["gate_target"] == "segmentation" for r in rows], dtype=bool)
    if not len(rows) or truth.all() or not truth.any():
        return None
    scores = np.array([float(r["gate_p_segmentation"]) for r in rows])
    fpr, tpr, _ = roc_curve(truth, scores)
    routing = evaluation.summary.routing or {}
    threshold = float(routing.get("threshold", 0.5))
    said = scores >= threshold
    point = (float((said & ~truth).sum() / (~truth).sum()), float((said & truth).sum() / truth.sum()))
    positive = "referable" if evaluation.summary.gate.target == "referable" else "segmentation target"
    return GateRoc(fpr.tolist(), tpr.tolist(), float(roc_auc_score(truth, scores)), point, threshold, positive)


def routing(evaluation: Evaluation) -> tuple[list[list[int]], list[str], list[str]] | None:
    """The gate's routing matrix: true task (segmentation, classification, both) x route chosen."""
    gate = evaluation.summary.gate
    if not gate.n or not gate.confusion_matrix:
        return None
    return gate.confusion_matrix, list(gate.row_labels or []), list(gate.column_labels or [])


def gate_rows(evaluation: Evaluation) -> list[dict[str, str]]:
    """What the gate decides, in rows: per true task, per DR grade of graded-only photographs, the shortcut check."""
    gate = evaluation.summary.gate
    rows = []
    matrix = dict(zip(gate.row_labels or [], gate.confusion_matrix or [], strict=False))
    for task, value in (gate.accuracy_by_task or {}).items():
        if value is not None:
            what = "either route is right" if task == "both" else f"routed to {task}"
            rows.append({"samples": f"{task} ({sum(matrix.get(task, []))})", "gate accuracy": _fmt(value, True),
                         "about": what})
    for grade, value in (gate.accuracy_by_dr_grade or {}).items():
        if gate.target != "referable":
            about = "routed to classification"
        elif int(grade) >= 2:
            about = "routed to segmentation (more than mild DR)"
        else:
            about = "routed by the referable rule (classification unless its DME risk or lesions say otherwise)"
        rows.append({"samples": f"graded only, DR {DR_NAMES[int(grade)]} ({value['n']})",
                     "gate accuracy": _fmt(value["accuracy"], True), "about": about})
    target = "more than mild DR" if gate.target == "referable" else "its annotation"
    if gate.missed is not None and gate.n:
        rows.append({"samples": f"missed ({gate.missed} of {gate.n})", "gate accuracy": _fmt(gate.missed / gate.n, True),
                     "about": f"needed the lesion map ({target}) and went to classification: the dangerous error"})
        rows.append({"samples": f"wasted ({gate.wasted} of {gate.n})", "gate accuracy": _fmt(gate.wasted / gate.n, True),
                     "about": f"needed a grade only ({target}) and was segmented for nothing"})
    check = gate.shortcut_check
    if check:
        rows.append({"samples": f"photographs with masks, reduced and re-encoded ({check['n']})",
                     "gate accuracy": "passed" if check["passed"] else "FAILED",
                     "about": f"shortcut check: {check['route_flips']} route flips, mean |change of p(segmentation)| "
                              f"{_fmt(check['mean_abs_shift_p_segmentation'])} ({check['degradation']})"})
    return rows


def lesion_results(evaluation: Evaluation) -> dict[str, dict[str, Any]]:
    """Lesion code -> its scores as a dict (``dice``, ``iou``, ``aupr``...), as ``core.figures.lesion_bars`` takes."""
    return {code: dataclasses.asdict(scores) for code, scores in evaluation.summary.segmentation.lesions.items()}


def misrouted_rows(evaluation: Evaluation) -> list[dict[str, Any]]:
    return [{"sample": r.get("id"), "true task": r.get("task"), "sent to": r.get("route"),
             "gate confidence": r.get("confidence")}
            for r in evaluation.summary.gate.misrouted_samples]


def confusion(evaluation: Evaluation, head: str) -> tuple[list[list[int]], list[str]] | None:
    classification = evaluation.summary.classification
    report = {"dr": classification.dr, "dme": classification.dme}.get(head)
    if report is None or not report.n:
        return None
    names = list(DR_NAMES if head == "dr" else DME_NAMES)
    return report.confusion_matrix, names
