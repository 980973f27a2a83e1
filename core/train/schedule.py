"""Linear warm-up then cosine decay: short budgets need the high learning rate early and a cool-down at the end."""

from __future__ import annotations

import math

import torch


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                  floor: float = 0.01) -> torch.optim.lr_scheduler.LambdaLR:
    """Multiplier 0 -> 1 over ``warmup_steps``, then cosine down to ``floor`` at ``total_steps``."""
    total_steps = max(1, total_steps)
    warmup_steps = min(max(0, warmup_steps), total_steps - 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def budget_shortfall(elapsed_s: float, steps_done: int, total_steps: int, seconds_per_step: float,
                     max_minutes: float | None) -> str | None:
    """A warning when, at this pace, ``train.max_minutes`` will stop the run before its schedule ends, else None.

    The safety stop is sized for the machine a config was measured on; a slower CPU (two 2-core machines of this
    workplace differed by 2.3x a step) would cut the run before the cosine's cool-down, and such a run learns less
    than its steps would with the learning rate decayed. Said once, early, it leaves the user time to act.
    """
    if max_minutes is None or steps_done >= total_steps or seconds_per_step <= 0:
        return None
    budget_s = max_minutes * 60
    needed_s = elapsed_s + (total_steps - steps_done) * seconds_per_step
    if needed_s <= budget_s:
        return None
    reach = min(total_steps, steps_done + int(max(0.0, budget_s - elapsed_s) / seconds_per_step))
    return (f"at {seconds_per_step:.2f} s a step the schedule of {total_steps} steps needs about "
            f"{math.ceil(needed_s / 60)} minutes, beyond train.max_minutes {max_minutes:g}: the run will stop near "
            f"step {reach}, before its learning rate has decayed; raise train.max_minutes (or lower train.epochs) "
            "to finish the schedule")
