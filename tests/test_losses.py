"""The losses against values computed by hand on tiny literal tensors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from core.model import (ModelOutput, MultiTaskLoss, bce_loss, combine, entropy, soft_cross_entropy, soft_dice_loss,
                        soft_tversky_loss)

LN2, LN3, LN4, LN5 = math.log(2), math.log(3), math.log(4), math.log(5)
BIG = 100.0  # sigmoid(+-100) is 1 / 0 to float32 precision


def _logit(p: list) -> torch.Tensor:
    """Logits whose sigmoid is exactly the given probabilities (0 and 1 mapped to -+BIG)."""
    p = torch.tensor(p, dtype=torch.float64)
    return torch.where(p <= 0, -BIG, torch.where(p >= 1, BIG, torch.log(p / (1 - p)))).float()


# --- Dice -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("probs, target, smooth, expected", [
    # p = 0.5 everywhere, one positive pixel: (2*0.5 + 1) / (2 + 1 + 1) = 0.5
    ([[.5, .5], [.5, .5]], [[1, 0], [0, 0]], 1.0, 1 - 0.5),
    # perfect prediction: (2 + 1) / (2 + 1) = 1
    ([[1, 0], [0, 1]], [[1, 0], [0, 1]], 1.0, 0.0),
    # empty target, p = 0.5: (0 + 1) / (2 + 0 + 1) = 1/3
    ([[.5, .5], [.5, .5]], [[0, 0], [0, 0]], 1.0, 1 - 1 / 3),
    # no smoothing, half the pixels positive: 2*1 / (2 + 2) = 0.5
    ([[.5, .5], [.5, .5]], [[1, 1], [0, 0]], 0.0, 0.5),
    # fully wrong: (0 + 1) / (2 + 2 + 1) = 0.2
    ([[0, 0], [1, 1]], [[1, 1], [0, 0]], 1.0, 1 - 0.2),
])
def test_soft_dice_of_a_2x2_mask(probs: list, target: list, smooth: float, expected: float) -> None:
    logits = _logit(probs).view(1, 1, 2, 2)
    target_t = torch.tensor(target, dtype=torch.float32).view(1, 1, 2, 2)
    for mode in ("batch", "image"):  # one image: both modes agree
        assert soft_dice_loss(logits, target_t, mode, smooth).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("mode, expected", [
    # sums over both images: inter 0.5, sum p 4, sum t 1 -> (1 + 1) / (5 + 1) = 1/3
    ("batch", 1 - 1 / 3),
    # image A: (1 + 1) / (3 + 1) = 1/2, image B (empty): 1 / (2 + 1) = 1/3 -> mean 5/12
    ("image", 1 - 5 / 12),
])
def test_batch_dice_pools_images_image_dice_averages_them(mode: str, expected: float) -> None:
    logits = torch.zeros(2, 1, 2, 2)
    target = torch.tensor([[[[1, 0], [0, 0]]], [[[0, 0], [0, 0]]]], dtype=torch.float32)
    assert soft_dice_loss(logits, target, mode).item() == pytest.approx(expected, abs=1e-6)


def test_dice_averages_over_lesion_channels() -> None:
    logits = torch.stack([_logit([[1, 0], [0, 0]]), _logit([[.5, .5], [.5, .5]])]).unsqueeze(0)  # (1, 2, 2, 2)
    target = torch.tensor([[[1, 0], [0, 0]], [[1, 0], [0, 0]]], dtype=torch.float32).unsqueeze(0)
    assert soft_dice_loss(logits, target).item() == pytest.approx(1 - (1.0 + 0.5) / 2, abs=1e-6)


# --- BCE, CE, entropy -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("logit, target, pos_weight, expected", [
    (0.0, 1.0, None, LN2),
    (0.0, 0.0, None, LN2),
    (LN3, 1.0, None, math.log(4 / 3)),  # sigmoid(ln 3) = 3/4
    (LN3, 0.0, None, LN4),
    (0.0, 1.0, 2.0, 2 * LN2),  # pos_weight scales the positive term only
    (0.0, 0.0, 2.0, LN2),
])
def test_bce_of_known_logits(logit: float, target: float, pos_weight: float | None, expected: float) -> None:
    logits = torch.full((1, 5, 1, 1), logit)
    targets = torch.full((1, 5, 1, 1), target)
    weight = None if pos_weight is None else torch.full((5,), pos_weight)
    assert bce_loss(logits, targets, weight).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("probs, expected", [
    ([0.5, 0.5], LN2),
    ([1.0, 0.0], 0.0),
    ([0.9, 0.1], -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))),
])
def test_entropy(probs: list, expected: float) -> None:
    assert entropy(torch.tensor([probs])).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("logits, target, expected", [
    ([0.0, LN3], [1.0, 0.0], LN4),  # softmax = [1/4, 3/4]
    ([0.0, LN3], [0.0, 1.0], math.log(4 / 3)),
    ([0.0, LN3], [0.5, 0.5], -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))),
])
def test_soft_cross_entropy(logits: list, target: list, expected: float) -> None:
    value = soft_cross_entropy(torch.tensor([logits]), torch.tensor([target])).item()
    assert value == pytest.approx(expected, abs=1e-6)


# --- MultiTaskLoss on hand-built outputs ------------------------------------------------------------------------

def _output(gate_logits: list, route: list, seg_logits: torch.Tensor | None = None,
            dr_logits: torch.Tensor | None = None, dme_logits: torch.Tensor | None = None) -> ModelOutput:
    gate = torch.tensor(gate_logits, dtype=torch.float32, requires_grad=True)
    route_t = torch.tensor(route, dtype=torch.bool)
    return ModelOutput(gate, gate.softmax(1), route_t, route_t[:, 0].nonzero().flatten(), seg_logits,
                       route_t[:, 1].nonzero().flatten(), dr_logits, dme_logits)


def _batch(task_vector: list, mask_valid: list, dr: list, dme: list, size: int = 2) -> dict[str, torch.Tensor]:
    tv = torch.tensor(task_vector, dtype=torch.float32)
    return {"task": tv.argmax(1), "task_vector": tv, "mask": torch.zeros(len(dr), 5, size, size, dtype=torch.uint8),
            "mask_valid": torch.tensor(mask_valid), "dr": torch.tensor(dr), "dme": torch.tensor(dme)}


SEG = LN2 + 2 / 3  # zero logits on an empty 2x2 mask: BCE ln 2; batch Dice 1 - 1/(2+0+1) = 2/3 per channel
CLS = LN5 + LN3  # zero logits: DR ln 5 + DME ln 3
GATE = LN2 + 0.01 * LN2  # zero gate logits: CE ln 2, entropy ln 2, coef 0.01
SEG_SAMPLE = dict(task_vector=[1, 0], mask_valid=True, dr=-100, dme=-100)
CLS_SAMPLE = dict(task_vector=[0, 1], mask_valid=False, dr=2, dme=1)


def _case(samples: list[dict], routes: list[list[int]]) -> tuple[ModelOutput, dict[str, torch.Tensor]]:
    n_seg = sum(r[0] for r in routes)
    n_cls = sum(r[1] for r in routes)
    out = _output([[0.0, 0.0]] * len(samples), routes,
                  torch.zeros(n_seg, 5, 2, 2) if n_seg else None,
                  torch.zeros(n_cls, 5) if n_cls else None, torch.zeros(n_cls, 3) if n_cls else None)
    batch = _batch(*([s[k] for s in samples] for k in ("task_vector", "mask_valid", "dr", "dme")))
    return out, batch


# weights seg 1, cls 1, gate 0.5 (sum 2.5): total = 2.5 * sum_present(w L) / sum_present(w)
@pytest.mark.parametrize("samples, routes, expected, present", [
    ([SEG_SAMPLE, CLS_SAMPLE], [[1, 0], [0, 1]], 1 * SEG + 1 * CLS + 0.5 * GATE, {"seg", "cls", "gate"}),
    ([SEG_SAMPLE], [[1, 0]], 2.5 * (SEG + 0.5 * GATE) / 1.5, {"seg", "gate"}),
    # the classification sample went to the decoder (misrouted): no cls part, same total as above
    ([SEG_SAMPLE, CLS_SAMPLE], [[1, 0], [1, 0]], 2.5 * (SEG + 0.5 * GATE) / 1.5, {"seg", "gate"}),
    ([CLS_SAMPLE], [[0, 1]], 2.5 * (CLS + 0.5 * GATE) / 1.5, {"cls", "gate"}),
    # both samples sent to the wrong expert: only the gate learns, scaled to the full weight sum
    ([SEG_SAMPLE, CLS_SAMPLE], [[0, 1], [1, 0]], 2.5 * GATE, {"gate"}),
])
def test_task_presence_renormalises_the_weights(samples: list, routes: list, expected: float,
                                                present: set[str]) -> None:
    out, batch = _case(samples, routes)
    total, parts = MultiTaskLoss(seg_weight=1.0, cls_weight=1.0, gate_weight=0.5)(out, batch)
    assert total.item() == pytest.approx(expected, abs=1e-5)
    assert parts["total"] == pytest.approx(expected, abs=1e-5)
    assert {k for k in ("seg", "cls", "gate") if k in parts} == present
    for name, value in (("seg", SEG), ("cls", CLS), ("gate", GATE)):
        if name in present:
            assert parts[name] == pytest.approx(value, abs=1e-5)


def test_combine_rule_and_empty_batch() -> None:
    weights = {"seg": 1.0, "cls": 2.0, "gate": 1.0}
    terms = {"seg": torch.tensor(3.0), "gate": torch.tensor(1.0)}
    assert combine(terms, weights).item() == pytest.approx(4.0 * (3.0 + 1.0) / 2.0)
    anchor = torch.ones(2, 2, requires_grad=True)
    empty = combine({}, weights, anchor=anchor)
    assert empty.item() == 0.0
    empty.backward()  # still on the graph: a step with nothing to learn does not crash
    assert torch.equal(anchor.grad, torch.zeros(2, 2))


@pytest.mark.parametrize("dr, dme, expected, keys, n_cls", [
    ([2, 1], [0, 2], LN5 + LN3, {"dr", "dme", "cls"}, 2),
    ([-100, 1], [0, 2], LN5 + LN3, {"dr", "dme", "cls"}, 2),  # one ignored DR label: mean over the valid one
    ([-100, -100], [0, 2], LN3, {"dme", "cls"}, 2),  # no valid DR label: the DR term is absent, not NaN
    ([-100, 4], [-100, -100], LN5, {"dr", "cls"}, 1),  # only sample 1 has any label
    ([-100, -100], [-100, -100], None, set(), 0),  # nothing valid: classification absent
])
def test_classification_ignore_index(dr: list, dme: list, expected: float | None, keys: set[str],
                                     n_cls: int) -> None:
    out = _output([[0.0, 0.0]] * 2, [[0, 1]] * 2, dr_logits=torch.zeros(2, 5), dme_logits=torch.zeros(2, 3))
    batch = _batch([[0, 1]] * 2, [False, False], dr, dme)
    total, parts = MultiTaskLoss()(out, batch)
    assert {k for k in ("dr", "dme", "cls") if k in parts} == keys
    assert parts["n_cls_samples"] == n_cls
    assert torch.isfinite(total)
    if expected is not None:
        assert parts["cls"] == pytest.approx(expected, abs=1e-6)


def test_class_weights_weight_the_mean() -> None:
    dr_logits = torch.tensor([[0.0, 0, 0, 0, 0], [0, LN4, 0, 0, 0]])  # CE: ln 5 (label 0), ln 2 (label 1)
    out = _output([[0.0, 0.0]] * 2, [[0, 1]] * 2, dr_logits=dr_logits, dme_logits=torch.zeros(2, 3))
    batch = _batch([[0, 1]] * 2, [False, False], [0, 1], [0, 0])
    _, parts = MultiTaskLoss(dr_class_weights=[1, 3, 1, 1, 1], dme_class_weights=[2, 1, 1])(out, batch)
    assert parts["dr"] == pytest.approx((1 * LN5 + 3 * LN2) / 4, abs=1e-6)
    assert parts["dme"] == pytest.approx(LN3, abs=1e-6)


def test_bce_pos_weight_reaches_the_segmentation_loss() -> None:
    out = _output([[0.0, 0.0]], [[1, 0]], seg_logits=torch.zeros(1, 5, 2, 2))
    batch = _batch([[1, 0]], [True], [-100], [-100])
    batch["mask"][0, 0] = 1  # MA channel all positive: 4 of the 20 pixels
    _, plain = MultiTaskLoss()(out, batch)
    _, weighted = MultiTaskLoss(bce_pos_weight=[3, 1, 1, 1, 1])(out, batch)
    assert plain["seg_bce"] == pytest.approx(LN2, abs=1e-6)
    assert weighted["seg_bce"] == pytest.approx((4 * 3 * LN2 + 16 * LN2) / 20, abs=1e-6)


@pytest.mark.parametrize("dice, expected_dice", [
    # pooled over both images. MA: inter 2, sum p 2 + 1, sum t 4 -> (4 + 1) / (7 + 1) = 5/8;
    # the 4 empty channels: 1 / (3 + 1) = 1/4
    ("batch", 1 - (5 / 8 + 4 * (1 / 4)) / 5),
    # image 0: MA (4 + 1) / (6 + 1) = 5/7, empty channels 1 / (2 + 1) = 1/3;
    # image 1 (empty everywhere, p 0.5 on 2 pixels): 1 / (1 + 1) = 1/2 on every channel
    ("image", 1 - ((5 / 7 + 4 * (1 / 3)) / 5 + 1 / 2) / 2),
])
def test_dice_mode_reaches_the_segmentation_loss(dice: str, expected_dice: float) -> None:
    # image 0: p 0.5 everywhere, MA channel all positive; image 1: p 0.5 on its top row, ~0 below, no lesion
    image1 = torch.full((5, 2, 2), -BIG)
    image1[:, 0] = 0.0
    out = _output([[0.0, 0.0]] * 2, [[1, 0]] * 2, seg_logits=torch.stack([torch.zeros(5, 2, 2), image1]))
    batch = _batch([[1, 0]] * 2, [True, True], [-100] * 2, [-100] * 2)
    batch["mask"][0, 0] = 1
    _, parts = MultiTaskLoss(dice=dice)(out, batch)
    assert parts["seg_dice"] == pytest.approx(expected_dice, abs=1e-5)


# --- focal and Tversky (loss.pixel, loss.overlap) ----------------------------------------------------------------

@pytest.mark.parametrize("alpha, beta, expected", [
    # p 0.5 on 4 pixels, target 1 on the first two: TP 1, FP 1, FN 1, s 1 -> (1 + 0.5) / (1 + a + b + 0.5)
    (0.5, 0.5, 1 - 1.5 / 2.5),  # Dice: (2 + 1) / (2 + 2 + 1)
    (0.3, 0.7, 1 - 1.5 / 2.5),  # FP = FN here: only a + b matters
    (0.2, 0.4, 1 - 1.5 / 2.1),
])
def test_tversky_of_a_2x2_mask_with_equal_errors(alpha: float, beta: float, expected: float) -> None:
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1, 1], [0, 0]]]], dtype=torch.float32)
    assert soft_tversky_loss(logits, target, alpha, beta).item() == pytest.approx(expected, abs=1e-6)


def test_tversky_with_beta_above_alpha_punishes_a_missed_pixel_more_than_a_false_one() -> None:
    target = torch.tensor([[[[1, 1], [0, 0]]]], dtype=torch.float32)
    missed = _logit([[1, 0], [0, 0]]).view(1, 1, 2, 2)  # TP 1, FN 1, FP 0
    false = _logit([[1, 1], [1, 0]]).view(1, 1, 2, 2)  # TP 2, FP 1, FN 0
    for name, prediction, expected in (("missed", missed, 1 - 1.5 / (1 + 0.7 + 0.5)),
                                       ("false", false, 1 - 2.5 / (2 + 0.3 + 0.5))):
        assert soft_tversky_loss(prediction, target, 0.3, 0.7).item() == pytest.approx(expected, abs=1e-6), name
    # the same two errors under Dice: (2 * 1 + 1) / (1 + 2 + 1) = 3/4 and (2 * 2 + 1) / (3 + 2 + 1) = 5/6
    assert soft_dice_loss(missed, target).item() == pytest.approx(1 - 3 / 4, abs=1e-6)
    assert soft_dice_loss(false, target).item() == pytest.approx(1 - 5 / 6, abs=1e-6)


def test_dice_is_tversky_at_one_half_with_channel_masks_and_both_modes() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 4, 4, generator=generator)
    target = (torch.rand(3, 5, 4, 4, generator=generator) > 0.8).float()
    channels = torch.tensor([[1, 1, 1, 1, 0], [1, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    for mode in ("batch", "image"):
        assert soft_tversky_loss(logits, target, 0.5, 0.5, mode, 1.0, channels).item() == pytest.approx(
            soft_dice_loss(logits, target, mode, 1.0, channels).item(), abs=1e-6)


@pytest.mark.parametrize("p, t, gamma, expected", [
    (0.5, 1, 2.0, 0.25 * LN2),  # (1 - 0.5)^2 ln 2
    (0.9, 0, 2.0, 0.81 * math.log(10)),  # a confident false positive keeps most of its loss
    (0.1, 0, 2.0, 0.01 * math.log(10 / 9)),  # an easy background pixel loses 99% of it
    (0.1, 0, 0.0, math.log(10 / 9)),  # gamma 0 is BCE
])
def test_focal_loss_of_one_pixel(p: float, t: int, gamma: float, expected: float) -> None:
    logits = _logit([[p]]).view(1, 1, 1, 1)
    target = torch.tensor([[[[t]]]], dtype=torch.float32)
    assert bce_loss(logits, target, gamma=gamma).item() == pytest.approx(expected, rel=1e-5)


def test_focal_loss_keeps_the_positive_weight_and_the_channel_mask() -> None:
    logits = torch.zeros(1, 2, 1, 2)  # p 0.5 everywhere: (1 - p_t)^2 = 1/4 on every pixel
    target = torch.tensor([[[[1, 0]], [[1, 0]]]], dtype=torch.float32)
    pos_weight = torch.tensor([3.0, 1.0])
    only_first = torch.tensor([[True, False]])
    # channel 0 alone: pixels (3 ln 2 + ln 2) / 4, over its 2 pixels
    assert bce_loss(logits, target, pos_weight, only_first, gamma=2.0).item() == pytest.approx(
        (3 * LN2 + LN2) / 4 / 2, abs=1e-6)


@pytest.mark.parametrize("kwargs, expected_bce, expected_dice", [
    ({}, LN2, None),
    ({"pixel": "focal", "focal_gamma": 2.0}, LN2 / 4, None),
    ({"overlap": "tversky", "tversky_alpha": 0.0, "tversky_beta": 1.0}, LN2, "tversky"),
])
def test_the_loss_switches_reach_the_segmentation_loss_only(kwargs: dict, expected_bce: float,
                                                           expected_dice: str | None) -> None:
    out = _output([[0.0, 0.0]], [[1, 0]], seg_logits=torch.zeros(1, 5, 2, 2))
    batch = _batch([[1, 0]], [True], [-100], [-100])
    batch["mask"][0, 0] = 1  # MA all positive, the other channels empty; p 0.5 everywhere
    _, parts = MultiTaskLoss(**kwargs)(out, batch)
    assert parts["seg_bce"] == pytest.approx(expected_bce, abs=1e-6)
    # Dice: MA (2*2 + 1) / (2 + 4 + 1) = 5/7, empty (0 + 1) / (2 + 1) = 1/3; Tversky a 0 b 1: MA (2 + .5) / (2 + 2
    # + .5) = 5/9 (only its 2 missed units count), empty channels (0 + .5) / (0 + .5) = 1 (false positives are free)
    dice = 1 - (5 / 7 + 4 / 3) / 5 if expected_dice is None else 1 - (5 / 9 + 4) / 5
    assert parts["seg_dice"] == pytest.approx(dice, abs=1e-5)


@pytest.mark.parametrize("kwargs", [{"pixel": "dice"}, {"overlap": "bce"}, {"focal_gamma": -1.0},
                                    {"tversky_beta": -0.1}])
def test_the_loss_switches_refuse_unknown_values(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        MultiTaskLoss(**kwargs)


def test_samples_without_masks_or_labels_teach_only_the_gate() -> None:
    # sample 0: seg, routed to seg. sample 1: cls routed to seg (misrouted). sample 2: both tasks, routed to cls.
    out = _output([[0.0, 0.0]] * 3, [[1, 0], [1, 0], [0, 1]], seg_logits=torch.zeros(2, 5, 2, 2),
                  dr_logits=torch.zeros(1, 5), dme_logits=torch.zeros(1, 3))
    batch = _batch([[1, 0], [0, 1], [1, 1]], [True, False, True], [-100, 2, 3], [-100, 1, 0])
    batch["mask"][1] = 1  # a misrouted sample's (bogus) mask must not be read: mask_valid is False
    _, parts = MultiTaskLoss()(out, batch)
    assert parts["misrouted"] == 1
    assert parts["n_seg_samples"] == 1 and parts["n_cls_samples"] == 1
    assert parts["seg"] == pytest.approx(SEG, abs=1e-5)
    assert parts["gate_acc"] == pytest.approx(2 / 3)  # argmax of [0, 0] is 0: right for samples 0 and 2


@pytest.mark.parametrize("route, misrouted", [
    ([[1, 0], [0, 1], [1, 0], [0, 1]], 0),
    ([[0, 1], [0, 1], [1, 0], [0, 1]], 1),
    ([[0, 1], [1, 0], [0, 1], [1, 0]], 3),  # sample 2 has both tasks: either route is right
    ([[1, 1], [1, 1], [1, 1], [1, 1]], 0),
])
def test_misrouted_counting(route: list, misrouted: int) -> None:
    route_t = torch.tensor(route)
    out = _output([[0.0, 0.0]] * 4, route, torch.zeros(int(route_t[:, 0].sum()), 5, 2, 2),
                  torch.zeros(int(route_t[:, 1].sum()), 5), torch.zeros(int(route_t[:, 1].sum()), 3))
    batch = _batch([[1, 0], [0, 1], [1, 1], [0, 1]], [True, False, True, False], [-100, 1, 2, 3], [-100, 0, 1, 2])
    assert MultiTaskLoss()(out, batch)[1]["misrouted"] == misrouted


@pytest.mark.parametrize("gate_logits, task_vector, entropy_coef, expected_ce", [
    ([[0.0, 0.0]], [[1, 0]], 0.01, LN2),
    ([[0.0, LN3]], [[1, 0]], 0.01, LN4),
    ([[0.0, LN3]], [[0, 1]], -0.05, math.log(4 / 3)),
    ([[0.0, LN3]], [[1, 1]], 0.0, -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))),  # normalised soft target
    ([[0.0, LN3], [0.0, 0.0]], [[1, 0], [1, 1]], 0.1, (LN4 + LN2) / 2),
])
def test_gate_loss_and_entropy_sign(gate_logits: list, task_vector: list, entropy_coef: float,
                                    expected_ce: float) -> None:
    n = len(gate_logits)
    out = _output(gate_logits, [[0, 0]] * n)
    batch = _batch(task_vector, [False] * n, [-100] * n, [-100] * n)
    total, parts = MultiTaskLoss(entropy_coef=entropy_coef)(out, batch)
    probs = torch.tensor(gate_logits).softmax(1)
    h = float(-(probs * probs.log()).sum(1).mean())
    assert parts["gate_ce"] == pytest.approx(expected_ce, abs=1e-6)
    assert parts["gate_entropy"] == pytest.approx(h, abs=1e-6)
    assert parts["gate"] == pytest.approx(expected_ce + entropy_coef * h, abs=1e-6)
    assert total.item() == pytest.approx(3.0 * parts["gate"], abs=1e-5)  # gate alone carries all three weights


def test_gate_class_weights_weight_each_sample_by_its_route() -> None:
    """Sample 0 wants segmentation (CE ln 4), sample 1 classification (CE ln 4/3); weights 3 and 1."""
    out = _output([[0.0, LN3], [0.0, LN3]], [[0, 0]] * 2)
    batch = _batch([[1, 0], [0, 1]], [False] * 2, [-100] * 2, [-100] * 2)
    _, plain = MultiTaskLoss()(out, batch)
    _, weighted = MultiTaskLoss(gate_class_weights=[3.0, 1.0])(out, batch)
    assert plain["gate_ce"] == pytest.approx((LN4 + math.log(4 / 3)) / 2, abs=1e-6)
    assert weighted["gate_ce"] == pytest.approx((3 * LN4 + math.log(4 / 3)) / 4, abs=1e-6)


def test_balanced_gate_weights_equalise_the_routes_under_the_draws() -> None:
    from core.data.metadata import Sample
    from core.data.sampling import balanced_gate_weights

    def sample(i: int, masks: bool, grade: int | None) -> Sample:
        return Sample(id=f"s{i}", split="train", task="segmentation" if masks else "classification",
                      task_vector=(1, 0) if masks else (0, 1), image=Path("x.jpg"),
                      masks={"EX": Path("m.tif")} if masks else None, dr_grade=grade,
                      dme_risk=0 if grade is not None else None, weight=1.0)

    # referable: three photographs with masks and one grade-3 photograph; not: one grade-0 photograph
    samples = [sample(0, True, None), sample(1, True, None), sample(2, True, None), sample(3, False, 3),
               sample(4, False, 0)]
    seg, cls = balanced_gate_weights(samples, "referable")  # equal metadata weights: 4 of 5 draws referable
    assert seg == pytest.approx(1 / (2 * 0.8)) and cls == pytest.approx(1 / (2 * 0.2))
    # with a share of draws: 0.5 to the masks; the graded half split by grade: 0.25 each
    seg, cls = balanced_gate_weights(samples, "referable", segmentation_share=0.5)
    assert seg == pytest.approx(1 / (2 * 0.75)) and cls == pytest.approx(1 / (2 * 0.25))
    assert balanced_gate_weights(samples[:3], "referable") == (1.0, 1.0)  # one route only: nothing to balance


@pytest.mark.parametrize("entropy_coef, sharper", [(0.5, True), (0.01, True), (-0.5, False)])
def test_entropy_sign_convention(entropy_coef: float, sharper: bool) -> None:
    """Positive coefficient: the entropy term's gradient widens the gate's margin (confident routing);
    negative: it narrows it (the gate stays uncertain)."""

    def margin_grad(coef: float) -> float:
        out = _output([[0.3, 0.0]], [[0, 0]])
        total, _ = MultiTaskLoss(entropy_coef=coef)(out, _batch([[1, 0]], [False], [-100], [-100]))
        total.backward()
        return float(out.gate_logits.grad[0, 0] - out.gate_logits.grad[0, 1])

    from_entropy = margin_grad(entropy_coef) - margin_grad(0.0)
    # gradient descent moves the margin by -grad: the margin grows (sharper gate) when this is negative
    assert (from_entropy < 0) == sharper


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="dice"):
        MultiTaskLoss(dice="pixel")
    with pytest.raises(ValueError, match="bce_pos_weight"):
        MultiTaskLoss(bce_pos_weight=[1, 2])
    with pytest.raises(ValueError, match=">= 0"):
        MultiTaskLoss(seg_weight=-1)


def test_mismatched_mask_size_is_named() -> None:
    out = _output([[0.0, 0.0]], [[1, 0]], seg_logits=torch.zeros(1, 5, 4, 4))
    with pytest.raises(ValueError, match="do not match"):
        MultiTaskLoss()(out, _batch([[1, 0]], [True], [-100], [-100], size=2))


@pytest.mark.parametrize("mode", ["batch", "image"])
def test_channel_labels_leave_the_disc_of_a_crop_out_of_the_loss(mode: str) -> None:
    """Moved from test_crops.py: it tests the losses alone (and so mutation testing of the losses runs it)."""
    from core.model.losses import bce_loss, soft_dice_loss

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 16, 16, generator=gen, requires_grad=True)
    target = (torch.rand(3, 5, 16, 16, generator=gen) > 0.8).float()
    everything = torch.ones(3, 5, dtype=torch.bool)
    pos_weight = torch.tensor([10.0, 5, 5, 5, 1])
    # all channels labelled: exactly the plain losses
    assert torch.allclose(bce_loss(logits, target, pos_weight, everything), bce_loss(logits, target, pos_weight))
    assert torch.allclose(soft_dice_loss(logits, target, mode, channels=everything), soft_dice_loss(logits, target, mode))
    # sample 1 is a crop: its disc channel carries no label, so its disc logits get no gradient
    channels = everything.clone()
    channels[1, 4] = False
    loss = bce_loss(logits, target, pos_weight, channels) + soft_dice_loss(logits, target, mode, channels=channels)
    loss.backward()
    assert torch.count_nonzero(logits.grad[1, 4]) == 0
    assert torch.count_nonzero(logits.grad[0, 4]) > 0 and torch.count_nonzero(logits.grad[1, 0]) > 0
