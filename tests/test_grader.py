"""Grades from lesion evidence: the features, the fit, its file, and its use by training, prediction, evaluation."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml

from builders import FixtureSpec, make_idrid
from core.config import config_from_dict
from core.errors import ConfigError
from core.data.metadata import load_metadata
from core.evaluate.runner import evaluate_run
from core.infer.predictor import Predictor
from core.infer.evidence import FEATURES, EvidenceGrader, fit_grader, lesion_evidence
from core.run.folder import GRADER_FILE
from core.train.trainer import Trainer


def _probs(exudate_at: tuple[int, int] | None, disc_at: tuple[int, int] = (20, 32), size: int = 64) -> np.ndarray:
    probs = np.zeros((5, size, size), np.float32)
    y, x = disc_at
    probs[4, y - 4 : y + 4, x - 4 : x + 4] = 0.9  # the optic disc
    if exudate_at is not None:
        ey, ex = exudate_at
        probs[2, ey : ey + 2, ex : ex + 2] = 0.8  # one hard exudate
    return probs


def test_evidence_counts_lesions_and_places_exudates_against_the_fovea() -> None:
    none, far, near = lesion_evidence(_probs(None)), lesion_evidence(_probs((60, 2))), lesion_evidence(_probs((22, 54)))
    assert none.shape == (len(FEATURES),)
    index = {name: i for i, name in enumerate(FEATURES)}
    assert none[index["EX log components>0.5"]] == 0 and far[index["EX log components>0.5"]] == pytest.approx(np.log(2))
    assert none[index["implied DME 0"]] == 1 and far[index["implied DME 1"]] == 1 and near[index["implied DME 2"]] == 1
    assert near[index["exudate to fovea (disc diameters)"]] < 1 < far[index["exudate to fovea (disc diameters)"]]


def test_fit_learns_a_grade_the_evidence_explains_and_survives_its_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, len(FEATURES)))
    dr = np.digitize(features[:, 3], [-1.0, -0.3, 0.3, 1.0])  # grades 0-4 from one feature, as lesion load would
    dme = (features[:, 7] > 0).astype(int) * 2  # only risks 0 and 2 present: a grade absent is never predicted
    grader = fit_grader(features, dr, dme)
    dr_probs, dme_probs = grader.predict_proba(features)
    assert np.allclose(dr_probs.sum(1), 1) and np.allclose(dme_probs.sum(1), 1)
    assert (dr_probs.argmax(1) == dr).mean() > 0.8 and (dme_probs.argmax(1) == dme).mean() > 0.95
    assert dme_probs[:, 1].max() < 1e-6
    loaded = EvidenceGrader.load(grader.save(tmp_path / GRADER_FILE))
    assert np.allclose(loaded.predict_proba(features[:5])[0], dr_probs[:5])
    (tmp_path / "bad.safetensors").write_bytes(b"not a grader")
    with pytest.raises(ConfigError, match="bad.safetensors is unreadable"):
        EvidenceGrader.load(tmp_path / "bad.safetensors")


def test_the_grader_keeps_the_grades_priors_where_the_evidence_is_silent() -> None:
    """The shipped recipe is unweighted (GRADER_BALANCED): a rare grade the evidence cannot tell apart is not
    predicted for its rarity's sake, as class-balanced weights would (DR 1 is 5% of IDRiD's photographs)."""
    rng = np.random.default_rng(1)
    features = rng.normal(size=(400, len(FEATURES)))
    dr = np.where(rng.random(400) < 0.1, 1, 0)  # grade 1 at random: nothing in the evidence explains it
    dme = (features[:, 0] > 0).astype(int)
    unweighted = fit_grader(features, dr, dme).predict_proba(features)[0].argmax(1)
    balanced = fit_grader(features, dr, dme, balanced=True).predict_proba(features)[0].argmax(1)
    assert (unweighted == 1).mean() < 0.05 < 0.25 < (balanced == 1).mean()


@pytest.mark.slow
def test_training_fits_the_grader_and_prediction_and_evaluation_use_it(tmp_path: Path) -> None:
    root = make_idrid(tmp_path / "data", FixtureSpec(seg={"train": 6}, grading={"train": 30}))
    config = config_from_dict({
        "name": "graded", "data": {"source": "folder", "roots": [str(root)], "image_size": 64,
                                   "cache_dir": str(tmp_path / "cache")},
        "model": {"decoder_channels": [32, 16, 16, 8], "gate_hidden": 16},
        "train": {"epochs": 1, "batch_size": 4, "max_steps": 2, "fit_grader": True},
    })
    Trainer(config, tmp_path / "run", progress_bar=False).fit()
    assert (tmp_path / "run" / "weights" / GRADER_FILE).exists()
    predictor = Predictor.from_run(tmp_path / "run")
    assert predictor.grades_source == "lesion evidence"
    image = next((root / "B. Disease Grading").rglob("*.jpg"))
    prediction = predictor.predict(image, both=True)
    assert prediction.ran == ("segmentation", "classification") and prediction.grades_from == "lesion evidence"
    expected = predictor.grades_from_lesions(prediction.seg_probs)
    assert np.allclose(prediction.dr_probs, expected[0]) and np.allclose(prediction.dme_probs, expected[1])
    heads = Predictor.from_run(tmp_path / "run", use_grader=False).predict(image, both=True)
    assert not np.allclose(heads.dr_probs, prediction.dr_probs)  # the heads' grades are another thing

    # routed for real, at an operating point that sends everything one way: grades from the expert that ran
    for threshold, ran, source, to_decoder in ((1e-6, ("segmentation",), "lesion evidence", 7),
                                               (0.999999, ("classification",), "classification heads", 0)):
        config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
        config.setdefault("infer", {})["gate_threshold"] = threshold
        (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(config))
        routed = Predictor.from_run(tmp_path / "run").predict(image)
        assert routed.ran == ran and routed.grades_from == source
        assert (routed.seg_probs is None) == (source == "classification heads")
        summary = evaluate_run(tmp_path / "run", "val", progress=False)
        assert summary.classification.source == source
        assert summary.routing["to_decoder"] == to_decoder and summary.routing["threshold"] == threshold
        assert summary.routing["grades_if_both"]["source"] == "lesion evidence"
        rows = list(csv.DictReader((tmp_path / "run" / "eval" / "val" / "predictions.csv").open()))
        assert {r["grades_from"] for r in rows} == {source}


@pytest.mark.slow
def test_a_run_trained_on_masks_alone_grades_from_its_lesions(tmp_path: Path) -> None:
    """configs/idrid-long-cpu.yaml: the lesions trained alone (data.tasks: [segmentation]), the grader fitted on the
    source's graded photographs of the same split, and evaluation scoring the grades it gives."""
    root = make_idrid(tmp_path / "data", FixtureSpec(seg={"train": 6}, grading={"train": 30}))
    config = config_from_dict({
        "name": "lesions", "data": {"source": "folder", "roots": [str(root)], "image_size": 64,
                                    "cache_dir": str(tmp_path / "cache"), "tasks": ["segmentation"]},
        "model": {"decoder_channels": [32, 16, 16, 8], "gate_hidden": 16},
        "train": {"epochs": 1, "batch_size": 4, "max_steps": 2, "fit_grader": True},
    })
    Trainer(config, tmp_path / "run", progress_bar=False).fit()
    run = tmp_path / "run"
    assert (run / "weights" / GRADER_FILE).exists()
    report = yaml.safe_load((run / "weights" / "grader.json").read_text())
    trained_split = {s.id: s.split for s in load_metadata(run / "metadata.json").samples}
    assert all(s.dr_grade is None for s in load_metadata(run / "metadata.json").samples)  # masks only, as trained
    assert report["n_train"] >= 10 and report["val"]["n"] >= 1

    predictor = Predictor.from_run(run)
    assert predictor.only_task == "segmentation" and predictor.grades_source == "lesion evidence"
    image = next((root / "B. Disease Grading").rglob("*.jpg"))
    prediction = predictor.predict(image)
    assert prediction.ran == ("segmentation",) and prediction.grades_from == "lesion evidence"
    assert prediction.dr_probs is not None and prediction.dr_probs.sum() == pytest.approx(1.0, abs=1e-5)

    summary = evaluate_run(run, "val", progress=False)
    assert summary.classification is not None and summary.classification.source == "lesion evidence"
    assert summary.classification.dr.n == report["val"]["n"]
    assert summary.classification.dr.accuracy == pytest.approx(report["val"]["dr_accuracy"])
    assert summary.segmentation is not None
    rows = list(csv.DictReader((run / "eval" / "val" / "predictions.csv").open()))
    graded = [r for r in rows if r["dr_true"]]
    assert graded and all(trained_split.get(r["id"], "val") == "val" for r in rows)


def test_the_grader_is_fitted_on_the_maps_it_is_applied_to(tiny_run: Path) -> None:
    """With test-time flips, prediction and evaluation grade flip-averaged maps: the fit must read the same maps
    (it once read plain sigmoid maps, and the grader met another kind of evidence than it had learned from)."""
    import yaml

    from core.data.metadata import load_metadata
    from core.train.grader import collect_evidence

    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    config["infer"] = {"tta": "flips"}
    (tiny_run / "config.yaml").write_text(yaml.safe_dump(config))
    predictor = Predictor.from_run(tiny_run, use_grader=False)
    samples = load_metadata(tiny_run / "metadata.json").split("test")[:4]
    fitted_on = collect_evidence(predictor, samples, progress=False)
    applied_to = np.stack([lesion_evidence(predictor.predict(s.image, both=True).seg_probs) for s in samples])
    assert np.allclose(fitted_on, applied_to, atol=1e-4)
    plain = Predictor.from_run(tiny_run, use_grader=False)
    plain.config.infer.tta = "none"
    unflipped = np.stack([lesion_evidence(plain.predict(s.image, both=True).seg_probs) for s in samples])
    assert not np.allclose(unflipped, applied_to, atol=1e-4)  # the flips change the evidence: the check can fail


def test_grader_cross_validation_scores_every_graded_photograph_once(tiny_run: Path, capsys) -> None:
    import json

    from core.__main__ import main
    from core.train.grader import cross_validate_grader

    report = cross_validate_grader(tiny_run, folds=2, progress=False)
    assert report["n_scored"] + report["n_fit_only"] == report["n_graded"] >= 4
    assert [r["fold"] for r in report["per_fold"]] == [0, 1]
    assert sum(r["n"] for r in report["per_fold"]) == report["n_scored"]  # each scored once, by a grader without it
    accuracies = [r["dr_accuracy"] for r in report["per_fold"]]
    assert report["summary"]["dr_accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
    assert report["summary"]["dr_accuracy"]["sd"] == pytest.approx(np.std(accuracies, ddof=1))
    assert all(0.0 <= r["dme_accuracy"] <= 1.0 for r in report["per_fold"])
    written = json.loads((tiny_run / "eval" / "grader-cv.json").read_text())
    assert written["summary"] == report["summary"]
    assert not (tiny_run / "weights" / GRADER_FILE).exists()  # cross-validation fits no grader of the run

    assert main(["fit-grader", "--run", str(tiny_run), "--cv", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 folds of" in out and "dr_kappa" in out and "+-" in out
