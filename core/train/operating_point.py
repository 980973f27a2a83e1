"""The gate's operating point (``infer.gate_threshold``), chosen on the validation split for sensitivity.

A referable gate (``model.gate_target: referable``) decides whether a photograph gets the lesion map. Missing a
referable eye is the dangerous error and a wasted lesion map only costs time, so the threshold on p(segmentation) is
set where the validation split's referable photographs are found at the wanted sensitivity
(``train.gate_sensitivity``, 0.9 by default), not at 0.5, with the margin ``threshold_for_sensitivity`` leaves. The
choice is written into the run's config.yaml, which the Predictor, ``evaluate``, ``predict`` and the app read, and
explained in ``weights/operating_point.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from core.data.targets import is_referable
from core.errors import DataError
from core.evaluate.metrics import binary_report, threshold_for_sensitivity
from core.evaluate.runner import run_metadata
from core.fileio import atomic_write_text
from core.infer.predictor import Predictor
from core.run.folder import RunDir


def gate_scores(predictor: Predictor, samples, progress: bool = True) -> np.ndarray:
    """p(segmentation) of each sample's canvas, the gate alone (no expert runs)."""
    scores = []
    for batch in predictor.canvas_batches(samples, 4, progress, desc="gate"):
        scores += predictor.gate_batch(batch["image"])[:, 0].tolist()
    return np.array(scores)


def choose_gate_threshold(run_dir: RunDir | Path | str, split: str = "val", sensitivity: float = 0.9,
                          weights: str = "best", write: bool = True, progress: bool = True) -> dict[str, Any]:
    """Choose ``infer.gate_threshold`` on ``split`` and, with ``write``, save it in the run's config.yaml."""
    run = RunDir.of(run_dir)
    predictor = Predictor.from_run(run, weights=weights, use_grader=False)
    if predictor.config.model.gate_target != "referable":
        raise DataError(f"run {run.name} learned the gate target {predictor.config.model.gate_target!r}: a threshold "
                        f"for sensitivity needs model.gate_target: referable")
    metadata = run_metadata(run, predictor.config.data, None, progress)
    known = [(s, r) for s in metadata.split(split) if (r := is_referable(s)) is not None]
    truth = [r for _, r in known]
    if not any(truth) or all(truth):
        raise DataError(f"the {split} split of run {run.name} needs referable and non-referable photographs to choose "
                        f"a threshold ({sum(truth)} of {len(truth)} referable)")
    scores = gate_scores(predictor, [s for s, _ in known], progress)
    # four decimals, rounded down: rounding up could leave out the positive the threshold was set at
    threshold = math.floor(threshold_for_sensitivity(truth, scores, sensitivity) * 1e4) / 1e4
    report = {"split": split, "weights": weights, "wanted_sensitivity": sensitivity, "threshold": threshold,
              **{k: v for k, v in binary_report(truth, scores, threshold).items() if k != "threshold"},
              "spared_decoder": float(np.mean(scores < threshold))}
    if write:
        values = yaml.safe_load(run.config.read_text(encoding="utf-8")) or {}
        values.setdefault("infer", {})["gate_threshold"] = threshold
        atomic_write_text(run.config, yaml.safe_dump(values, sort_keys=False))
        atomic_write_text(run.operating_point, json.dumps(report, indent=1) + "\n")
        if run.gate_report.exists():  # fit-gate's record quotes the operating point: keep the two in agreement
            fitted = json.loads(run.gate_report.read_text(encoding="utf-8"))
            atomic_write_text(run.gate_report, json.dumps(dict(fitted, operating_point=report), indent=1) + "\n")
    return report
