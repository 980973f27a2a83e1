"""``python -m core.bench.probe train|infer BACKBONE SIZE BATCH DEVICE PRECISION``: one step in a fresh process,
printing its peak memory and the memory held before the step, in MiB (resident set on CPU, allocated on CUDA).

A process of its own so that the figure is this step's and not whatever the benchmark's own process held before.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch


def _status_mib(field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of this process, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    """Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0): importing torch and building the
    model peak higher than a small step, and that peak must not be counted as the step's."""
    Path("/proc/self/clear_refs").write_text("5")


def main(argv: list[str]) -> None:
    from core.bench.workloads import Setting, gated_model, mixed_batch, steer_gate, train_step

    kind, backbone, size, batch, device, precision = argv
    setting = Setting(backbone, int(size), int(batch), torch.device(device), bf16=precision == "bf16")
    data = mixed_batch(setting)
    model = gated_model(setting)
    steer_gate(model, data["task"])
    cuda = setting.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:
        before = _status_mib("VmRSS")
        _reset_peak()
    if kind == "train":
        train_step(model, setting, data, "gate")()
    else:
        with torch.no_grad(), setting.autocast():
            model.eval()(data["image"][:1], route="both")
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = _status_mib("VmHWM")
    print(f"{peak:.1f} {before:.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
