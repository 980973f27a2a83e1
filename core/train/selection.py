"""Which epoch's weights are ``best``: the comparison behind ``train.best_metric``.

Its own module because a silent mistake here (the comparison the wrong way round) ships the worst epoch as the
best one while every figure of the run still looks plausible; ``make mutation`` mutates it on its own.
"""

from __future__ import annotations

import math

# Validation figures where more is better; every other one (val/total, val/seg, val/dr, ...) is a loss part.
# (The names of loss parts never end in "loss", so a test on that suffix once picked the worst epoch for them.)
HIGHER_IS_BETTER = ("acc", "score", "dice", "iou", "kappa", "aupr")


def lower_is_better(metric: str) -> bool:
    """Whether ``metric`` is a loss (the best epoch has the lowest) or a quality figure (the highest)."""
    name = metric.rsplit("/", 1)[-1]
    return not any(word in name for word in HIGHER_IS_BETTER)


def is_better(value: float | None, best: float | None, metric: str) -> bool:
    """Whether an epoch's ``value`` of ``metric`` beats the ``best`` so far; a missing or non-finite value never
    does (a diverged epoch must not become the best), and any finite value beats no best at all."""
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if lower_is_better(metric) else value > best
