"""Cross-validated figures: one recipe trained on K folds (``train --folds K --fold I``), each run evaluated on its
own validation fold, summarised as the mean and spread of every figure.

A recipe chosen on one split of 11 photographs with masks flatters itself (the shipped real model lost a quarter of
its DR kappa on unseen photographs); the spread over folds says how far one split's figure can be trusted.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.errors import DataError
from core.run.folder import RunDir
from core.run.summary import EvalSummary
from core.vocabulary import LESIONS


def fold_figures(summary: EvalSummary) -> dict[str, float | None]:
    """The figures of one fold's evaluation that the recipes are compared on."""
    lesions = summary.segmentation.lesions
    cls = summary.classification
    figures: dict[str, float | None] = {"OD Dice": lesions["OD"].dice if "OD" in lesions else None}
    figures.update({f"AUPR {code}": lesions[code].aupr if code in lesions else None for code in LESIONS if code != "OD"})
    figures.update({"DR accuracy": cls.dr.accuracy if cls.dr.n else None,
                    "DR kappa": cls.dr.kappa_quadratic if cls.dr.n else None,
                    "DME accuracy": cls.dme.accuracy if cls.dme.n else None,
                    "joint accuracy": cls.joint_accuracy if cls.dr.n else None})
    gate = (summary.referable or {}).get("gate") or {}
    figures["gate ROC AUC (referable)"] = gate.get("roc_auc")
    figures["gate sensitivity"] = gate.get("sensitivity")
    figures["gate specificity"] = gate.get("specificity")
    figures["graded-only spared the decoder"] = (summary.routing or {}).get("share_graded_only_spared")
    return figures


@dataclass
class Row:
    figure: str
    values: list[float]  # the folds that measured it

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def sd(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None


def cross_validate(runs: Sequence[Path | str], split: str = "val") -> list[Row]:
    """Mean and standard deviation over ``runs`` (one per fold) of each figure their ``split`` evaluation gives."""
    per_fold = []
    for run in runs:
        path = RunDir.of(run).summary(split)
        if not path.exists():
            raise DataError(f"run {run} has no evaluation of its {split} split: run python -m core evaluate --run "
                            f"{run} --split {split} --full-res first")
        per_fold.append(fold_figures(EvalSummary.load(path)))
    names = list(dict.fromkeys(name for figures in per_fold for name in figures))
    return [Row(name, [f[name] for f in per_fold if f.get(name) is not None]) for name in names]
