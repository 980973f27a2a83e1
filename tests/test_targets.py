"""The gate's target (core.data.targets) on literal samples, and what training and evaluation do with it."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from core.data.metadata import Sample
from core.data.targets import gate_vector, is_referable, target_shares
from core.evaluate.runner import evaluate_run, misrouting_kind

MASK = Path("m.tif")


def _sample(dr: int | None = None, dme: int | None = None, lesions: tuple[str, ...] | None = None) -> Sample:
    masks = None if lesions is None else {code: (MASK if code in lesions else None)
                                          for code in ("MA", "HE", "EX", "SE", "OD")}
    vector = (int(masks is not None), int(dr is not None))
    task = "segmentation" if vector == (1, 0) else "classification"
    return Sample("x", "train", task, vector, Path("x.jpg"), masks, dr, dme, 1.0)


@pytest.mark.parametrize(("sample", "referable"), [
    (_sample(dr=0, dme=0), False),
    (_sample(dr=1, dme=0), False),  # microaneurysms only: mild
    (_sample(dr=2, dme=0), True),
    (_sample(dr=4, dme=2), True),
    (_sample(dr=1, dme=1), True),  # DME risk alone makes it referable
    (_sample(lesions=("MA", "OD")), False),  # masks only, microaneurysms and the disc
    (_sample(lesions=("MA", "HE", "OD")), True),
    (_sample(lesions=("EX", "OD")), True),
    (_sample(lesions=("SE",)), True),
    (_sample(dr=0, dme=0, lesions=("OD",)), False),
    (_sample(dr=1, dme=0, lesions=("EX", "OD")), True),  # its masks show exudates: the masks win over a mild grade
    (_sample(), None),  # nothing known
])
def test_referable_is_more_than_mild_dr_by_any_label(sample: Sample, referable: bool | None) -> None:
    assert is_referable(sample) is referable
    expected = {True: (1, 0), False: (0, 1), None: (0, 0)}[referable]
    assert gate_vector(sample, "referable") == expected
    assert gate_vector(sample, "task") == sample.task_vector


def test_shares_count_each_target() -> None:
    samples = [_sample(dr=0, dme=0), _sample(dr=3, dme=2), _sample(lesions=("MA",)), _sample(dr=2, dme=0,
                                                                                            lesions=("EX",))]
    assert target_shares(samples, "referable") == {"segmentation": 2, "classification": 2, "either": 0, "none": 0}
    assert target_shares(samples, "task") == {"segmentation": 1, "classification": 2, "either": 1, "none": 0}
    with pytest.raises(ValueError, match="unknown gate target"):
        gate_vector(samples[0], "annotation")


def test_missed_is_the_dangerous_error_and_wasted_the_costly_one() -> None:
    assert misrouting_kind((1, 0), 1) == "missed" and misrouting_kind((0, 1), 0) == "wasted"
    assert misrouting_kind((1, 0), 0) == misrouting_kind((1, 1), 1) == misrouting_kind((0, 0), 1) == ""


def test_evaluation_judges_routing_by_the_runs_gate_target(tiny_run: Path) -> None:
    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    config["model"]["gate_target"] = "referable"
    (tiny_run / "config.yaml").write_text(yaml.safe_dump(config))
    summary = evaluate_run(tiny_run, "test", progress=False)
    with open(tiny_run / "eval" / "test" / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert summary.gate.target == "referable"
    assert {r["gate_target"] for r in rows} <= {"segmentation", "classification", "none"}
    for row in rows:
        wanted = row["gate_target"]
        kind = "" if wanted in ("none", row["route"]) else ("missed" if wanted == "segmentation" else "wasted")
        assert row["misrouted_kind"] == kind and (row["misrouted"] == "True") == bool(kind), row
    assert summary.gate.missed == sum(r["misrouted_kind"] == "missed" for r in rows)
    assert summary.gate.wasted == sum(r["misrouted_kind"] == "wasted" for r in rows)
    assert summary.gate.misrouted == summary.gate.missed + summary.gate.wasted
    assert summary.gate.n == sum(r["gate_target"] != "none" for r in rows)


@pytest.mark.slow
def test_training_teaches_the_gate_the_referable_target(tmp_path: Path) -> None:
    """The dataset hands the loss the gate target; the validation's gate accuracy is judged against it."""
    import torch

    from builders import FixtureSpec, make_idrid
    from core.config import config_from_dict
    from core.data.dataset import IdridDataset, collate
    from core.data.metadata import load_metadata
    from core.data.preprocess import PreprocessConfig
    from core.train.trainer import Trainer

    root = make_idrid(tmp_path / "data", FixtureSpec(seg={"train": 6}, grading={"train": 12}))
    config = config_from_dict({
        "name": "referable", "data": {"source": "folder", "roots": [str(root)], "image_size": 64,
                                      "cache_dir": str(tmp_path / "cache")},
        "model": {"decoder_channels": [32, 16, 16, 8], "gate_hidden": 16, "gate_target": "referable"},
        "train": {"epochs": 1, "batch_size": 4, "max_steps": 2},
    })
    Trainer(config, tmp_path / "run", progress_bar=False).fit()
    samples = load_metadata(tmp_path / "run" / "metadata.json").split("train")
    dataset = IdridDataset(samples, PreprocessConfig(64, 64), (0.5,) * 3, (0.5,) * 3, gate_target="referable")
    batch = collate([dataset[i] for i in range(len(samples))])
    expected = torch.tensor([gate_vector(s, "referable") for s in samples], dtype=torch.float32)
    assert torch.equal(batch["gate_vector"], expected)
    assert not torch.equal(batch["gate_vector"], batch["task_vector"])  # the fixture's targets differ from tasks


def test_referable_figures_match_scikit_learn_and_the_rule() -> None:
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from core.evaluate.metrics import binary_report
    from core.infer.clinical import referable_from_grades

    truth = [True, True, False, False, True]
    scores = [0.9, 0.4, 0.6, 0.1, 0.7]
    report = binary_report(truth, scores)
    assert report["roc_auc"] == pytest.approx(roc_auc_score(truth, scores))
    assert (report["sensitivity"], report["specificity"], report["positives"]) == (pytest.approx(2 / 3), 0.5, 3)
    assert binary_report([True, True], [0.2, 0.9])["roc_auc"] is None  # one class only: AUC undefined
    dr = np.array([[1.0, 0, 0, 0, 0], [0, 0, 1.0, 0, 0], [0.5, 0.5, 0, 0, 0]])
    dme = np.array([[1.0, 0, 0], [1.0, 0, 0], [0.5, 0.5, 0]])
    assert referable_from_grades(dr, dme) == pytest.approx([0.0, 1.0, 0.5])


def test_evaluation_and_prediction_say_referable_dr(tiny_run: Path) -> None:
    from core.infer.predictor import Predictor
    from core.views.upload import referable_sentence

    summary = evaluate_run(tiny_run, "test", progress=False)
    assert summary.referable is not None and summary.referable["gate"]["n"] == summary.n
    assert summary.referable["grades"]["n"] == summary.n_classification
    from core.data.metadata import load_metadata

    samples = load_metadata(tiny_run / "metadata.json").split("test")
    assert summary.referable["gate"]["positives"] == sum(is_referable(s) is True for s in samples)
    graded = [s for s in samples if s.dr_grade is not None]
    assert summary.referable["grades"]["positives"] == sum(is_referable(s) is True for s in graded)
    prediction = Predictor.from_run(tiny_run).predict(graded[0].image, both=True)
    referable = prediction.report()["referable_dr"]
    assert 0 <= referable["probability"] <= 1 and referable["refer"] == (referable["probability"] >= 0.5)
    sentence = referable_sentence(prediction)
    assert ("**refer**" in sentence) == referable["refer"] and "DR grade >= 2 or DME risk >= 1" in sentence


def test_the_gallery_shows_either_kind_of_misrouting_and_names_it(tiny_run: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from core.evaluate.gallery import gallery
    from core.views.gallery import routing_verdict

    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    config["model"]["gate_target"] = "referable"
    (tiny_run / "config.yaml").write_text(yaml.safe_dump(config))
    summary = evaluate_run(tiny_run, "test", progress=False)
    for kind, count in (("missed", summary.gate.missed), ("wasted", summary.gate.wasted)):
        tiles = gallery(tiny_run, "test", n=20, kind=kind)
        assert len(tiles) == count and all(t.misrouted and t.misrouted_kind == kind for t in tiles)
    assert len(gallery(tiny_run, "test", n=20, misrouted_only=True)) == summary.gate.misrouted
    with pytest.raises(ValueError, match="kind must be one of"):
        gallery(tiny_run, "test", kind="late")
    assert "MISROUTED: missed, needed the lesion map" in routing_verdict("classification", True, "missed")
    assert "MISROUTED: wasted, segmented for nothing" in routing_verdict("classification", True, "wasted")
    assert "MISROUTED**" in routing_verdict("segmentation", True)  # an evaluation older than the kinds
    assert "routed right" in routing_verdict("both", True, "missed")  # both annotations: either route is right
