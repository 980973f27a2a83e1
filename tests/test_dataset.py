"""One Dataset for both tasks: item contract, mixed batches, samplers, seeded fundus-safe augmentation."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from builders import FixtureSpec, make_idrid
from core.data.augment import build_augmentation
from core.data.cache import PreprocessCache
from core.data.dataset import IGNORE_INDEX, IdridDataset, collate
from core.data.idrid import read_idrid
from core.data.metadata import build_metadata, parse_metadata
from core.data.preprocess import PreprocessConfig
from core.data.sampling import DistributedWeightedSampler, weighted_sampler

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def metadata(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    root = make_idrid(tmp_path_factory.mktemp("idrid"), FixtureSpec(seg={"train": 8, "test": 2},
                                                                     grading={"train": 20, "test": 5}))
    return parse_metadata(build_metadata(read_idrid(root), val_fraction=0.25))


def _dataset(samples, augment=None, tmp: Path | None = None) -> IdridDataset:
    cache = PreprocessCache(tmp) if tmp else None
    return IdridDataset(samples, PreprocessConfig(64, 48), MEAN, STD, cache=cache, augment=augment, seed=1)


def test_item_contract_per_task(metadata) -> None:
    train = metadata.split("train")
    dataset = _dataset(train)
    seg = dataset[next(i for i, s in enumerate(train) if s.task == "segmentation")]
    cls = dataset[next(i for i, s in enumerate(train) if s.task == "classification")]
    assert seg["image"].shape == (3, 48, 64) and seg["image"].dtype == torch.float32
    assert seg["mask"].shape == (5, 48, 64) and seg["mask"].dtype == torch.uint8 and seg["mask"].any()
    assert seg["mask_valid"].item() is True and seg["task"].item() == 0
    assert seg["dr"].item() == IGNORE_INDEX and seg["dme"].item() == IGNORE_INDEX
    assert seg["task_vector"].tolist() == [1.0, 0.0]
    assert cls["mask"].shape == (5, 48, 64) and not cls["mask"].any() and cls["mask_valid"].item() is False
    assert cls["task"].item() == 1 and 0 <= cls["dr"].item() <= 4 and 0 <= cls["dme"].item() <= 2
    assert cls["id"].startswith("cls/train/")
    # normalised with the backbone's statistics: black border maps to -mean/std
    assert seg["image"][0, 0, 0].item() == pytest.approx(-MEAN[0] / STD[0], abs=0.05)


def test_mixed_batch_collates(metadata) -> None:
    train = metadata.split("train")
    dataset = _dataset(train)
    loader = DataLoader(dataset, batch_size=len(train), collate_fn=collate)
    batch = next(iter(loader))
    assert batch["image"].shape == (len(train), 3, 48, 64)
    assert set(batch["task"].tolist()) == {0, 1}
    assert batch["mask_valid"].tolist() == [t == 0 for t in batch["task"].tolist()]
    assert len(batch["id"]) == len(train)


def test_weighted_sampler_balances_tasks(metadata) -> None:
    train = metadata.split("train")
    draws = list(weighted_sampler(train, num_samples=4000, seed=0))
    share = np.mean([train[i].task == "segmentation" for i in draws])
    assert 0.45 < share < 0.55  # 6 segmentation against 15 grading samples, drawn half and half


def test_segmentation_share_sets_the_share_of_draws_with_masks(metadata) -> None:
    from core.data.sampling import task_share_weights

    train = metadata.split("train")
    weights = task_share_weights(train, 0.8)
    assert weights.sum().item() == pytest.approx(1.0)
    segmented = [s.masks is not None for s in train]
    assert weights[torch.tensor(segmented)].sum().item() == pytest.approx(0.8)
    # the graded fifth stays balanced by DR grade, as the metadata weights are
    by_grade: dict[int, float] = {}
    for sample, weight in zip(train, weights.tolist()):
        if sample.dr_grade is not None:
            by_grade[sample.dr_grade] = by_grade.get(sample.dr_grade, 0.0) + weight
    assert max(by_grade.values()) == pytest.approx(min(by_grade.values()))
    draws = list(weighted_sampler(train, num_samples=4000, seed=0, segmentation_share=0.8))
    assert 0.76 < np.mean([train[i].masks is not None for i in draws]) < 0.84
    spread = DistributedWeightedSampler(train, 2, 0, num_samples=4000, seed=0, segmentation_share=0.8)
    assert 0.76 < np.mean([train[i].masks is not None for i in spread]) < 0.84
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        task_share_weights(train, 1.0)


def test_torch_distributed_sampler_works_with_the_dataset(metadata) -> None:
    train = metadata.split("train")
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(_dataset(train), num_replicas=2, rank=rank, shuffle=True, seed=0)
        loader = DataLoader(_dataset(train), batch_size=4, sampler=sampler, collate_fn=collate)
        seen += [i for batch in loader for i in batch["index"].tolist()]
    assert sorted(set(seen)) == list(range(len(train)))


def test_distributed_weighted_sampler_splits_one_draw(metadata) -> None:
    train = metadata.split("train")
    ranks = [DistributedWeightedSampler(train, num_replicas=2, rank=r, num_samples=2000, seed=3) for r in range(2)]
    a, b = (list(s) for s in ranks)
    assert len(a) == len(b) == 1000 and a != b
    share = np.mean([train[i].task == "segmentation" for i in a + b])
    assert 0.45 < share < 0.55
    ranks[0].set_epoch(1)
    assert list(ranks[0]) != a


def test_loader_with_workers_and_cache(metadata, tmp_path: Path) -> None:
    train = metadata.split("train")
    dataset = _dataset(train, build_augmentation("standard"), tmp_path / "cache")
    loader = DataLoader(dataset, batch_size=4, sampler=weighted_sampler(train, 12), collate_fn=collate,
                        num_workers=2)
    batches = list(loader)
    assert sum(len(b["id"]) for b in batches) == 12
    assert any((tmp_path / "cache").rglob("*.npz"))


def test_augmentation_is_seeded_by_epoch_and_index(metadata) -> None:
    train = metadata.split("train")
    dataset = _dataset(train, build_augmentation("standard"))
    first = dataset[0]["image"]
    assert torch.equal(first, dataset[0]["image"])  # same epoch, same index: same draw
    dataset.set_epoch(1)
    assert not torch.equal(first, dataset[0]["image"])


def test_green_input_stays_grey_through_the_augmentation(metadata) -> None:
    """Colour jitter scales every channel alike, so a green-only canvas reaches the model as three equal channels."""
    dataset = IdridDataset(metadata.split("train"), PreprocessConfig(64, 48, channels="green"), MEAN, STD,
                           augment=build_augmentation("standard"), seed=1)
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    for index in range(4):
        pixels = dataset[index]["image"] * std + mean
        assert pixels.std() > 0.01
        torch.testing.assert_close(pixels[0], pixels[1], atol=2e-3, rtol=0)
        torch.testing.assert_close(pixels[2], pixels[1], atol=2e-3, rtol=0)


def test_augmentation_moves_image_and_masks_together() -> None:
    image = np.zeros((96, 128, 3), np.uint8)
    cv2.circle(image, (64, 48), 45, (150, 60, 30), -1)
    mask = np.zeros((96, 128, 5), np.uint8)
    for k, (x, y) in enumerate([(40, 30), (80, 60), (60, 50), (90, 35), (50, 65)]):
        cv2.rectangle(image, (x, y), (x + 6, y + 6), (255, 255, 255), -1)
        mask[y : y + 7, x : x + 7, k] = 1
    augment = build_augmentation("standard")
    for seed in range(15):
        augment.set_random_seed(seed)
        out = augment(image=image, mask=mask)
        bright = out["image"].min(axis=2) > 150
        warped = out["mask"].any(axis=2) > 0
        iou = (bright & warped).sum() / max(1, (bright | warped).sum())
        assert iou > 0.6, (seed, iou)


def test_colour_jitter_keeps_retinas_red() -> None:
    image = np.zeros((64, 64, 3), np.uint8)
    cv2.circle(image, (32, 32), 30, (190, 80, 35), -1)
    augment = build_augmentation("standard")
    inside = np.zeros((64, 64), bool)
    cv2.circle(inside.view(np.uint8), (32, 32), 25, 1, -1)
    for seed in range(30):
        augment.set_random_seed(seed)
        out = augment(image=image)["image"]
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)
        hue = np.median(hsv[..., 0][inside & (out.max(axis=2) > 0)])
        assert hue <= 25 or hue >= 170, (seed, hue)  # OpenCV hue 0-180: red-orange, never green (~60)


@pytest.mark.parametrize("level", ["light", "standard"])
def test_augmentation_is_strict(level: str) -> None:
    """A misspelled argument must be an error in our pipelines, not a warning that drops the setting."""
    augment = build_augmentation(level)
    assert augment.strict is True
    assert {"HorizontalFlip", "Affine", "ColorJitter"} <= {t.__class__.__name__ for t in augment.transforms}
    assert build_augmentation("none") is None
    assert "CLAHE" in {t.__class__.__name__ for t in build_augmentation(level, preprocessed_clahe=False).transforms}


def test_a_sample_without_grades_counts_in_neither_the_loss_nor_the_metrics(metadata) -> None:
    """The label the dataset gives an ungraded sample is the one the loss and the metrics drop: the classification
    loss and report of a mixed batch equal those of its graded samples alone."""
    import torch.nn.functional as F

    from core.evaluate.metrics import classification_report
    from core.model.gated import ModelOutput
    from core.model.losses import MultiTaskLoss

    train = metadata.split("train")
    batch = collate([_dataset(train)[i] for i in range(len(train))])
    graded = torch.tensor([s.dr_grade is not None for s in train])
    assert 0 < int(graded.sum()) < len(train)
    generator = torch.Generator().manual_seed(0)
    n = len(train)
    dr_logits, dme_logits = torch.randn(n, 5, generator=generator), torch.randn(n, 3, generator=generator)
    output = ModelOutput(gate_logits=torch.zeros(n, 2), gate_probs=torch.full((n, 2), 0.5),
                         route=torch.ones(n, 2, dtype=torch.bool), seg_index=torch.arange(0), seg_logits=None,
                         cls_index=torch.arange(n), dr_logits=dr_logits, dme_logits=dme_logits)
    parts, reached = MultiTaskLoss().classification(output, batch)
    assert reached == int(graded.sum())
    expected_dr = F.cross_entropy(dr_logits[graded], torch.tensor([s.dr_grade for s in train if s.dr_grade is not None]))
    assert parts["dr"].item() == pytest.approx(expected_dr.item(), rel=1e-6)
    report = classification_report(batch["dr"].tolist(), dr_logits.argmax(1).tolist(), 5)
    assert report["n"] == int(graded.sum())
