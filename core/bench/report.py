"""The benchmark's results: one row per figure, a table for the console and JSON for the record."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from core.fileio import atomic_write_text


@dataclass
class Result:
    """One measured figure. ``target`` is a readable condition ("<= 0.75"); ``met`` is None for a figure that is
    reported without a target."""

    name: str
    value: float
    unit: str
    target: str | None = None
    met: bool | None = None
    detail: str = ""

    @classmethod
    def at_most(cls, name: str, value: float, unit: str, limit: float, detail: str = "") -> Result:
        return cls(name, value, unit, f"<= {limit:g}", bool(value <= limit), detail)

    @classmethod
    def at_least(cls, name: str, value: float, unit: str, limit: float, detail: str = "") -> Result:
        return cls(name, value, unit, f">= {limit:g}", bool(value >= limit), detail)


def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": device.type,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def format_value(value: float) -> str:
    if value == 0 or 0.01 <= abs(value) < 10_000:
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return f"{value:.3g}"


def table(results: list[Result]) -> str:
    """A Markdown table: readable on the console and pasteable into the README."""
    lines = ["| figure | value | unit | target | met | how |", "|---|---|---|---|---|---|"]
    for r in results:
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(f"| {r.name} | {format_value(r.value)} | {r.unit} | {r.target or ''} | {met} | {r.detail} |")
    return "\n".join(lines)


def write_json(path: Path, machine: dict[str, Any], settings: dict[str, Any], results: list[Result]) -> None:
    payload = {"machine": machine, "settings": settings, "results": [asdict(r) for r in results]}
    atomic_write_text(Path(path), json.dumps(payload, indent=1) + "\n")
