"""Which epoch is ``best``: the comparison behind ``train.best_metric`` (core.train.selection)."""

from __future__ import annotations

import math

import pytest

from core.train.selection import is_better, lower_is_better


@pytest.mark.parametrize("metric", ["val/total", "val/seg", "val/seg_bce", "val/seg_dice", "val/cls", "val/dr",
                                    "val/dme", "val/gate", "val/gate_ce", "val/gate_entropy", "val/misrouted_rate"])
def test_loss_parts_are_lower_is_better(metric: str) -> None:
    assert lower_is_better(metric)
    assert is_better(1.0, 2.0, metric) and not is_better(2.0, 1.0, metric)


@pytest.mark.parametrize("metric", ["val/score", "val/gate_acc", "val/dr_acc", "val/dme_acc", "val/dice_mean",
                                    "val/dice_OD", "val/dr_kappa"])
def test_quality_figures_are_higher_is_better(metric: str) -> None:
    assert not lower_is_better(metric)
    assert is_better(2.0, 1.0, metric) and not is_better(1.0, 2.0, metric)


@pytest.mark.parametrize("metric", ["val/total", "val/score"])
def test_a_diverged_or_missing_value_never_becomes_the_best(metric: str) -> None:
    for value in (math.nan, math.inf, -math.inf, None):
        assert not is_better(value, 1.0, metric) and not is_better(value, None, metric)


@pytest.mark.parametrize("metric", ["val/total", "val/score"])
def test_the_first_finite_value_is_the_best_so_far_and_a_tie_keeps_the_earlier_epoch(metric: str) -> None:
    assert is_better(5.0, None, metric) and is_better(-3.0, None, metric)
    assert not is_better(1.0, 1.0, metric)  # the earlier of two equal epochs stays best


def test_every_figure_validation_logs_has_a_direction(tmp_path) -> None:
    """The names come from what a validation pass really writes: each loss part lower, each rate higher."""
    from core.train.validation import LossMeter, OutcomeMeter

    losses = LossMeter.summarise({f"{k}:{s}": 1.0 for k in ("total", "seg_dice", "gate_ce") for s in ("sum", "n")}
                                 | {"images": 4, "misrouted:count": 1}, "val")
    quality = OutcomeMeter.summarise({"gate_n": 2, "gate_correct": 1, "dice_OD_true": 3, "dice_OD_pred": 2,
                                      "dice_OD_inter": 1}, "val")
    assert set(losses) == {"val/total", "val/seg_dice", "val/gate_ce", "val/misrouted_rate"}
    assert all(lower_is_better(name) for name in losses)
    assert set(quality) == {"val/gate_acc", "val/dice_OD", "val/dice_mean"}
    assert not any(lower_is_better(name) for name in quality)
