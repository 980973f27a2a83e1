"""The mean teacher's pieces on literal tensors, and a real semi-supervised training on generated IDRiD folders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from builders import FixtureSpec, make_idrid
from core.config import ModelConfig, load_config
from core.errors import ConfigError
from core.model.factory import build_model
from core.run.folder import RunDir
from core.run.logs import read_jsonl
from core.run.state import load_state
from core.train.consistency import MeanTeacher, consistency_loss, consistency_ramp, photometric_perturbation


def test_the_ramp_starts_near_zero_rises_and_holds_at_one() -> None:
    assert consistency_ramp(0, 100, 0.3) == pytest.approx(math.exp(-5.0))
    assert consistency_ramp(15, 100, 0.3) == pytest.approx(math.exp(-5.0 * 0.25))
    values = [consistency_ramp(step, 100, 0.3) for step in range(0, 101, 5)]
    assert values == sorted(values) and values[-1] == 1.0 and consistency_ramp(30, 100, 0.3) == 1.0
    assert consistency_ramp(0, 100, 0.0) == 1.0  # no ramp: the full weight from the first step


def test_the_perturbation_changes_colours_not_pixels_and_repeats_with_its_seed() -> None:
    images = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = photometric_perturbation(images, torch.Generator().manual_seed(1), strength=0.2, noise=0.0)
    assert out.shape == images.shape and not torch.allclose(out, images)
    for before, after in zip(images, out):  # one contrast and one shift per photograph: an exact affine map
        a = ((after - after.mean()) * (before - before.mean())).sum() / (before - before.mean()).pow(2).sum()
        assert 0.8 <= a <= 1.2
        assert torch.allclose(after, a * (before - before.mean()) + after.mean(), atol=1e-5)
    again = photometric_perturbation(images, torch.Generator().manual_seed(1), strength=0.2, noise=0.1)
    assert torch.equal(again, photometric_perturbation(images, torch.Generator().manual_seed(1), 0.2, 0.1))
    assert not torch.equal(again, photometric_perturbation(images, torch.Generator().manual_seed(2), 0.2, 0.1))


def test_the_consistency_loss_is_the_squared_difference_of_probabilities() -> None:
    student = torch.zeros(1, 2, 2, 2)  # probability 0.5 everywhere
    assert consistency_loss(student, torch.full((1, 2, 2, 2), 0.5)).item() == 0.0
    teacher = torch.tensor([1.0, 0.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]).view(1, 2, 2, 2)
    assert consistency_loss(student, teacher).item() == pytest.approx((0.25 + 0.25) / 8)
    with pytest.raises(ValueError, match="differ in shape"):
        consistency_loss(student, torch.zeros(1, 2, 4, 4))


def test_the_teacher_copies_first_then_averages_with_its_decay() -> None:
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    teacher = MeanTeacher(model, decay=0.75)
    teacher.update(model)
    assert torch.equal(teacher.average.module.weight, model.weight)
    with torch.no_grad():
        model.weight.fill_(5.0)
    teacher.update(model)
    assert torch.allclose(teacher.average.module.weight, torch.full((1, 2), 0.75 * 1.0 + 0.25 * 5.0))
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        MeanTeacher(model, decay=1.0)


def test_the_teacher_draws_lesion_probabilities_with_its_segmentation_expert() -> None:
    model = build_model(ModelConfig(decoder_channels=[16, 8, 8, 8], gate_hidden=8))
    teacher = MeanTeacher(model, decay=0.9)
    teacher.update(model)
    probs = teacher.lesion_probs(torch.randn(2, 3, 64, 64))
    assert probs.shape == (2, 5, 64, 64) and 0.0 <= probs.min() and probs.max() <= 1.0


@pytest.fixture(scope="module")
def mixed_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_idrid(tmp_path_factory.mktemp("mixed"), FixtureSpec(seg={"train": 6, "test": 2},
                                                                     grading={"train": 10, "test": 2}))


def _config(tmp_path: Path, root: Path, **train: object) -> Path:
    config = {
        "name": "semi",
        "data": {"source": "folder", "roots": [str(root)], "image_size": 64, "samples_per_epoch": 8,
                 "cache_dir": str(tmp_path / "cache"), "tasks": ["segmentation"]},
        "model": {"decoder_channels": [32, 16, 16, 8], "gate_hidden": 16},
        "train": {"epochs": 2, "batch_size": 2, "lr": 2e-3, "seed": 3, "consistency": 1.0, "unlabeled_batch": 3,
                  **train},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_semi_supervised_run_learns_from_photographs_without_masks_and_resumes(
        tmp_path: Path, mixed_root: Path) -> None:
    from core.train.trainer import Trainer

    whole = tmp_path / "whole"
    Trainer(load_config(_config(tmp_path, mixed_root)), whole, progress_bar=False).fit()
    # data.tasks keeps the masks only, yet the photographs without masks of the train split still reach the teacher
    assert "photographs without masks, 3 a step, consistency weight 1 " in (whole / "train.log").read_text()
    steps = read_jsonl(RunDir(whole).log)
    assert len(steps) == 8 and all(s["consistency"] > 0 for s in steps)
    weights = [s["consistency_weight"] for s in steps]
    assert weights == sorted(weights) and weights[0] < 0.1 and weights[-1] == 1.0
    assert "train/consistency" in read_jsonl(RunDir(whole).history)[-1]
    assert "teacher" in load_state(RunDir(whole).state)

    cut = tmp_path / "cut"
    Trainer(load_config(_config(tmp_path, mixed_root, max_steps=5)), cut, progress_bar=False).fit()
    Trainer(load_config(RunDir(cut).config, ["train.max_steps=null"]), cut, resume=True, progress_bar=False).fit()
    assert [s["consistency"] for s in read_jsonl(RunDir(cut).log)] == pytest.approx(
        [s["consistency"] for s in steps], rel=1e-4)  # same batches, same teacher, same perturbations
    teacher, again = load_state(RunDir(whole).state)["teacher"], load_state(RunDir(cut).state)["teacher"]
    assert all(torch.allclose(teacher[k].float(), again[k].float(), atol=1e-5) for k in teacher)


def test_consistency_without_photographs_lacking_masks_is_refused_by_name(tmp_path: Path) -> None:
    from core.train.trainer import Trainer

    root = make_idrid(tmp_path / "seg", FixtureSpec(seg={"train": 6}, grading={}))
    with pytest.raises(ConfigError, match=r"train.consistency 1.0 .* has none in its train split"):
        Trainer(load_config(_config(tmp_path, root)), tmp_path / "run", progress_bar=False).fit()
    status = json.loads(RunDir(tmp_path / "run").status.read_text())
    assert status["state"] == "failed" and "train.consistency" in status["error"]


@pytest.mark.parametrize(("override", "message"), [
    ("train.consistency=-1", "train.consistency must be >= 0"),
    ("train.consistency_ramp=2", "train.consistency_ramp must lie in [0, 1]"),
    ("train.ema_decay=1", "train.ema_decay must lie strictly between 0 and 1"),
    ("train.unlabeled_batch=0", "train.unlabeled_batch must be at least 1"),
])
def test_bad_consistency_settings_are_refused(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, [override])
