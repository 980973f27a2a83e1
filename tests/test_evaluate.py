"""Evaluation from Python and the CLI: files written, metrics consistent with the per-sample table, gallery."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.errors import DataError
from core.evaluate.gallery import gallery
from core.evaluate.runner import evaluate_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def evaluated(tiny_run: Path) -> dict:
    return evaluate_run(tiny_run, "test", progress=False)


def _rows(run: Path, split: str = "test") -> list[dict[str, str]]:
    with open(run / "eval" / split / "predictions.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_writes_every_file(tiny_run: Path, evaluated: dict) -> None:
    folder = tiny_run / "eval" / "test"
    assert json.loads((folder / "summary.json").read_text())["n"] == 10
    curves = json.loads((folder / "curves.json").read_text())
    assert set(curves) == {"MA", "HE", "EX", "SE", "OD"} and "precision" in curves["OD"]
    rows = _rows(tiny_run)
    assert len(rows) == 10 and {"id", "task", "route", "misrouted", "dr_pred", "dice_OD", "gate_p_segmentation"} <= set(rows[0])
    assert len(list((folder / "masks").glob("*.png"))) == 10 * 5


def test_metrics_agree_with_the_per_sample_table(tiny_run: Path, evaluated: dict) -> None:
    rows = _rows(tiny_run)
    graded = [r for r in rows if r["dr_true"]]
    accuracy = np.mean([r["dr_true"] == r["dr_pred"] for r in graded])
    assert evaluated["classification"]["dr"]["accuracy"] == pytest.approx(accuracy)
    joint = np.mean([r["dr_true"] == r["dr_pred"] and r["dme_true"] == r["dme_pred"] for r in graded])
    assert evaluated["classification"]["joint_accuracy"] == pytest.approx(joint)
    misrouted = [r["id"] for r in rows if r["misrouted"] == "True"]
    assert sorted(m["id"] for m in evaluated["gate"]["misrouted_samples"]) == sorted(misrouted)
    assert evaluated["gate"]["accuracy"] == pytest.approx(1 - len(misrouted) / len(rows))
    assert sum(map(sum, evaluated["gate"]["confusion_matrix"])) == 10
    assert evaluated["n_segmentation"] == 4 and evaluated["n_classification"] == 6
    for code, values in evaluated["segmentation"]["lesions"].items():
        assert values["aupr"] is None or 0 <= values["aupr"] <= 1, code
    assert evaluated["resolution"] == "model canvas 64 px"


def test_full_resolution_scores_at_the_original_size(tiny_run: Path) -> None:
    summary = evaluate_run(tiny_run, "test", full_res=True, progress=False)
    assert summary["resolution"] == "original image size"
    od = summary["segmentation"]["lesions"]["OD"]
    assert od["pixels"] == 4 * 96 * 64  # four 96x64 test images, every pixel counted once


def test_empty_split_is_explained(tiny_run: Path, tmp_path: Path) -> None:
    from core.data.metadata import load_metadata, write_metadata

    document = load_metadata(tiny_run / "metadata.json").raw
    document = {**document, "samples": [s for s in document["samples"] if s["split"] != "val"]}
    path = write_metadata(document, tmp_path / "m.json")
    with pytest.raises(DataError, match="val split of this dataset is empty"):
        evaluate_run(tiny_run, "val", data=path, progress=False)


def test_cli_prints_a_summary(tiny_run: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "core", "evaluate", "--run", str(tiny_run), "--split", "test"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "gate accuracy" in result.stdout and "DR accuracy" in result.stdout and "OD: dice" in result.stdout


def test_gallery_draw_is_seeded_and_filterable(tiny_run: Path, evaluated: dict) -> None:
    from core.data.metadata import load_metadata

    metadata = load_metadata(tiny_run / "metadata.json")
    first = gallery(tiny_run, "test", n=20, seed=3, metadata=metadata)
    assert len(first) == 10  # fewer samples than tiles: all of them
    assert [t.id for t in gallery(tiny_run, "test", n=4, seed=3)] == [t.id for t in gallery(tiny_run, "test", n=4, seed=3)]
    assert [t.id for t in gallery(tiny_run, "test", n=4, seed=3)] != [t.id for t in gallery(tiny_run, "test", n=4, seed=4)]
    assert all(t.image is not None and t.image.exists() for t in first)
    assert all(t.masks["OD"].exists() for t in first)
    only = gallery(tiny_run, "test", n=20, seed=0, misrouted_only=True)
    assert all(t.misrouted for t in only) and len(only) == len(evaluated["gate"]["misrouted_samples"])
    with pytest.raises(DataError, match="no evaluation of the val split"):
        gallery(tiny_run, "val")


def test_predict_cli_writes_masks_and_rows(tiny_run: Path, tmp_path: Path) -> None:
    from builders import fundus, write_image

    folder = tmp_path / "in"
    write_image(folder / "a.jpg", fundus(400, 300))
    (folder / "broken.jpg").write_bytes(b"nope")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "core", "predict", "--run", str(tiny_run), "--input", str(folder),
                             "--out", str(out), "--both"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "predicted 1 image(s), 1 failed" in result.stdout
    with open(out / "predictions.csv", newline="") as handle:
        rows = {Path(r["image"]).name: r for r in csv.DictReader(handle)}
    assert "not an image file" in rows["broken.jpg"]["error"] and rows["a.jpg"]["error"] == ""
    from PIL import Image
    assert Image.open(out / "masks" / "a_OD.png").size == (400, 300)
