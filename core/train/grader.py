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

from core.data.metadata import Sample
from core.errors import DataError
from core.evaluate.metrics import classification_report, joint_accuracy
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
    metadata = run_metadata(run, predictor.config.data, None, progress)
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
