"""Timing that a shared machine cannot fool easily: warm-up first, then the median of several runs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls after ``warmup`` untimed ones (allocator, oneDNN and
    cuDNN pick their kernels on the first calls)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def interleaved_medians(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int,
                        warmup: int = 1) -> dict[str, float]:
    """Median times of several workloads run in turn (a, b, a, b, ...), so that a burst of load from another
    process on a shared machine hits all of them alike instead of biasing the ratio."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}
