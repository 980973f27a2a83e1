"""The benchmark: its parts compute what they claim, and ``--quick`` runs end to end (a smoke test: speed itself
is never asserted, only that every figure was measured and recorded)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.bench.report import Result, table
from core.bench.timing import interleaved_medians
from core.bench.workloads import (ClassifierOnly, Setting, UnetOnly, gated_model, mixed_batch, steer_gate,
                                  train_step)

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def test_targets_compare_in_the_stated_direction() -> None:
    assert Result.at_most("r", 0.7, "ratio", 0.75).met is True
    assert Result.at_most("r", 0.8, "ratio", 0.75).met is False
    assert Result.at_least("r", 12.0, "ratio", 10).met is True
    assert Result.at_least("r", 9.9, "ratio", 10).met is False
    assert Result("r", 1.0, "s").met is None
    text = table([Result.at_most("routing", 0.8, "ratio", 0.75, "how"), Result("plain", 3.0, "s")])
    assert "| routing | 0.8 | ratio | <= 0.75 | **no** | how |" in text
    assert "| plain | 3 | s |  |  |  |" in text


def test_mixed_batch_is_half_segmentation_half_grading() -> None:
    batch = mixed_batch(Setting("convnext_atto", 32, 6, CPU))
    assert batch["task"].tolist() == [0, 0, 0, 1, 1, 1]
    assert batch["mask_valid"].tolist() == [True] * 3 + [False] * 3
    assert int(batch["mask"][3:].sum()) == 0 and int(batch["mask"][:3].sum()) > 0
    assert (batch["dr"][:3] == -100).all() and (batch["dr"][3:] >= 0).all()
    assert batch["image"].is_contiguous(memory_format=torch.channels_last)


def test_steered_gate_routes_each_sample_to_its_task_and_still_learns() -> None:
    setting = Setting("convnext_atto", 64, 4, CPU)
    batch = mixed_batch(setting)
    model = gated_model(setting)
    handle = steer_gate(model, batch["task"])
    output = model(batch["image"], route="gate")
    assert output.seg_index.tolist() == [0, 1] and output.cls_index.tolist() == [2, 3]
    before = [p.detach().clone() for p in model.gate.parameters()]
    train_step(model, setting, batch, "gate")()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.gate.parameters()))  # gradient reached the gate
    handle.remove()


def test_single_task_rivals_have_the_multi_task_parts() -> None:
    setting = Setting("convnext_atto", 64, 2, CPU)
    full = gated_model(setting).num_parameters()
    unet = sum(p.numel() for p in UnetOnly("convnext_atto").parameters())
    classifier = sum(p.numel() for p in ClassifierOnly("convnext_atto").parameters())
    assert unet == full["backbone"] + full["decoder"]
    assert classifier == full["backbone"] + full["classifier"]
    images = mixed_batch(setting)["image"]
    assert UnetOnly("convnext_atto")(images).shape == (2, 5, 64, 64)
    dr, dme = ClassifierOnly("convnext_atto")(images)
    assert dr.shape == (2, 5) and dme.shape == (2, 3)


def test_interleaved_medians_time_each_workload() -> None:
    calls = {"a": 0, "b": 0}

    def work(name: str, n: int):
        def run() -> None:
            calls[name] += 1
            sum(range(n))
        return run

    times = interleaved_medians({"a": work("a", 10), "b": work("b", 200_000)}, CPU, repeats=3, warmup=1)
    assert calls == {"a": 4, "b": 4}
    assert times["b"] > times["a"] > 0


def test_memory_probe_reports_a_larger_peak_for_a_larger_step() -> None:
    def probe(size: int) -> tuple[float, float]:
        out = subprocess.run([sys.executable, "-m", "core.bench.probe", "train", "convnext_atto", str(size), "2",
                              "cpu", "fp32"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        peak, before = map(float, out.split())
        return peak, before

    small, large = probe(64), probe(256)
    assert small[0] >= small[1] > 0
    assert large[0] - large[1] > small[0] - small[1]  # 16x the pixels: the step needs more memory


@pytest.mark.slow
def test_quick_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "core", "bench", "--quick", "--out", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["machine"]["device"] == "cpu" and record["machine"]["torch_threads"] >= 1
    names = [r["name"] for r in record["results"]]
    for prefix in ("routing:", "sharing:", "data:", "inference:", "gate:", "compute:", "memory:"):
        assert any(n.startswith(prefix) for n in names), f"no {prefix} figure in {names}"
    targeted = [r["name"].split(":")[0] for r in record["results"] if r["target"]]
    # routing, sharing, data (the cached loader against the step), inference (one photograph, a folder), the
    # shipped gate (routed against both experts), compute; memory has no target
    assert sorted(targeted) == ["compute", "data", "gate", "inference", "inference", "routing", "sharing"], targeted
    share = next(r for r in record["results"] if r["name"] == "gate: share sent to the lesion decoder")
    assert 0 <= share["value"] <= 1
    compute = next(r for r in record["results"] if r["name"].startswith("compute:"))
    kernels = [r for r in record["results"] if r["name"].startswith("kernel: ")]
    assert len(kernels) >= 3 and sum(r["detail"] == "the limit" for r in kernels) == 1
    limit = next(r for r in kernels if r["detail"] == "the limit")
    assert limit["value"] == max(r["value"] for r in kernels)
    assert limit["name"].removeprefix("kernel: ").rsplit(" ", 1)[0] in compute["detail"]  # names what set it
    assert any(r["name"] == "data: raw loading / training step" for r in record["results"])
    for row in record["results"]:  # a share may be 0 (a gate that sends every photograph to classification)
        assert math.isfinite(row["value"]) and (row["value"] > 0 or row["name"] == share["name"]), row
        assert (row["met"] is None) == (row["target"] is None), row
    assert "| routing: routed step / both-heads step |" in result.stdout


def test_theoretical_peak_reads_vector_width_and_clock() -> None:
    from core.bench.peak import theoretical_peak, vector_lanes

    assert vector_lanes({"avx512f", "avx2", "fma"}) == 16 and vector_lanes({"avx2", "fma"}) == 8
    assert vector_lanes({"sse4_2"}) is None
    cpuinfo = "processor\t: 0\ncpu MHz\t\t: 2500.000\nflags\t\t: fpu sse avx2 fma\n"
    peak, how = theoretical_peak(2, cpuinfo)
    assert peak == pytest.approx(2 * 2.5e9 * 8 * 2 * 2) and "8 float32 lanes" in how and "assumed" in how
    assert theoretical_peak(2, "flags : avx2 fma\n") is None  # no clock: no estimate
    assert theoretical_peak(2, "cpu MHz : 2500\nflags : sse2\n") is None  # no FMA vector unit it can name


def test_reference_kernels_are_timed_with_their_own_flop_counts() -> None:
    from core.bench.peak import Kernel, measure_kernels, reference_kernels

    kernels = reference_kernels(torch.device("cpu"), torch.float32, quick=True)
    names = [k.name for k in kernels]
    assert any(n.startswith("matmul") for n in names) and any("1x1 convolution" in n for n in names)
    assert kernels[0].flops == 2.0 * 1024**3
    calls = []
    measured = measure_kernels([Kernel("sleep", 1e6, lambda: calls.append(time.sleep(0.01)))], torch.device("cpu"), 3)
    assert len(calls) == 4  # a warm-up, then the timed runs
    assert 0 < measured[0][1] <= 1e8  # 1e6 FLOP in 10 ms or more: its own count over its own time
