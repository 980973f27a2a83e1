"""Runs the measurements a plan asks for, prints the table as it goes, and writes the JSON record."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from core.bench import suites
from core.bench.report import Result, machine_info, table, write_json
from core.bench.workloads import Setting
from core.errors import ConfigError

MEASUREMENTS = ("routing", "sharing", "data", "inference", "gate", "compute", "memory")


def make_plan(quick: bool, device: str) -> suites.Plan:
    """CPU: convnext_atto at 512 px in float32 (the targets' setting); CUDA: convnext_tiny at 1024 px in bf16."""
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but torch sees no CUDA device")
        setting = Setting("convnext_tiny", 512 if quick else 1024, 8, torch.device("cuda"), bf16=True)
        return suites.Plan(setting, repeats=3 if quick else 10, data_images=8 if quick else 0, data_workers=4,
                           inference_size=512, tiled_scale=2.0 if quick else None,
                           folder_images=4 if quick else 100, memory_sizes=(512,) if quick else (512, 1024), quick=quick)
    setting = Setting("convnext_atto", 256 if quick else 512, 4 if quick else 8, torch.device("cpu"))
    return suites.Plan(setting, repeats=2 if quick else 5, data_images=4 if quick else 0, data_workers=2,
                       inference_size=256 if quick else 512, tiled_scale=2.0 if quick else None,
                       folder_images=4 if quick else 100, memory_sizes=(256,) if quick else (256, 512, 1024), quick=quick)


def run_benchmark(quick: bool = False, device: str = "cpu", out: Path | None = None, shared: Path | None = None,
                  only: list[str] | None = None) -> list[Result]:
    plan = make_plan(quick, device)
    chosen = [m for m in MEASUREMENTS if only is None or m in only]
    machine = machine_info(plan.setting.device)
    print(f"machine: {json.dumps(machine)}")
    print(f"plan: {'quick' if quick else 'full'}; training workload {plan.setting.describe()}", flush=True)
    results: list[Result] = []
    started = time.perf_counter()
    step_rate = None
    with suites.scratch_folder() as scratch_name:
        scratch = Path(scratch_name)
        for name in chosen:
            t0 = time.perf_counter()
            print(f"-- {name} ...", flush=True)
            if name == "data" and step_rate is None:
                _, step_rate = suites.routing(plan)
            if name == "routing":
                rows, step_rate = suites.routing(plan)
            elif name == "sharing":
                rows = suites.sharing(plan)
            elif name == "data":
                rows = suites.data(plan, step_rate, shared, scratch)
            elif name == "inference":
                rows = suites.inference(plan, shared, scratch)
            elif name == "gate":
                rows = suites.shipped_gate(plan, scratch)
            elif name == "compute":
                rows = suites.efficiency(plan)
            else:
                rows = suites.memory(plan)
            results.extend(rows)
            print(table(rows), f"\n   ({time.perf_counter() - t0:.0f} s)", flush=True)
    total = time.perf_counter() - started
    print(f"\nall figures ({total:.0f} s):\n{table(results)}")
    if out is not None:
        settings = {"quick": quick, "workload": plan.setting.describe(), "repeats": plan.repeats,
                    "seconds": round(total, 1)}
        write_json(out, machine, settings, results)
        print(f"wrote {out}")
    return results
