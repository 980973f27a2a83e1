"""Evaluation from Python and the CLI: files written, metrics consistent with the per-sample table, gallery."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import DataError, StudioError
from core.evaluate.gallery import gallery
from core.data.layout import LESIONS
from core.evaluate.runner import evaluate_run
from core.run.folder import mask_file
from core.run.summary import EvalSummary

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def evaluated(tiny_run_module: Path) -> EvalSummary:
    """One evaluation read by several tests; they only read the module's own copy of the run."""
    return evaluate_run(tiny_run_module, "test", progress=False)


def _rows(run: Path, split: str = "test") -> list[dict[str, str]]:
    with open(run / "eval" / split / "predictions.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_writes_every_file(tiny_run_module: Path, evaluated: EvalSummary) -> None:
    folder = tiny_run_module / "eval" / "test"
    assert json.loads((folder / "summary.json").read_text())["n"] == 10
    curves = json.loads((folder / "curves.json").read_text())
    assert set(curves) == {"MA", "HE", "EX", "SE", "OD"} and "precision" in curves["OD"]
    rows = _rows(tiny_run_module)
    assert len(rows) == 10 and {"id", "task", "route", "misrouted", "dr_pred", "dice_OD", "gate_p_segmentation"} <= set(rows[0])
    assert len(list((folder / "masks").glob("*.png"))) == 10 * 5


def test_metrics_agree_with_the_per_sample_table(tiny_run_module: Path, evaluated: EvalSummary) -> None:
    rows = _rows(tiny_run_module)
    graded = [r for r in rows if r["dr_true"]]
    accuracy = np.mean([r["dr_true"] == r["dr_pred"] for r in graded])
    assert evaluated.classification.dr.accuracy == pytest.approx(accuracy)
    joint = np.mean([r["dr_true"] == r["dr_pred"] and r["dme_true"] == r["dme_pred"] for r in graded])
    assert evaluated.classification.joint_accuracy == pytest.approx(joint)
    misrouted = [r["id"] for r in rows if r["misrouted"] == "True"]
    assert sorted(m["id"] for m in evaluated.gate.misrouted_samples) == sorted(misrouted)
    assert evaluated.gate.accuracy == pytest.approx(1 - len(misrouted) / len(rows))
    assert sum(map(sum, evaluated.gate.confusion_matrix)) == 10
    assert evaluated.n_segmentation == 4 and evaluated.n_classification == 6
    for code, values in evaluated.segmentation.lesions.items():
        assert values.aupr is None or 0 <= values.aupr <= 1, code
    assert evaluated.resolution == "model canvas 64 px"


def test_full_resolution_scores_at_the_original_size(tiny_run: Path) -> None:
    summary = evaluate_run(tiny_run, "test", full_res=True, progress=False)
    assert summary.resolution == "original image size"
    od = summary.segmentation.lesions["OD"]
    assert od.pixels == 4 * 96 * 64  # four 96x64 test images, every pixel counted once


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


def test_gallery_draw_is_seeded_and_filterable(tiny_run_module: Path, evaluated: EvalSummary) -> None:
    from core.data.metadata import load_metadata

    metadata = load_metadata(tiny_run_module / "metadata.json")
    first = gallery(tiny_run_module, "test", n=20, seed=3, metadata=metadata)
    assert len(first) == 10  # fewer samples than tiles: all of them
    assert [t.id for t in gallery(tiny_run_module, "test", n=4, seed=3)] == [t.id for t in gallery(tiny_run_module, "test", n=4, seed=3)]
    assert [t.id for t in gallery(tiny_run_module, "test", n=4, seed=3)] != [t.id for t in gallery(tiny_run_module, "test", n=4, seed=4)]
    assert all(t.image is not None and t.image.exists() for t in first)
    assert all(t.masks["OD"].exists() for t in first)
    only = gallery(tiny_run_module, "test", n=20, seed=0, misrouted_only=True)
    assert all(t.misrouted for t in only) and len(only) == len(evaluated.gate.misrouted_samples)
    with pytest.raises(DataError, match="no evaluation of the val split"):
        gallery(tiny_run_module, "val")


def test_predict_cli_writes_masks_and_rows(tiny_run: Path, tmp_path: Path) -> None:
    from builders import fundus, write_image

    folder = tmp_path / "in"
    write_image(folder / "a.jpg", fundus(400, 300))
    (folder / "broken.jpg").write_bytes(b"nope")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "core", "predict", "--run", str(tiny_run), "--input", str(folder),
                             "--out", str(out), "--both"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 3, result.stderr[-2000:]  # some failed: neither success (0) nor nothing done (1)
    assert "predicted 1 image(s), 1 failed" in result.stdout and "images/s" in result.stdout
    with open(out / "predictions.csv", newline="") as handle:
        rows = {Path(r["image"]).name: r for r in csv.DictReader(handle)}
    assert "not an image file" in rows["broken.jpg"]["error"] and rows["a.jpg"]["error"] == ""
    from PIL import Image
    assert Image.open(out / "masks" / "a_OD.png").size == (400, 300)
    assert Image.open(out / "masks" / "a_OD.png").mode == "1"  # a mask is one bit a pixel


def test_predict_cli_exit_status_says_whether_all_none_or_some_failed(tiny_run: Path, tmp_path: Path) -> None:
    from builders import fundus, write_image

    good, bad = tmp_path / "good", tmp_path / "bad"
    write_image(good / "a.jpg", fundus(400, 300))
    bad.mkdir()
    (bad / "broken.jpg").write_bytes(b"nope")

    def predict(folder: Path, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "core", "predict", "--run", str(tiny_run), "--input",
                               str(folder), "--out", str(tmp_path / folder.name / "out"), *extra], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)

    assert predict(good, "--masks", "none").returncode == 0
    assert not (tmp_path / "good" / "out" / "masks").exists()  # --masks none: the table only
    failed = predict(bad)
    assert failed.returncode == 1 and "predicted 0 image(s), 1 failed" in failed.stdout
    assert "not an image file" in failed.stdout


def test_folder_prediction_writes_masks_at_the_size_asked_in_file_order(tiny_run: Path, tmp_path: Path) -> None:
    """Batches of two over five files, one unreadable in the middle: rows stay in file order and every readable
    photograph gets its masks, at the model's canvas (its content, padding cut off) when asked."""
    from builders import fundus, write_image
    from PIL import Image

    from core.infer.batch import predict_paths
    from core.infer.predictor import Predictor

    folder = tmp_path / "in"
    for index, (width, height) in enumerate([(400, 300), (300, 400), (500, 300), (420, 420)]):
        write_image(folder / f"{index * 2}.png", fundus(width, height, seed=index))
    (folder / "1.jpg").write_bytes(b"nope")
    predictor = Predictor.from_run(tiny_run)
    rows = predict_paths(predictor, folder, tmp_path / "out", both=True, progress=False, batch_size=2,
                         masks="canvas")
    assert [Path(r["image"]).name for r in rows] == ["0.png", "1.jpg", "2.png", "4.png", "6.png"]
    assert rows[1]["error"] and all(not r["error"] for r in rows[:1] + rows[2:])
    for row in rows[:1] + rows[2:]:
        single = predictor.predict(row["image"], both=True)
        width, height = single.geometry.content
        mask = Image.open(tmp_path / "out" / "masks" / f"{Path(row['image']).stem}_OD.png")
        assert mask.size == (width, height)
        expected = single.content_probs()[4] >= 0.5
        assert (np.asarray(mask, dtype=bool) != expected).mean() < 0.001  # batched forward: float rounding only
        assert int(row["OD_count"]) == single.report()["lesions"]["OD"]["count"]
    with pytest.raises(StudioError, match="masks must be one of"):
        predict_paths(predictor, folder, tmp_path / "out2", masks="full")


def _k255_maps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace the lesion maps by seeded random ones on the 0-255 grid: a PNG stores them exactly and no two fall
    in one of the accumulator's 1000 bins, so AUPR recomputed from the saved files must match to rounding."""
    from core.infer.predictor import Predictor

    generator = torch.Generator().manual_seed(0)

    def lesion_probs(self, images: torch.Tensor, seg_logits: torch.Tensor) -> torch.Tensor:
        shape = (images.shape[0], seg_logits.shape[1], *images.shape[2:])
        return torch.randint(0, 256, shape, generator=generator).float() / 255.0

    monkeypatch.setattr(Predictor, "lesion_probs", lesion_probs)


def _own_truth(sample, geometry) -> np.ndarray:
    """Each lesion's canvas truth read from its own mask file, by code, without the dataset or the runner."""
    from core.data.imageio import read_mask
    from core.data.preprocess import reduce_mask

    height, width = geometry.canvas[1], geometry.canvas[0]
    return np.stack([reduce_mask(read_mask(sample.masks[code]), geometry) if sample.masks.get(code)
                     else np.zeros((height, width), bool) for code in LESIONS])


def test_each_lesion_is_scored_against_its_own_truth(tiny_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.metrics import average_precision_score

    from core.data.cache import compute
    from core.data.metadata import load_metadata
    from core.infer.predictor import Predictor

    _k255_maps(monkeypatch)
    summary = evaluate_run(tiny_run, "test", progress=False)
    folder = tiny_run / "eval" / "test"
    rows = {r["id"]: r for r in _rows(tiny_run)}
    preprocess = Predictor.from_run(tiny_run).preprocess
    segmented = [s for s in load_metadata(tiny_run / "metadata.json").split("test") if s.masks is not None]
    assert len(segmented) == 4
    probs: dict[str, list[np.ndarray]] = {code: [] for code in LESIONS}
    truth: dict[str, list[np.ndarray]] = {code: [] for code in LESIONS}
    for sample in segmented:
        own = _own_truth(sample, compute(sample.image, None, preprocess).geometry)
        for channel, code in enumerate(LESIONS):
            saved = np.asarray(Image.open(mask_file(folder, sample.id, code)), dtype=np.float64) / 255.0
            predicted, actual = saved >= 0.5, own[channel]
            dice = 2 * (predicted & actual).sum() / (predicted.sum() + actual.sum())
            assert float(rows[sample.id][f"dice_{code}"]) == pytest.approx(dice, abs=1e-5), (sample.id, code)
            probs[code].append(saved.reshape(-1))
            truth[code].append(actual.reshape(-1))
    for code in LESIONS:
        p, t = np.concatenate(probs[code]), np.concatenate(truth[code])
        scored = summary.segmentation.lesions[code]
        assert scored.positive_pixels == int(t.sum()), code
        assert scored.dice == pytest.approx(2 * ((p >= 0.5) & t).sum() / ((p >= 0.5).sum() + t.sum()), abs=1e-9)
        assert scored.aupr == pytest.approx(average_precision_score(t, p), abs=1e-9), code
    counts = [summary.segmentation.lesions[code].positive_pixels for code in LESIONS]
    assert len(set(counts)) > 1  # lesions of different sizes: a swap of channels cannot go unseen


def test_full_resolution_truth_is_each_lesions_own_file(tiny_run: Path) -> None:
    from core.data.imageio import read_mask
    from core.data.metadata import load_metadata

    summary = evaluate_run(tiny_run, "test", full_res=True, progress=False)
    segmented = [s for s in load_metadata(tiny_run / "metadata.json").split("test") if s.masks is not None]
    for code in LESIONS:
        expected = sum(int(read_mask(s.masks[code]).sum()) for s in segmented if s.masks.get(code))
        assert summary.segmentation.lesions[code].positive_pixels == expected, code


def test_each_row_and_the_gate_summary_follow_from_the_gate_and_the_sample(tiny_run: Path) -> None:
    """Route, misrouting, task and predicted grades recomputed here from the row's probabilities and the sample's
    own task vector in the metadata: not the summary against the table both were written from."""
    from core.data.metadata import load_metadata

    summary = evaluate_run(tiny_run, "test", progress=False)
    samples = {s.id: s for s in load_metadata(tiny_run / "metadata.json").split("test")}
    rows = _rows(tiny_run)
    assert summary.split == "test" and summary.weights == "best" and len(rows) == len(samples) == 10
    misrouted = 0
    for row in rows:
        sample = samples[row["id"]]
        gate = np.array([float(row["gate_p_segmentation"]), float(row["gate_p_classification"])])
        assert gate.sum() == pytest.approx(1, abs=1e-4)
        route = int(np.argmax(gate))
        assert row["route"] == ("segmentation", "classification")[route]
        assert float(row["gate_confidence"]) == pytest.approx(gate.max(), abs=1e-5)
        wrong = sample.task_vector[route] == 0
        assert row["misrouted"] == str(bool(wrong)), row["id"]
        misrouted += wrong
        assert row["task"] == ("both" if all(sample.task_vector) else sample.task)
        for head, classes in (("dr", 5), ("dme", 3)):
            probs = [float(row[f"{head}_p{k}"]) for k in range(classes)]
            assert sum(probs) == pytest.approx(1, abs=1e-4) and int(row[f"{head}_pred"]) == int(np.argmax(probs))
    assert 0 < misrouted < len(rows) or summary.gate.misrouted == misrouted  # both kinds seen, or said so
    assert summary.gate.misrouted == misrouted
    assert summary.gate.accuracy == pytest.approx(1 - misrouted / len(rows))
    graded_only = [r for r in rows if samples[r["id"]].task == "classification" and all(samples[r["id"]].task_vector) is False]
    by_grade: dict[str, list[bool]] = {}
    for row in graded_only:
        by_grade.setdefault(str(samples[row["id"]].dr_grade), []).append(row["misrouted"] == "False")
    assert summary.gate.accuracy_by_dr_grade == {
        grade: {"n": len(hits), "accuracy": sum(hits) / len(hits)} for grade, hits in sorted(by_grade.items())}
    truth = [samples[r["id"]].dr_grade for r in rows if samples[r["id"]].dr_grade is not None]
    predicted = [int(r["dr_pred"]) for r in rows if samples[r["id"]].dr_grade is not None]
    assert summary.classification.dr.n == len(truth) == 6
    assert summary.classification.dr.accuracy == pytest.approx(np.mean(np.array(truth) == np.array(predicted)))
