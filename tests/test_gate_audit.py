"""The gate's shortcut check and its per-grade accuracy: does the gate decide on content or on a file's history?"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from core.data.metadata import load_metadata
from core.evaluate.gate_audit import audit_gate, degrade_like_grading, summarise_audit
from core.infer.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]


def test_degradation_is_a_4x_box_average_then_jpeg_92() -> None:
    # A smooth gradient under a one-pixel checkerboard of +-40: a box average removes the checkerboard exactly,
    # a subsampling keeps +40 everywhere.
    yy, xx = np.mgrid[0:300, 0:400]
    base = np.stack([60 + xx * 0.3, 80 + yy * 0.3, np.full_like(xx, 100.0)], axis=-1)
    checker = np.where((yy + xx) % 2 == 0, 40.0, -40.0)[..., None]
    rgb = np.clip(base + checker, 0, 255).astype(np.uint8)
    data = degrade_like_grading(rgb)
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG" and image.size == (100, 75)
        out = np.asarray(image.convert("RGB"), dtype=np.float64)
    box = rgb.reshape(75, 4, 100, 4, 3).astype(np.float64).mean(axis=(1, 3))
    assert np.abs(out - box).mean() < 2.0
    assert np.abs(out - rgb[::4, ::4]).mean() > 30.0  # an average, not a subsampling


def _row(before: float, after: float) -> dict:
    route = lambda p: "segmentation" if p > 0.5 else "classification"  # noqa: E731
    return {"id": "x", "task": "segmentation", "size": [8, 8], "p_segmentation": before,
            "p_segmentation_degraded": after, "route": route(before), "route_degraded": route(after)}


def test_audit_passes_only_without_flips_and_small_shifts() -> None:
    assert summarise_audit([_row(0.9, 0.88), _row(0.7, 0.75)])["passed"]
    flipped = summarise_audit([_row(0.9, 0.88), _row(0.7, 0.3)])
    assert not flipped["passed"] and flipped["route_flips"] == 1
    assert flipped["routed_segmentation"] == 2 and flipped["routed_segmentation_degraded"] == 1
    drift = summarise_audit([_row(0.95, 0.75), _row(0.9, 0.7)])  # no flip, but the file's history moves the gate
    assert not drift["passed"] and drift["mean_shift_p_segmentation"] == -0.2
    assert not summarise_audit([])["passed"]


def test_audit_asks_the_gate_on_each_photograph_with_masks(tiny_run: Path) -> None:
    predictor = Predictor.from_run(tiny_run)
    samples = load_metadata(tiny_run / "metadata.json").split("test")
    report = audit_gate(predictor, samples, progress=False)
    assert report["n"] == sum(s.masks is not None for s in samples) > 0
    first = next(s for s in samples if s.masks is not None)
    row = report["samples"][0]
    assert row["id"] == first.id
    # the gate alone gives what a full prediction's gate gives, on the file as it is
    expected = predictor.predict(first.image).gate_probs[0]
    assert row["p_segmentation"] == round(float(expected), 4)
    assert all(0.0 <= r["p_segmentation_degraded"] <= 1.0 for r in report["samples"])


def test_evaluate_reports_the_check_and_the_gate_by_grade(tiny_run: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "core", "evaluate", "--run", str(tiny_run), "--split", "test",
                             "--gate-audit"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "shortcut check (4x4 box average, JPEG quality 92)" in result.stdout
    assert "gate on graded-only photographs by DR grade" in result.stdout
    summary = json.loads((tiny_run / "eval" / "test" / "summary.json").read_text())
    by_grade = summary["gate"]["accuracy_by_dr_grade"]
    graded = [s for s in load_metadata(tiny_run / "metadata.json").split("test") if s.dr_grade is not None]
    assert sum(v["n"] for v in by_grade.values()) == len(graded)
    assert summary["gate"]["shortcut_check"]["n"] > 0
