"""Fit the lesion-evidence grader of a run (``core.infer.evidence``): the last step of a multi-task training.

The segmentation expert of the run's chosen weights reads every graded photograph of the training split at the
model's canvas (no augmentation), through ``Predictor.infer``: the maps the grader will later be applied to, the
run's test-time flips included. Two logistic regressions are fitted from that evidence to the DR grade and the DME
risk and saved as ``weights/grader.safetensors``, which the Predictor and evaluation then use for the grades.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from core.data.metadata import Sample, stratified_folds
from core.data.targets import is_referable
from core.errors import DataError
from core.evaluate.metrics import binary_report, classification_report, joint_accuracy
from core.infer.clinical import referable_from_grades
from core.evaluate.runner import run_metadata
from core.fileio import atomic_write_text
from core.infer.predictor import Predictor
from core.infer.evidence import EvidenceGrader, fit_grader, lesion_evidence
from core.run.folder import RunDir
from core.vocabulary import NUM_DME_RISKS, NUM_DR_GRADES


def collect_evidence(predictor: Predictor, samples: list[Sample], progress: bool = True,
                     batch_size: int = 4) -> np.ndarray:
    """(n, F) lesion evidence of ``samples``, in sample order, from the maps ``Predictor.infer`` gives them."""
    rows = []
    for batch in predictor.canvas_batches(samples, batch_size, progress, desc="lesion evidence"):
        seg = predictor.infer(batch["image"], route="both", grades=False).stacked("seg_probs")
        rows += [lesion_evidence(probs) for probs in seg]
    return np.stack(rows) if rows else np.zeros((0, 0))


def fit_run_grader(run_dir: RunDir | Path | str, weights: str = "best", progress: bool = True) -> dict[str, Any]:
    """Fit and save the grader of ``run_dir``; returns what was fitted and, when the run has graded validation
    photographs, the grades it gives them next to the classification heads'."""
    run = RunDir.of(run_dir)
    predictor = Predictor.from_run(run, weights=weights, use_grader=False)
    metadata = run_metadata(run, predictor.config.data, None, progress, all_labels=True)
    train = [s for s in metadata.split("train") if s.dr_grade is not None]
    if len(train) < 10 or not any(s.masks is not None for s in metadata.split("train")):
        raise DataError(f"run {run.path.name} needs graded photographs and photographs with masks in its train split "
                        f"to fit a lesion grader ({len(train)} graded)")
    features = collect_evidence(predictor, train, progress)
    grader = fit_grader(features, np.array([s.dr_grade for s in train]), np.array([s.dme_risk for s in train]))
    path = grader.save(run.grader)
    report: dict[str, Any] = {"file": f"{path.parent.name}/{path.name}", "weights": weights, "n_train": len(train)}
    val = [s for s in metadata.split("val") if s.dr_grade is not None]
    if val:
        report["val"] = _val_report(predictor, grader, val, progress)
    atomic_write_text(run.grader_report, json.dumps(report, indent=1) + "\n")
    return report


def _val_report(predictor: Predictor, grader: EvidenceGrader, val: list[Sample], progress: bool) -> dict[str, Any]:
    dr_probs, dme_probs = grader.predict_proba(collect_evidence(predictor, val, progress))
    dr_true, dme_true = [s.dr_grade for s in val], [s.dme_risk for s in val]
    dr_pred, dme_pred = dr_probs.argmax(1).tolist(), dme_probs.argmax(1).tolist()
    dr = classification_report(dr_true, dr_pred, NUM_DR_GRADES)
    dme = classification_report(dme_true, dme_pred, NUM_DME_RISKS)
    return {"n": len(val), "dr_accuracy": dr["accuracy"], "dr_kappa": dr["kappa_quadratic"],
            "dme_accuracy": dme["accuracy"], "joint_accuracy": joint_accuracy(dr_true, dr_pred, dme_true, dme_pred)}


def _graded_figures(grader: EvidenceGrader, features: np.ndarray, samples: list[Sample]) -> dict[str, float]:
    dr_probs, dme_probs = grader.predict_proba(features)
    dr_true, dme_true = [s.dr_grade for s in samples], [s.dme_risk for s in samples]
    dr_pred, dme_pred = dr_probs.argmax(1).tolist(), dme_probs.argmax(1).tolist()
    dr = classification_report(dr_true, dr_pred, NUM_DR_GRADES)
    referable = [bool(is_referable(s)) for s in samples]
    return {"n": len(samples), "dr_accuracy": dr["accuracy"], "dr_kappa": dr["kappa_quadratic"],
            "dme_accuracy": classification_report(dme_true, dme_pred, NUM_DME_RISKS)["accuracy"],
            "joint_accuracy": joint_accuracy(dr_true, dr_pred, dme_true, dme_pred),
            "referable_auc": binary_report(referable, referable_from_grades(dr_probs, dme_probs))["roc_auc"]}


def spread(values: list[float | None]) -> dict[str, float | int | None]:
    """Mean and sample standard deviation over the folds that could measure a figure (a fold without both
    referable and other photographs has no AUC)."""
    known = [float(v) for v in values if v is not None]
    return {"mean": float(np.mean(known)) if known else None,
            "sd": float(np.std(known, ddof=1)) if len(known) > 1 else None, "folds": len(known)}


def cross_validate_grader(run_dir: RunDir | Path | str, folds: int = 5, seed: int = 0, weights: str = "best",
                          progress: bool = True) -> dict[str, Any]:
    """The lesion grader's figures over ``folds`` folds of the run's graded photographs (train and val splits):
    fitted on the other folds, scored on each, with mean and spread. Cheap (the evidence is read once), so the
    grades get a spread that one validation split of 82 photographs cannot give.

    A graded photograph whose masks trained the segmentation expert (a twin in the train split) reads lesions the
    expert has seen; it stays in every fold's fitting set and is never scored. The segmentation expert itself is
    not refitted per fold: these are the figures of this run's lesion maps read by a grader fitted without the
    photographs it is scored on.
    """
    run = RunDir.of(run_dir)
    predictor = Predictor.from_run(run, weights=weights, use_grader=False)
    metadata = run_metadata(run, predictor.config.data, None, progress, all_labels=True)
    graded = [s for split in ("train", "val") for s in metadata.split(split) if s.dr_grade is not None]
    seen = [s.split == "train" and s.masks is not None for s in graded]
    scored = [s for s, was_seen in zip(graded, seen) if not was_seen]
    if len(scored) < 2 * folds:
        raise DataError(f"run {run.path.name} has {len(scored)} graded photographs its segmentation expert did not "
                        f"train on: too few for {folds} folds")
    fold_of = stratified_folds([s.id for s in scored], [s.dr_grade for s in scored], folds, seed)
    features = collect_evidence(predictor, graded, progress)
    rows = []
    for fold in range(folds):
        test = np.array([not was_seen and fold_of[s.id] == fold for s, was_seen in zip(graded, seen)])
        fit = ~test
        grader = fit_grader(features[fit], np.array([s.dr_grade for s, f in zip(graded, fit) if f]),
                            np.array([s.dme_risk for s, f in zip(graded, fit) if f]))
        rows.append(dict(fold=fold, **_graded_figures(grader, features[test],
                                                      [s for s, t in zip(graded, test) if t])))
    summary = {k: spread([r[k] for r in rows]) for k in rows[0] if k not in ("fold", "n")}
    report = {"run": run.path.name, "weights": weights, "folds": folds, "seed": seed, "n_graded": len(graded),
              "n_scored": len(scored), "n_fit_only": int(sum(seen)), "per_fold": rows, "summary": summary}
    atomic_write_text(run.path / "eval" / "grader-cv.json", json.dumps(report, indent=1) + "\n")
    return report
