"""Test-time flips (core.infer.tta) and runs that learned one task: what the Predictor and the evaluator do."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from builders import fundus
from core.config import config_from_dict
from core.errors import ConfigError
from core.infer.predictor import Predictor
from core.infer.tta import TTA_VIEWS, segment_probs
from core.run.folder import RunDir
from core.views.upload import gate_sentence


def _flip_by_hand(model, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        views = [torch.sigmoid(model.segment(images)),
                 torch.sigmoid(model.segment(images.flip(3))).flip(3),
                 torch.sigmoid(model.segment(images.flip(2))).flip(2),
                 torch.sigmoid(model.segment(images.flip(2, 3))).flip(2, 3)]
    return torch.stack(views).mean(0)


def test_flips_average_the_mirrored_views_mapped_back(tiny_run: Path) -> None:
    model = Predictor.from_run(tiny_run).model
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    plain = segment_probs(model, images, "none")
    flips = segment_probs(model, images, "flips")
    assert torch.allclose(flips, _flip_by_hand(model, images), atol=1e-6)
    assert not torch.allclose(flips, plain, atol=1e-4)  # the model is not flip-invariant: the views differ
    # A ready identity pass is reused, not recomputed: a fake one shows up in the mean.
    shifted = segment_probs(model, images, "hflip", identity=plain + 1)
    assert torch.allclose(shifted, segment_probs(model, images, "hflip") + 0.5, atol=1e-6)
    with pytest.raises(ValueError, match="unknown test-time augmentation 'rot90'"):
        segment_probs(model, images, "rot90")


def test_the_run_config_turns_flips_on_for_prediction(tiny_run: Path) -> None:
    plain = Predictor.from_run(tiny_run)
    flipped = Predictor(plain.model, dataclasses.replace(plain.config, infer=dataclasses.replace(
        plain.config.infer, tta="flips")), tasks=plain.tasks)
    image = fundus(160, 120, seed=3)
    a, b = plain.predict(image, both=True), flipped.predict(image, both=True)
    tensor = plain.prepare(image).tensor
    assert torch.allclose(torch.from_numpy(b.seg_probs), _flip_by_hand(plain.model, tensor)[0], atol=1e-5)
    assert abs(a.seg_probs - b.seg_probs).max() > 1e-4
    assert (a.dr_probs == b.dr_probs).all() and (a.gate_probs == b.gate_probs).all()  # flips touch lesions only
    assert set(TTA_VIEWS) == {"none", "hflip", "flips"}
    with pytest.raises(ConfigError, match="infer.tta"):
        config_from_dict({"infer": {"tta": "mirror"}})


def _one_task_run(tiny_run: Path, tmp_path: Path, task: str) -> Path:
    """The tiny run as if its train split had held only ``task`` labels (what a segmentation-only IDRiD gives)."""
    run = tmp_path / f"only-{task}"
    shutil.copytree(tiny_run, run)
    document = json.loads((run / "metadata.json").read_text())
    keep = 0 if task == "segmentation" else 1
    for sample in document["samples"]:
        vector = [0, 0]
        vector[keep] = sample["task_vector"][keep]
        sample["task_vector"] = vector
    document["samples"] = [s for s in document["samples"] if any(s["task_vector"])]
    (run / "metadata.json").write_text(json.dumps(document))
    return run


@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_a_one_task_run_sends_every_photograph_to_its_expert(tiny_run: Path, tmp_path: Path, task: str) -> None:
    run = _one_task_run(tiny_run, tmp_path, task)
    assert RunDir(run).trained_tasks() == (task,)
    assert RunDir(tiny_run).trained_tasks() == ("segmentation", "classification")
    predictor = Predictor.from_run(run)
    for seed in range(3):
        prediction = predictor.predict(fundus(160, 120, seed=seed))
        assert prediction.ran == (task,) and prediction.task == task and prediction.only_task == task
        assert (prediction.seg_probs is None) == (task == "classification")
    sentence = gate_sentence(prediction)
    assert f"learned **{task}** only" in sentence and "gate was not trained" in sentence
    assert "Gate: **" in gate_sentence(Predictor.from_run(tiny_run).predict(fundus(160, 120)))


def test_a_run_without_a_readable_split_counts_as_both_tasks(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "no-split"
    shutil.copytree(tiny_run, run)
    (run / "metadata.json").write_text("{not json")
    assert RunDir(run).trained_tasks() == ("segmentation", "classification")
    (run / "metadata.json").unlink()
    assert RunDir(run).trained_tasks() == ("segmentation", "classification")


def test_evaluating_a_one_task_run_reports_no_gate_figures(tiny_run: Path, tmp_path: Path) -> None:
    from core.evaluate.runner import evaluate_run
    from core.views.evaluation import challenge_rows, load_evaluation

    run = _one_task_run(tiny_run, tmp_path, "segmentation")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["infer"] = {"tta": "hflip"}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    summary = evaluate_run(run, split="test", progress=False)
    assert summary.gate.trained is False and summary.gate.misrouted_samples == []
    assert "segmentation only" in summary.gate.note
    assert "test-time flips (hflip)" in summary.resolution
    rows = (run / "eval" / "test" / "predictions.csv").read_text().splitlines()
    assert len(rows) > 1 and all(",segmentation,False," in row for row in rows[1:])
    first = challenge_rows(load_evaluation(run, "test"))[0]
    assert first["measure"] == "Gate" and first["value"] == "not trained"
