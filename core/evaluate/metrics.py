"""Evaluation metrics as pure functions and small accumulators: numpy in, JSON-serialisable dicts and floats out.

Why these choices:

* Classification metrics delegate to scikit-learn so that numbers match what reviewers compute themselves;
  labels are always ``range(num_classes)`` so a grade missing from a small split still has its row and column.
  Truth labels equal to the ignore index (-100, the DR / DME of a segmentation sample) are dropped first.
* Segmentation is accumulated one image at a time, because a full-resolution IDRiD image is 12 M pixels per
  lesion and a test split does not fit in memory as raw probabilities. The pixel precision-recall curve is built
  from per-lesion histograms of the probabilities of positive and of negative pixels (``bins`` equal-width bins
  on [0, 1]); the area under it is the average precision over the bin edges as thresholds, which is what
  scikit-learn's ``average_precision_score`` computes over every distinct score. With 1000 bins the binned value
  is about 5e-4 below the exact one on realistic data (200k pixels, 1% positives: 0.68606 vs 0.68654; see
  ``tests/test_metrics.py``), because ties within a bin lose the steps inside it.
* Dice and IoU are reported both pooled over pixels (large lesions dominate, the IDRiD-challenge style) and as a
  mean over images (every image counts once). An image where a lesion is absent from both truth and prediction
  says nothing about that lesion and is left out of its mean; the count of images used is reported beside it.
  ``dice_iou`` / ``dice_iou_counts`` hold that rule, for the accumulator and the runner's per-image rows alike.
* Undefined values (no samples, a kappa of a single class, no positive pixel) are ``None``, never NaN, so the
  results survive ``json.dumps`` and the app can show "n/a".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    cohen_kappa_score,
    confusion_matrix,
    precision_recall_fscore_support,
)

from core.vocabulary import IGNORE_INDEX, LESIONS, TASKS

ROUTING_ROWS: tuple[str, ...] = (*TASKS, "both")  # true task of a sample: [1,0], [0,1], [1,1]
PR_CURVE_POINTS = 200


def _finite_or_none(value: Any) -> float | None:
    """A plain float, or None where the metric is undefined (NaN, inf, None)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _labelled(y_true: Sequence[int], *others: Sequence[int]) -> tuple[np.ndarray, ...]:
    """Integer arrays of equal length, with the samples whose truth is the ignore index dropped."""
    arrays = [np.asarray(a, dtype=np.int64).reshape(-1) for a in (y_true, *others)]
    if any(len(a) != len(arrays[0]) for a in arrays):
        raise ValueError(f"length mismatch: {[len(a) for a in arrays]}")
    keep = arrays[0] != IGNORE_INDEX
    return tuple(a[keep] for a in arrays)


# --------------------------------------------------------------------------------------------------------------
# Classification (DR grade, DME risk)
# --------------------------------------------------------------------------------------------------------------

def classification_report(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> dict[str, Any]:
    """Accuracy, macro and per-class precision / recall / F1, confusion matrix, support and quadratic kappa.

    Rows of ``confusion_matrix`` are the truth, columns the prediction, both over ``range(num_classes)``.
    Samples whose truth is -100 are ignored; ``n`` is the number of samples that counted. With no sample left,
    every metric is None and the matrix and support are zeros.
    """
    labels = list(range(int(num_classes)))
    truth, pred = _labelled(y_true, y_pred)
    n = int(len(truth))
    report: dict[str, Any] = {
        "n": n, "num_classes": len(labels), "labels": labels,
        "accuracy": None, "precision_macro": None, "recall_macro": None, "f1_macro": None,
        "precision_per_class": None, "recall_per_class": None, "f1_per_class": None,
        "confusion_matrix": [[0] * len(labels) for _ in labels], "support": [0] * len(labels),
        "kappa_quadratic": None,
    }
    if n == 0:
        return report
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, pred, labels=labels, average=None, zero_division=0)
    report.update(
        accuracy=float(np.mean(truth == pred)),
        precision_macro=float(np.mean(precision)), recall_macro=float(np.mean(recall)), f1_macro=float(np.mean(f1)),
        precision_per_class=[float(v) for v in precision], recall_per_class=[float(v) for v in recall],
        f1_per_class=[float(v) for v in f1],
        confusion_matrix=confusion_matrix(truth, pred, labels=labels).astype(int).tolist(),
        support=[int(v) for v in support],
        kappa_quadratic=_quadratic_kappa(truth, pred, labels),
    )
    return report


def _quadratic_kappa(truth: np.ndarray, pred: np.ndarray, labels: list[int]) -> float | None:
    """Quadratic-weighted Cohen's kappa, None where it is undefined (e.g. truth and prediction one same class)."""
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")
        try:
            return _finite_or_none(cohen_kappa_score(truth, pred, labels=labels, weights="quadratic"))
        except (ValueError, ZeroDivisionError):
            return None


def joint_accuracy(dr_true: Sequence[int], dr_pred: Sequence[int],
                   dme_true: Sequence[int], dme_pred: Sequence[int]) -> float | None:
    """IDRiD sub-challenge 3 joint accuracy: the share of images whose DR grade and DME risk are both right.

    Images missing either truth (-100) are left out; None when none is left.
    """
    arrays = (dr_true, dr_pred, dme_true, dme_pred)
    dr_t, dr_p, dme_t, dme_p = (np.asarray(a, dtype=np.int64).reshape(-1) for a in arrays)
    if not len(dr_t) == len(dr_p) == len(dme_t) == len(dme_p):
        raise ValueError(f"length mismatch: {[len(dr_t), len(dr_p), len(dme_t), len(dme_p)]}")
    keep = (dr_t != IGNORE_INDEX) & (dme_t != IGNORE_INDEX)
    if not keep.any():
        return None
    return float(np.mean((dr_t[keep] == dr_p[keep]) & (dme_t[keep] == dme_p[keep])))


# --------------------------------------------------------------------------------------------------------------
# Segmentation
# --------------------------------------------------------------------------------------------------------------

def dice_iou_counts(intersection: int, predicted: int, truth: int) -> tuple[float | None, float | None]:
    """Dice and IoU from pixel counts (overlap, predicted positives, true positives).

    Both are None when the lesion is absent from both truth and prediction: such pixels say nothing about the
    lesion, and a 1 (or a 0) would move every mean it enters. A lesion predicted but absent from the truth, or
    present but missed, scores 0.
    """
    total = predicted + truth
    if total <= 0:
        return None, None
    return 2.0 * intersection / total, intersection / (total - intersection)


def dice_iou(predicted: np.ndarray, truth: np.ndarray) -> tuple[float | None, float | None]:
    """Dice and IoU of two boolean masks of one lesion; None, None when it is absent from both (``dice_iou_counts``)."""
    predicted = np.asarray(predicted, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    return dice_iou_counts(int(np.count_nonzero(predicted & truth)), int(np.count_nonzero(predicted)),
                           int(np.count_nonzero(truth)))


class SegmentationAccumulator:
    """Per-lesion Dice / IoU (pooled and per image) and binned pixel AUPR, fed one image at a time.

    Memory is two ``bins``-long histograms and a few counters per lesion, plus one Dice and one IoU per image
    and lesion; it does not grow with image size and barely with the number of images.
    A pixel is predicted positive when its probability is ``>= threshold``; pixels outside ``valid`` (e.g. the
    black border outside the field of view) are left out of every metric.
    """

    def __init__(self, lesions: Sequence[str] = LESIONS, bins: int = 1000, threshold: float = 0.5) -> None:
        if bins < 1:
            raise ValueError("bins must be >= 1")
        self.lesions = tuple(lesions)
        self.bins = int(bins)
        self.threshold = float(threshold)
        k = len(self.lesions)
        self.hist_pos = np.zeros((k, self.bins), dtype=np.int64)
        self.hist_neg = np.zeros((k, self.bins), dtype=np.int64)
        self.intersection = np.zeros(k, dtype=np.int64)
        self.predicted = np.zeros(k, dtype=np.int64)
        self.positive = np.zeros(k, dtype=np.int64)
        self.image_dice: list[list[float]] = [[] for _ in self.lesions]
        self.image_iou: list[list[float]] = [[] for _ in self.lesions]
        self.n_images = 0

    def add(self, probs: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add one image: ``probs`` (L, H, W) in [0, 1], ``truth`` (L, H, W) bool or 0/1, ``valid`` (H, W) bool."""
        probs = np.asarray(probs)
        truth = np.asarray(truth)
        if probs.ndim != 3 or probs.shape[0] != len(self.lesions) or truth.shape != probs.shape:
            raise ValueError(f"expected probs and truth of shape ({len(self.lesions)}, H, W), "
                             f"got {probs.shape} and {truth.shape}")
        if valid is not None:
            valid = np.asarray(valid, dtype=bool)
            if valid.shape != probs.shape[1:]:
                raise ValueError(f"valid has shape {valid.shape}, expected {probs.shape[1:]}")
        for index in range(len(self.lesions)):
            p, t = probs[index], truth[index].astype(bool, copy=False)
            if valid is not None:
                p, t = p[valid], t[valid]
            self._add_lesion(index, np.nan_to_num(p.reshape(-1).astype(np.float32, copy=False), nan=0.0),
                             t.reshape(-1))
        self.n_images += 1

    def _add_lesion(self, index: int, p: np.ndarray, t: np.ndarray) -> None:
        bin_index = np.clip((p * self.bins).astype(np.int64), 0, self.bins - 1)
        everything = np.bincount(bin_index, minlength=self.bins)
        positives = np.bincount(bin_index[t], minlength=self.bins)
        self.hist_pos[index] += positives
        self.hist_neg[index] += everything - positives

        predicted = p >= self.threshold
        inter = int(np.count_nonzero(predicted & t))
        pred_sum, truth_sum = int(np.count_nonzero(predicted)), int(np.count_nonzero(t))
        self.intersection[index] += inter
        self.predicted[index] += pred_sum
        self.positive[index] += truth_sum
        dice, iou = dice_iou_counts(inter, pred_sum, truth_sum)
        if dice is not None:  # an image where the lesion is nowhere says nothing about it
            self.image_dice[index].append(dice)
            self.image_iou[index].append(iou)

    def merge(self, other: SegmentationAccumulator) -> SegmentationAccumulator:
        """Fold in another accumulator with the same settings (e.g. from another worker or rank)."""
        if (other.lesions, other.bins, other.threshold) != (self.lesions, self.bins, self.threshold):
            raise ValueError("cannot merge accumulators with different lesions, bins or threshold")
        for name in ("hist_pos", "hist_neg", "intersection", "predicted", "positive"):
            getattr(self, name).__iadd__(getattr(other, name))
        for mine, theirs in ((self.image_dice, other.image_dice), (self.image_iou, other.image_iou)):
            for a, b in zip(mine, theirs):
                a.extend(b)
        self.n_images += other.n_images
        return self

    def summary(self, curve_points: int = PR_CURVE_POINTS) -> dict[str, dict[str, Any]]:
        """Per lesion: pooled and per-image Dice / IoU, AUPR and a down-sampled PR curve (recall ascending)."""
        out: dict[str, dict[str, Any]] = {}
        for index, lesion in enumerate(self.lesions):
            inter, pred_sum, truth_sum = (int(a[index]) for a in (self.intersection, self.predicted, self.positive))
            dice_list, iou_list = self.image_dice[index], self.image_iou[index]
            aupr, curve = binned_precision_recall(self.hist_pos[index], self.hist_neg[index], curve_points)
            dice, iou = dice_iou_counts(inter, pred_sum, truth_sum)  # pooled over every pixel of every image
            out[lesion] = {
                "dice": dice,
                "iou": iou,
                "dice_mean": float(np.mean(dice_list)) if dice_list else None,
                "iou_mean": float(np.mean(iou_list)) if iou_list else None,
                "images": len(dice_list),
                "positive_pixels": truth_sum,
                "pixels": int(self.hist_pos[index].sum() + self.hist_neg[index].sum()),
                "aupr": aupr,
                "pr_curve": curve,
            }
        return out


def binned_precision_recall(hist_pos: np.ndarray, hist_neg: np.ndarray,
                            curve_points: int = PR_CURVE_POINTS) -> tuple[float | None, dict[str, list[float]]]:
    """Average precision and a PR curve from histograms of positive and negative scores over [0, 1].

    Thresholds are the lower bin edges, swept from high to low; only edges where the counts change are points
    (as scikit-learn keeps only distinct scores). AP = sum_k (R_k - R_{k-1}) * P_k with R_0 = 0. The curve is
    down-sampled to at most ``curve_points`` points, keeping both ends. AP is None without a positive pixel.
    """
    hist_pos = np.asarray(hist_pos, dtype=np.int64)
    hist_neg = np.asarray(hist_neg, dtype=np.int64)
    bins = len(hist_pos)
    total_pos = int(hist_pos.sum())
    empty: dict[str, list[float]] = {"precision": [], "recall": [], "threshold": []}
    if total_pos == 0:
        return None, empty
    pos, neg = hist_pos[::-1], hist_neg[::-1]
    keep = (pos + neg) > 0
    tp = np.cumsum(pos)[keep].astype(np.float64)
    fp = np.cumsum(neg)[keep].astype(np.float64)
    thresholds = (bins - 1 - np.flatnonzero(keep)) / bins
    precision = tp / (tp + fp)
    recall = tp / total_pos
    aupr = float(np.sum(np.diff(recall, prepend=0.0) * precision))
    if len(recall) > curve_points:
        take = np.unique(np.round(np.linspace(0, len(recall) - 1, max(curve_points, 2))).astype(int))
        precision, recall, thresholds = precision[take], recall[take], thresholds[take]
    curve = {"precision": precision.tolist(), "recall": recall.tolist(), "threshold": thresholds.tolist()}
    return aupr, curve


def exact_average_precision(probs: np.ndarray, truth: np.ndarray) -> float | None:
    """scikit-learn's exact pixel average precision (every distinct score a threshold); None without positives.

    Needs all pixels in memory, so it is the reference for tests, not for a whole split.
    """
    truth = np.asarray(truth, dtype=bool).reshape(-1)
    if not truth.any():
        return None
    return float(average_precision_score(truth, np.asarray(probs, dtype=np.float64).reshape(-1)))


# --------------------------------------------------------------------------------------------------------------
# Gate
# --------------------------------------------------------------------------------------------------------------

def routing_report(true_task_vectors: np.ndarray, gate_probs: np.ndarray,
                   threshold: float | None = None) -> dict[str, Any]:
    """How the gate routed each true task: accuracy, per-task accuracy and a 3 x 2 routing matrix.

    A sample is routed to the argmax of ``gate_probs`` (logits work the same), or, given a ``threshold`` on
    probabilities, to segmentation where p(segmentation) >= it (the run's operating point); it is correct if that task is one
    of its own, so a [1, 1] sample is always correct. Rows of ``confusion_matrix`` follow ``row_labels``
    (segmentation, classification, both), columns ``column_labels`` (segmentation, classification).
    """
    vectors = np.asarray(true_task_vectors).reshape(-1, len(TASKS)).astype(np.int64) > 0
    probs = np.asarray(gate_probs, dtype=np.float64).reshape(-1, len(TASKS))
    if len(vectors) != len(probs):
        raise ValueError(f"length mismatch: {len(vectors)} task vectors, {len(probs)} gate outputs")
    if len(vectors) and not vectors.any(axis=1).all():
        raise ValueError("every task vector needs at least one task ([1,0], [0,1] or [1,1])")
    routed = probs.argmax(axis=1) if threshold is None else np.where(probs[:, 0] >= threshold, 0, 1)
    row = np.where(vectors.all(axis=1), 2, np.where(vectors[:, 0], 0, 1))
    correct = vectors[np.arange(len(vectors)), routed] if len(vectors) else np.zeros(0, dtype=bool)
    matrix = np.zeros((len(ROUTING_ROWS), len(TASKS)), dtype=np.int64)
    np.add.at(matrix, (row, routed), 1)
    return {
        "n": int(len(vectors)),
        "accuracy": float(correct.mean()) if len(vectors) else None,
        "misrouted": int((~correct).sum()),
        "accuracy_by_task": {name: (float(correct[row == i].mean()) if (row == i).any() else None)
                             for i, name in enumerate(ROUTING_ROWS)},
        "confusion_matrix": matrix.tolist(),
        "row_labels": list(ROUTING_ROWS),
        "column_labels": list(TASKS),
    }


def accuracy_by_group(correct: Sequence[bool], groups: Sequence[Hashable]) -> dict[str, dict[str, Any]]:
    """``{group: {"n", "accuracy"}}`` in sorted group order: e.g. the gate's accuracy per DR grade, which shows
    whether severe grading photographs are sent to segmentation for looking lesion-rich."""
    out: dict[str, dict[str, Any]] = {}
    for group in sorted(set(groups), key=str):
        hits = [bool(c) for c, g in zip(correct, groups, strict=True) if g == group]
        out[str(group)] = {"n": len(hits), "accuracy": sum(hits) / len(hits)}
    return out


# --------------------------------------------------------------------------------------------------------------
# Referable DR (more than mild: core.data.targets)
# --------------------------------------------------------------------------------------------------------------

def binary_report(truth: Sequence[bool], scores: Sequence[float], threshold: float = 0.5) -> dict[str, Any]:
    """Sensitivity and specificity at ``threshold`` and ROC AUC (scikit-learn) of scores for a yes/no truth;
    None where a class is absent (AUC, and the rate of the missing class, are undefined then)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(truth, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    said = s >= threshold
    positives, negatives = int(y.sum()), int((~y).sum())
    return {
        "n": int(len(y)), "positives": positives, "threshold": threshold,
        "sensitivity": float((said & y).sum() / positives) if positives else None,
        "specificity": float((~said & ~y).sum() / negatives) if negatives else None,
        "roc_auc": float(roc_auc_score(y, s)) if positives and negatives else None,
    }


def threshold_for_sensitivity(truth: Sequence[bool], scores: Sequence[float], sensitivity: float) -> float:
    """A threshold at which ``scores >= threshold`` finds at least ``sensitivity`` of the positives: the operating
    point a screening gate is set at (a missed referable eye costs more than a wasted lesion map).

    It lies halfway between the lowest positive score that must be kept and the next lower score of any sample, so
    every sample of ``truth`` falls on the same side as at the highest such threshold (the same sensitivity and
    specificity there), and an unseen positive scoring just below that one is not missed for want of margin: set on
    the positive's own score, the synthetic demo's threshold (0.7826) missed four referable test images between 0.64
    and 0.78 whose nearest validation negative scored 0.49."""
    y = np.asarray(truth, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    positives = np.sort(s[y])[::-1]
    if not len(positives):
        raise ValueError("no positive sample: a threshold for sensitivity needs at least one")
    if not 0 < sensitivity <= 1:
        raise ValueError(f"sensitivity must lie in (0, 1], not {sensitivity}")
    needed = int(np.ceil(sensitivity * len(positives) - 1e-9))
    kept = float(positives[max(needed, 1) - 1])
    below = s[s < kept]
    return (kept + float(below.max())) / 2 if len(below) else kept
