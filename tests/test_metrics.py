"""Metrics: hand-computed values on literal arrays, sklearn / torchmetrics cross-checks, bounded memory."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score

from core.evaluate.metrics import (
    SegmentationAccumulator,
    binned_precision_recall,
    classification_report,
    exact_average_precision,
    joint_accuracy,
    routing_report,
)

LESIONS = ("MA", "HE", "EX", "SE", "OD")


# ---------------------------------------------------------------------------------------------- classification

def test_classification_report_hand_computed() -> None:
    y_true = [0, 0, 1, 1, 2, -100]
    y_pred = [0, 1, 1, 1, 0, 2]  # the -100 sample is ignored
    r = classification_report(y_true, y_pred, num_classes=4)
    assert r["n"] == 5
    assert r["accuracy"] == pytest.approx(3 / 5)
    assert r["confusion_matrix"] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert r["support"] == [2, 2, 1, 0]
    # precision: class0 1/2, class1 2/3, class2 0, class3 0 (zero_division=0) -> macro over 4 classes
    assert r["precision_macro"] == pytest.approx((1 / 2 + 2 / 3) / 4)
    assert r["recall_macro"] == pytest.approx((1 / 2 + 1) / 4)
    assert r["f1_macro"] == pytest.approx(f1_score([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], labels=range(4),
                                                   average="macro", zero_division=0))
    assert -1 <= r["kappa_quadratic"] <= 1
    json.dumps(r)


def test_classification_report_empty_and_degenerate() -> None:
    empty = classification_report([], [], num_classes=3)
    assert empty["n"] == 0 and empty["accuracy"] is None and empty["kappa_quadratic"] is None
    assert empty["confusion_matrix"] == [[0] * 3] * 3
    only_ignored = classification_report([-100, -100], [1, 2], num_classes=3)
    assert only_ignored["n"] == 0 and only_ignored["f1_macro"] is None
    single = classification_report([2, 2, 2], [2, 2, 2], num_classes=5)  # kappa undefined: one class everywhere
    assert single["accuracy"] == 1.0 and single["kappa_quadratic"] is None
    json.dumps(single, allow_nan=False)
    with pytest.raises(ValueError):
        classification_report([0, 1], [0], num_classes=2)


def test_joint_accuracy() -> None:
    assert joint_accuracy([0, 1, 2, 3], [0, 1, 0, 3], [0, 1, 2, 0], [0, 2, 2, 0]) == pytest.approx(2 / 4)
    assert joint_accuracy([-100, 1], [0, 1], [0, 1], [0, 1]) == 1.0
    assert joint_accuracy([], [], [], []) is None


# ---------------------------------------------------------------------------------------------- segmentation

def _one_lesion(probs: list[list[float]], truth: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(probs, dtype=np.float32)[None], np.asarray(truth, dtype=bool)[None]


def test_dice_iou_hand_computed() -> None:
    # prediction (>= 0.5) covers 3 pixels, truth 2, overlap 1: Dice = 2*1/(3+2) = 0.4, IoU = 1/(3+2-1) = 0.25
    probs, truth = _one_lesion([[0.9, 0.6, 0.1], [0.5, 0.2, 0.0]], [[1, 0, 0], [0, 1, 0]])
    acc = SegmentationAccumulator(lesions=("EX",))
    acc.add(probs, truth)
    s = acc.summary()["EX"]
    assert s["dice"] == pytest.approx(0.4) and s["iou"] == pytest.approx(0.25)
    assert s["dice_mean"] == pytest.approx(0.4) and s["images"] == 1
    assert s["positive_pixels"] == 2 and s["pixels"] == 6


def test_valid_mask_excludes_pixels() -> None:
    probs, truth = _one_lesion([[0.9, 0.9], [0.9, 0.0]], [[1, 0], [0, 0]])
    acc = SegmentationAccumulator(lesions=("OD",))
    acc.add(probs, truth, valid=np.array([[True, False], [False, True]]))  # the two false positives are outside
    s = acc.summary()["OD"]
    assert s["dice"] == 1.0 and s["iou"] == 1.0 and s["pixels"] == 2 and s["aupr"] == pytest.approx(1.0)


def test_pooled_versus_per_image() -> None:
    acc = SegmentationAccumulator(lesions=("HE",))
    # image 1: a large lesion found exactly (8 pixels) -> Dice 1
    big_p, big_t = np.zeros((1, 4, 4), np.float32), np.zeros((1, 4, 4), bool)
    big_p[0, :2], big_t[0, :2] = 1.0, True
    acc.add(big_p, big_t)
    # image 2: a 1-pixel lesion missed, with 1 false positive -> Dice 0
    small_p, small_t = np.zeros((1, 4, 4), np.float32), np.zeros((1, 4, 4), bool)
    small_t[0, 3, 3], small_p[0, 3, 0] = True, 1.0
    acc.add(small_p, small_t)
    # image 3: lesion absent from truth and prediction -> excluded from the mean
    acc.add(np.zeros((1, 4, 4), np.float32), np.zeros((1, 4, 4), bool))
    s = acc.summary()["HE"]
    assert s["dice"] == pytest.approx(2 * 8 / (9 + 9))  # pooled: 16/18, the big image dominates
    assert s["iou"] == pytest.approx(8 / 10)
    assert s["dice_mean"] == pytest.approx(0.5) and s["iou_mean"] == pytest.approx(0.5)
    assert s["images"] == 2 and acc.n_images == 3


def test_absent_lesion_is_none_and_json() -> None:
    rng = np.random.default_rng(1)
    acc = SegmentationAccumulator()
    truth = np.zeros((5, 8, 8), bool)
    truth[4, 2:5, 2:5] = True
    acc.add(rng.random((5, 8, 8)).astype(np.float32) * 0.4, truth)
    s = acc.summary()
    assert list(s) == list(LESIONS)
    assert s["MA"]["aupr"] is None and s["MA"]["pr_curve"]["recall"] == []
    assert s["MA"]["dice"] is None and s["MA"]["dice_mean"] is None and s["MA"]["images"] == 0
    assert s["OD"]["dice"] == 0.0 and s["OD"]["aupr"] is not None
    json.dumps(s, allow_nan=False)


def _realistic(n: int, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores like a sigmoid output: negatives mostly near 0, positives spread high."""
    rng = np.random.default_rng(seed)
    truth = rng.random(n) < rate
    logits = rng.normal(-4.0, 1.5, n)
    logits[truth] = rng.normal(0.5, 1.5, int(truth.sum()))
    return (1 / (1 + np.exp(-logits))).astype(np.float32), truth


def test_binned_aupr_matches_sklearn() -> None:
    """1000-bin AUPR vs exact sklearn AP, 200k pixels, 1% positives: observed 0.68606 vs 0.68654 exact,
    i.e. binned lower by 4.8e-4 (seed 0); torchmetrics' exact AP on 50k-pixel lesions gives 4.4e-4 to 6.9e-4."""
    probs, truth = _realistic(200_000, 0.01, seed=0)
    acc = SegmentationAccumulator(lesions=("MA",), bins=1000)
    for chunk in range(4):  # four "images" of 50k pixels: histograms add up across images
        sl = slice(chunk * 50_000, (chunk + 1) * 50_000)
        acc.add(probs[sl].reshape(1, 200, 250), truth[sl].reshape(1, 200, 250))
    s = acc.summary()["MA"]
    exact = average_precision_score(truth, probs)
    assert exact_average_precision(probs, truth) == pytest.approx(exact)
    assert abs(s["aupr"] - exact) < 0.005
    curve = s["pr_curve"]
    assert 2 <= len(curve["recall"]) <= 200 == len(curve["precision"]) == len(curve["threshold"])
    assert curve["recall"][-1] == pytest.approx(1.0)
    assert np.all(np.diff(curve["recall"]) >= 0) and np.all(np.diff(curve["threshold"]) <= 0)


def test_binned_precision_recall_hand_computed() -> None:
    # 4 bins; positives in bins 3 and 1, negatives in bins 2 and 0.
    # Sweep: bin3 -> P=1, R=1/2; bin2 -> P=1/2, R=1/2; bin1 -> P=2/3, R=1; bin0 -> P=1/2, R=1.
    aupr, curve = binned_precision_recall(np.array([0, 1, 0, 1]), np.array([1, 0, 1, 0]))
    assert aupr == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert curve["threshold"] == [0.75, 0.5, 0.25, 0.0]
    assert curve["precision"] == pytest.approx([1, 0.5, 2 / 3, 0.5])
    assert binned_precision_recall(np.zeros(4), np.ones(4))[0] is None


def test_aupr_is_step_precision_not_its_envelope() -> None:
    """Three pixels scored 0.9 (negative), 0.6 and 0.3 (positive). Ranked: P = 0, 1/2, 2/3 at R = 0, 1/2, 1, so
    AP = 1/2 * 1/2 + 1/2 * 2/3 = 7/12. The interpolated (envelope) precision would give 1/2 * 2/3 + 1/2 * 2/3 = 2/3,
    the 'PR AUC' some libraries report; the challenge and scikit-learn use the steps."""
    probs = np.array([0.9, 0.6, 0.3], dtype=np.float32).reshape(1, 1, 3)
    truth = np.array([False, True, True]).reshape(1, 1, 3)
    accumulator = SegmentationAccumulator(lesions=("EX",))
    accumulator.add(probs, truth)
    assert accumulator.summary()["EX"]["aupr"] == pytest.approx(7 / 12, abs=1e-12)
    assert exact_average_precision(probs, truth) == pytest.approx(7 / 12, abs=1e-12)


def test_accumulator_memory_is_bounded_and_merge() -> None:
    rng = np.random.default_rng(2)
    one, two, both = (SegmentationAccumulator(bins=50) for _ in range(3))
    for i in range(6):
        probs, truth = rng.random((5, 16, 16)).astype(np.float32), rng.random((5, 16, 16)) < 0.1
        (one if i % 2 else two).add(probs, truth)
        both.add(probs, truth)
    assert both.hist_pos.shape == (5, 50) and both.n_images == 6
    merged = one.merge(two).summary()
    reference = both.summary()
    for lesion in LESIONS:
        assert merged[lesion]["dice"] == pytest.approx(reference[lesion]["dice"])
        assert merged[lesion]["aupr"] == pytest.approx(reference[lesion]["aupr"])
        assert merged[lesion]["dice_mean"] == pytest.approx(reference[lesion]["dice_mean"])
    with pytest.raises(ValueError):
        both.add(np.zeros((4, 16, 16)), np.zeros((4, 16, 16), bool))


# ---------------------------------------------------------------------------------------------- gate

def test_routing_report() -> None:
    vectors = [[1, 0], [1, 0], [0, 1], [0, 1], [0, 1], [1, 1], [1, 1]]
    probs = [[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.4, 0.6], [0.6, 0.4], [0.1, 0.9], [0.8, 0.2]]
    r = routing_report(np.array(vectors), np.array(probs))
    assert r["n"] == 7 and r["misrouted"] == 2
    assert r["accuracy"] == pytest.approx(5 / 7)
    assert r["row_labels"] == ["segmentation", "classification", "both"]
    assert r["column_labels"] == ["segmentation", "classification"]
    assert r["confusion_matrix"] == [[1, 1], [1, 2], [1, 1]]
    assert r["accuracy_by_task"] == {"segmentation": 0.5, "classification": pytest.approx(2 / 3), "both": 1.0}
    json.dumps(r)
    empty = routing_report(np.zeros((0, 2)), np.zeros((0, 2)))
    assert empty["n"] == 0 and empty["accuracy"] is None and empty["confusion_matrix"] == [[0, 0]] * 3
    with pytest.raises(ValueError):
        routing_report(np.array([[0, 0]]), np.array([[0.5, 0.5]]))


# ---------------------------------------------------------------------------------------------- torchmetrics

def test_torchmetrics_cross_check() -> None:
    import torch  # pinned in requirements.txt: a missing one is a broken install, not a reason to skip
    from torchmetrics.functional.classification import (
        binary_average_precision,
        multiclass_accuracy,
        multiclass_cohen_kappa,
        multiclass_confusion_matrix,
        multiclass_f1_score,
    )

    rng = np.random.default_rng(3)
    num_classes = 5
    y_true = rng.integers(0, num_classes, 400)
    y_pred = np.where(rng.random(400) < 0.6, y_true, rng.integers(0, num_classes, 400))
    r = classification_report(y_true, y_pred, num_classes)
    t, p = torch.from_numpy(y_true), torch.from_numpy(y_pred)
    assert r["accuracy"] == pytest.approx(float(multiclass_accuracy(p, t, num_classes, average="micro")), abs=1e-6)
    assert r["f1_macro"] == pytest.approx(float(multiclass_f1_score(p, t, num_classes, average="macro")), abs=1e-6)
    assert r["confusion_matrix"] == multiclass_confusion_matrix(p, t, num_classes).tolist()
    kappa = float(multiclass_cohen_kappa(p, t, num_classes, weights="quadratic"))
    assert r["kappa_quadratic"] == pytest.approx(kappa, abs=1e-5)

    acc = SegmentationAccumulator(bins=1000)
    probs = np.empty((5, 200, 250), np.float32)
    truth = np.empty((5, 200, 250), bool)
    for index, rate in enumerate((0.002, 0.01, 0.01, 0.005, 0.02)):
        lesion_probs, lesion_truth = _realistic(50_000, rate, seed=10 + index)
        probs[index], truth[index] = lesion_probs.reshape(200, 250), lesion_truth.reshape(200, 250)
    acc.add(probs, truth)
    summary = acc.summary()
    for index, lesion in enumerate(LESIONS):
        exact = float(binary_average_precision(torch.from_numpy(probs[index]).flatten(),
                                               torch.from_numpy(truth[index]).flatten().long()))
        assert abs(summary[lesion]["aupr"] - exact) < 0.005, lesion


def test_scores_at_the_ends_of_0_1_keep_their_own_bins() -> None:
    """A positive at 1.0 above a negative at 0.9985, and one at 0.0015 above a negative at 0.0: each pair ranks
    right (AP 1) only if the first and the last of the 1000 bins are kept apart from their neighbours."""
    for scores in ([1.0, 0.9985], [0.0015, 0.0]):
        accumulator = SegmentationAccumulator(lesions=("MA",))
        accumulator.add(np.array(scores, np.float32).reshape(1, 1, 2), np.array([True, False]).reshape(1, 1, 2))
        assert accumulator.summary()["MA"]["aupr"] == pytest.approx(1.0), scores


def test_a_nan_probability_counts_as_no_lesion() -> None:
    """A NaN (a diverged model, a 0/0 in blending) must not light a pixel up: it scores as 0."""
    probs = np.array([np.nan, 0.9, 0.2], np.float32).reshape(1, 1, 3)
    truth = np.array([False, True, False]).reshape(1, 1, 3)
    accumulator = SegmentationAccumulator(lesions=("EX",))
    accumulator.add(probs, truth)
    summary = accumulator.summary()["EX"]
    assert summary["aupr"] == pytest.approx(1.0) and summary["dice"] == pytest.approx(1.0)


def test_quadratic_kappa_weighs_grades_by_their_distance_even_when_some_are_absent() -> None:
    """Grades 0, 1 and 4 only: the weights must be those of the 0-4 scale (a 1-vs-4 error costs 9, not 1)."""
    truth, pred = [0, 1, 4, 4, 1, 0], [0, 4, 4, 1, 1, 0]
    report = classification_report(truth, pred, 5)
    from sklearn.metrics import cohen_kappa_score
    assert report["kappa_quadratic"] == pytest.approx(cohen_kappa_score(truth, pred, labels=range(5), weights="quadratic"))
    assert report["kappa_quadratic"] != pytest.approx(cohen_kappa_score(truth, pred, weights="quadratic"))


def test_an_empty_report_has_every_key_of_a_full_one() -> None:
    """The dashboard reads the same keys whether a split had graded images or not."""
    full, empty = classification_report([0, 1, 2], [0, 1, 1], 3), classification_report([], [], 3)
    assert set(empty) == set(full) and empty["n"] == 0 and empty["labels"] == [0, 1, 2] and empty["num_classes"] == 3
    assert empty["support"] == [0, 0, 0] and empty["confusion_matrix"] == [[0] * 3] * 3
    assert all(empty[k] is None for k in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "kappa_quadratic",
                                          "precision_per_class", "recall_per_class", "f1_per_class"))
    assert full["precision_per_class"] == pytest.approx([1, 0.5, 0]) and full["recall_per_class"] == pytest.approx([1, 1, 0])
    assert full["f1_per_class"] == pytest.approx([1, 2 / 3, 0])
