"""One sample per photograph: twins across IDRiD's halves and byte-identical grading copies.

The real-file tests check what ../shared/idrid-grading/README.md states: 42 of the 54 segmentation training
photographs are grading photographs under another id, and five grading pairs are byte-identical, three of them with
labels that disagree.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from builders import FixtureSpec, grading_image, make_idrid, seg_image
from core.data.idrid import read_idrid
from core.data.metadata import build_metadata, only_tasks, parse_metadata
from core.data.twins import TWIN_MSE, Match, groups, pairwise_mse, thumbnail

DUPLICATE_PAIRS = {("021", "391"), ("028", "327"), ("045", "333"), ("073", "375"), ("079", "279")}
CONFLICTING = {("021", "391"), ("028", "327"), ("045", "333")}


@pytest.fixture(scope="module")
def real_both(real_idrid: Path, real_grading: Path) -> dict:
    return build_metadata(read_idrid([real_idrid, real_grading], strict=False))


def _split_of(document: dict) -> dict[str, str]:
    """Every id, its own or one it absorbed, -> the split of the sample that holds it."""
    where = {}
    for sample in document["samples"]:
        for key in [sample["id"], *sample.get("same_photograph", [])]:
            where[key] = sample["split"]
    return where


@pytest.mark.real
def test_real_twins_are_one_sample_with_masks_and_grades(real_both: dict, real_idrid: Path,
                                                         real_grading: Path) -> None:
    samples = real_both["samples"]
    both = {s["id"]: s for s in samples if s["task_vector"] == [1, 1]}
    assert len(both) == 42 and real_both["summary"]["same_photograph"]["twins"] == 42
    # The two examples the dataset's README gives.
    assert both["seg/train/IDRiD_01"]["same_photograph"] == ["cls/train/IDRiD_102"]
    assert both["seg/train/IDRiD_02"]["same_photograph"] == ["cls/train/IDRiD_366"]
    grades = {r.key: (r.dr_grade, r.dme_risk) for r in read_idrid([real_grading]).grading}
    for sample in both.values():
        assert sample["masks"]["OD"] is not None and sample.get("root", 0) == 0  # the full-size file
        assert (sample["dr_grade"], sample["dme_risk"]) == grades[sample["same_photograph"][0]]
    ids = {s["id"] for s in samples}
    assert not ids & {twin for s in both.values() for twin in s["same_photograph"]}
    # 54 photographs with masks; 413 grading rows less the two agreeing duplicates merged
    assert sum(s["masks"] is not None for s in samples) == 54
    assert sum(s["dr_grade"] is not None for s in samples) == 411


@pytest.mark.real
def test_real_duplicates_listed_with_labels_and_kept_on_one_side(real_both: dict) -> None:
    listed = real_both["summary"]["same_photograph"]["duplicates"]
    pairs = {tuple(sorted(key[-3:] for key in group["ids"])) for group in listed}
    assert pairs == DUPLICATE_PAIRS
    for group in listed:
        pair = tuple(sorted(key[-3:] for key in group["ids"]))
        assert group["conflicting"] == (pair in CONFLICTING)
        assert len(group["labels"]) == 2
    labels = next(g for g in listed if "cls/train/IDRiD_021" in g["ids"])["labels"]
    assert (labels["cls/train/IDRiD_021"]["dr_grade"], labels["cls/train/IDRiD_391"]["dr_grade"]) == (1, 2)
    where = _split_of(real_both)
    for pair in real_both["summary"]["same_photograph"]["pairs"]:
        assert where[pair["a"]] == where[pair["b"]], pair
    for a, b in DUPLICATE_PAIRS:
        assert where[f"cls/train/IDRiD_{a}"] == where[f"cls/train/IDRiD_{b}"]


@pytest.mark.real
def test_real_drop_conflicting_leaves_out_the_disagreeing_pairs(real_idrid: Path, real_grading: Path) -> None:
    document = build_metadata(read_idrid([real_idrid, real_grading], strict=False), drop_conflicting=True)
    ids = {s["id"] for s in document["samples"]}
    for a, b in CONFLICTING:
        assert f"cls/train/IDRiD_{a}" not in ids and f"cls/train/IDRiD_{b}" not in ids
    assert sum(s["dr_grade"] is not None for s in document["samples"]) == 411 - 6
    assert document["drop_conflicting"] is True


@pytest.mark.real
def test_real_validation_holds_every_kind_of_sample_and_follows_the_grades(real_both: dict) -> None:
    val = [s for s in real_both["samples"] if s["split"] == "val"]
    kinds = {tuple(s["task_vector"]) for s in val}
    assert kinds == {(1, 0), (0, 1), (1, 1)}  # the gate is measured on each kind
    summary = real_both["summary"]["val"]
    assert summary["segmentation"] == 11 and summary["masks"]["SE"] == 5
    graded = [s for s in real_both["samples"] if s["dr_grade"] is not None and s["split"] != "test"]
    for grade in range(5):
        total = sum(s["dr_grade"] == grade for s in graded)
        assert abs(summary["dr_grade"][str(grade)] - 0.2 * total) <= 1, (grade, summary["dr_grade"])


@pytest.mark.real
def test_real_twin_threshold_has_a_margin_on_both_sides(real_idrid: Path, real_grading: Path) -> None:
    index = read_idrid([real_idrid, real_grading], strict=False)
    seg = [r for r in index.segmentation if r.split == "train"]
    grading = [r for r in index.grading if r.split == "train"]
    thumbs = np.stack([thumbnail(r.image) for r in seg + grading])
    mse = pairwise_mse(thumbs)[: len(seg), len(seg):]
    nearest = np.sort(mse.min(axis=1))
    twins, distinct = nearest[:42], nearest[42:]
    assert twins.max() < TWIN_MSE / 2, twins.max()
    assert distinct.min() > 2 * TWIN_MSE, distinct.min()


def test_groups_are_transitive() -> None:
    found = groups(6, [Match(0, 3, "thumbnail", 0.5), Match(3, 5, "bytes", 0.0), Match(1, 2, "thumbnail", 1.0)])
    assert found == [[0, 3, 5], [1, 2], [4]]


def _jpeg_copy(source: Path, target: Path, scale: int, quality: int) -> None:
    with Image.open(source) as image:
        small = image.convert("RGB").resize((image.width // scale, image.height // scale), Image.BOX)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=quality)
    target.write_bytes(buffer.getvalue())


def test_fixture_twin_duplicates_and_conflicts(tmp_path: Path) -> None:
    root = make_idrid(tmp_path, FixtureSpec(seg={"train": 10}, grading={"train": 20}, width=384, height=256))
    # The fixture CSV grades IDRiD_n with DR n % 5 and DME n % 3.
    _jpeg_copy(seg_image(root, "IDRiD_02"), grading_image(root, "IDRiD_003"), 2, 90)  # a reduced, re-encoded twin
    shutil.copyfile(grading_image(root, "IDRiD_005"), grading_image(root, "IDRiD_006"))  # DR 0 vs 1: conflicting
    shutil.copyfile(grading_image(root, "IDRiD_001"), grading_image(root, "IDRiD_016"))  # DR 1 DME 1 both: agreeing
    document = build_metadata(read_idrid(root), val_fraction=0.3)
    samples = {s["id"]: s for s in document["samples"]}
    twin = samples["seg/train/IDRiD_02"]
    assert twin["task_vector"] == [1, 1] and twin["same_photograph"] == ["cls/train/IDRiD_003"]
    assert (twin["dr_grade"], twin["dme_risk"]) == (3, 0) and "cls/train/IDRiD_003" not in samples
    assert samples["cls/train/IDRiD_001"]["same_photograph"] == ["cls/train/IDRiD_016"]
    assert "cls/train/IDRiD_016" not in samples
    listed = {tuple(g["ids"]): g for g in document["summary"]["same_photograph"]["duplicates"]}
    assert listed[("cls/train/IDRiD_005", "cls/train/IDRiD_006")]["conflicting"]
    assert not listed[("cls/train/IDRiD_001", "cls/train/IDRiD_016")]["conflicting"]
    assert samples["cls/train/IDRiD_005"]["split"] == samples["cls/train/IDRiD_006"]["split"]
    dropped = build_metadata(read_idrid(root), val_fraction=0.3, drop_conflicting=True)
    assert not {"cls/train/IDRiD_005", "cls/train/IDRiD_006"} & {s["id"] for s in dropped["samples"]}
    # nothing else was merged: the fixture's other photographs differ only by noise, and stay apart
    assert sum(s["task_vector"] == [1, 1] for s in document["samples"]) == 1
    assert len(document["samples"]) == 10 + 20 - 2


def test_one_task_alone_keeps_the_split_and_drops_the_other_labels(tmp_path: Path) -> None:
    root = make_idrid(tmp_path, FixtureSpec(seg={"train": 10}, grading={"train": 20}, width=384, height=256))
    _jpeg_copy(seg_image(root, "IDRiD_02"), grading_image(root, "IDRiD_003"), 2, 90)
    document = build_metadata(read_idrid(root), val_fraction=0.3)
    split = {s["id"]: s["split"] for s in document["samples"]}
    grading = only_tasks(document, ["classification"])
    assert all(s["masks"] is None and s["task_vector"] == [0, 1] for s in grading["samples"])
    assert {s["id"] for s in grading["samples"]} == {s["id"] for s in document["samples"] if s["dr_grade"] is not None}
    assert "seg/train/IDRiD_02" in {s["id"] for s in grading["samples"]}  # the twin stays, with its grades
    assert all(split[s["id"]] == s["split"] for s in grading["samples"])
    assert sum(s["weight"] for s in grading["samples"]) == pytest.approx(1.0, abs=1e-6)
    masks = only_tasks(document, ["segmentation"])
    assert all(s["dr_grade"] is None and s["task_vector"] == [1, 0] for s in masks["samples"])
    assert len(masks["samples"]) == 10 and all(split[s["id"]] == s["split"] for s in masks["samples"])
    assert parse_metadata(grading, check_files=True).split("train")  # a valid document
