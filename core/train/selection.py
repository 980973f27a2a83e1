"""Which epoch's weights are ``best``: the comparison behind ``train.best_metric``.

Its own module because a silent mistake here (the comparison the wrong way round) ships the worst epoch as the
best one while every figure of the run still looks plausible; ``make mutation`` mutates it on its own.
"""

from __future__ import annotations

import math

from core.train.validation import LOSS_KEYS

# The figures where less is better: every loss part the trainer logs (val/total, val/seg_dice, ...) and the share
# of misrouted samples. Every other figure (val/score, val/gate_acc, val/dice_OD, ...) is better higher. Named,
# not guessed from words: "seg_dice" is a loss although it says dice, and no loss part's name ends in "loss" (a
# test on that suffix once made val/total pick the worst epoch).
LOWER_IS_BETTER = frozenset((*LOSS_KEYS, "misrouted_rate"))


def lower_is_better(metric: str) -> bool:
    """Whether ``metric`` (``val/<name>``) is a loss (the best epoch has the lowest) or a quality figure."""
    return metric.split("/")[-1] in LOWER_IS_BETTER


def is_better(value: float | None, best: float | None, metric: str) -> bool:
    """Whether an epoch's ``value`` of ``metric`` beats the ``best`` so far; a missing or non-finite value never
    does (a diverged epoch must not become the best), and any finite value beats no best at all."""
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if lower_is_better(metric) else value > best
