"""The machine's compute limit for the efficiency figure: the best of several dense kernels, and the theoretical peak.

One 2048x2048 matmul is not the limit: on an AMD EPYC here MKL's sgemm reached 147-168 GFLOP/s at 1024-4096 while
oneDNN's 1x1 convolution in channels_last (a GEMM too, and what ConvNeXt's pointwise layers run) reached 377-392, so
a training step measured 1.32x "the limit". The reference is therefore the fastest of a small set of kernels, named
in the report; the theoretical peak (cores x clock x vector lanes x 2 for the fused multiply-add x FMA units) is
printed beside it where ``/proc/cpuinfo`` gives the vector width and clock. The FMA unit count cannot be read, so it
is assumed (2, as on recent x86 server cores), and the clock is the one the kernel reports, not the boost clock:
the peak is an estimate and a measured kernel may pass it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from core.bench.timing import median_seconds

ASSUMED_FMA_UNITS = 2


@dataclass(frozen=True)
class Kernel:
    name: str
    flops: float
    run: Callable[[], object]


def reference_kernels(device: torch.device, dtype: torch.dtype, quick: bool) -> list[Kernel]:
    """Matmuls at a few sizes and two large 1x1 convolutions in channels_last (oneDNN's GEMM path on a CPU)."""
    kernels = []
    sizes = (1024, 2048) if quick else (1024, 2048, 4096)
    if device.type == "cuda" and not quick:
        sizes += (8192,)  # a GPU needs a larger problem to fill
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        kernels.append(Kernel(f"matmul {n}x{n}", 2.0 * n**3, lambda a=a, b=b: a @ b))
    shapes = ((4, 512, 32, 512),) if quick else ((8, 512, 32, 512), (4, 1024, 32, 1024))
    for batch, channels, side, out in shapes:
        x = torch.randn(batch, channels, side, side, device=device, dtype=dtype).to(memory_format=torch.channels_last)
        conv = torch.nn.Conv2d(channels, out, 1, bias=False).to(device=device, dtype=dtype)
        conv = conv.to(memory_format=torch.channels_last).requires_grad_(False)
        kernels.append(Kernel(f"1x1 convolution {channels}->{out} on {batch}x{side}x{side}, channels_last",
                              2.0 * batch * side * side * channels * out, lambda conv=conv, x=x: conv(x)))
    return kernels


def measure_kernels(kernels: list[Kernel], device: torch.device, repeats: int) -> list[tuple[Kernel, float]]:
    """(kernel, FLOP/s) for each, the median of ``repeats`` timed runs after one untimed warm-up (first-call
    allocations and oneDNN's kernel selection)."""
    with torch.no_grad():
        return [(kernel, kernel.flops / median_seconds(kernel.run, device, repeats)) for kernel in kernels]


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def vector_lanes(flags: set[str]) -> int | None:
    """float32 lanes of the widest vector FMA the CPU advertises."""
    if "avx512f" in flags:
        return 16
    if "fma" in flags and "avx2" in flags:
        return 8
    return None


def theoretical_peak(threads: int, cpuinfo: str | None = None) -> tuple[float, str] | None:
    """(FLOP/s, how it was computed) for ``threads`` cores from the CPU's flags and clock; None where unreadable."""
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    flags_line = re.search(r"^flags\s*:\s*(.*)$", text, re.MULTILINE)
    clock = re.search(r"^cpu MHz\s*:\s*([\d.]+)", text, re.MULTILINE)
    if not flags_line or not clock:
        return None
    lanes = vector_lanes(set(flags_line.group(1).split()))
    if lanes is None:
        return None
    ghz = float(clock.group(1)) / 1000
    peak = threads * ghz * 1e9 * lanes * 2 * ASSUMED_FMA_UNITS
    how = (f"{threads} cores x {ghz:.2f} GHz x {lanes} float32 lanes x 2 (FMA) x {ASSUMED_FMA_UNITS} FMA units "
           "(assumed); reported clock, not boost")
    return peak, how


def compute_threads() -> int:
    return min(torch.get_num_threads(), os.cpu_count() or 1)
