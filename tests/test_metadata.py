"""The balanced metadata JSON: splits, weights, summary, and refusal of stale or foreign files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from builders import FixtureSpec, make_idrid
from core.data.idrid import read_idrid
from core.data.metadata import (SCHEMA, build_metadata, load_metadata, parse_metadata, stratified_split,
                                write_metadata)
from core.errors import DataError


def _build(root: Path, **kwargs) -> dict:
    return build_metadata(read_idrid(root), **kwargs)


@pytest.mark.real
def test_real_segmentation_half(real_idrid: Path, tmp_path: Path) -> None:
    document = _build(real_idrid)
    summary = document["summary"]
    assert (summary["train"]["segmentation"], summary["val"]["segmentation"]) == (43, 11)
    # stratified by soft-exudate presence (26 of 54): 21 train / 5 val
    assert (summary["train"]["masks"]["SE"], summary["val"]["masks"]["SE"]) == (21, 5)
    assert summary["labels_without_images"] == {"train": 413, "test": 103}
    assert document["root"] == str(real_idrid.resolve())
    sample = document["samples"][0]
    assert not Path(sample["image"]).is_absolute() and sample["task_vector"] == [1, 0]
    assert sample["dr_grade"] is None and sample["masks"]["OD"].endswith("_OD.tif")
    train_weights = [s["weight"] for s in document["samples"] if s["split"] == "train"]
    assert sum(train_weights) == pytest.approx(1.0, abs=1e-6)
    path = write_metadata(document, tmp_path / "m.json")
    loaded = load_metadata(path)
    assert len(loaded.split("train")) == 43 and loaded.split("val")[0].image.exists()


@pytest.mark.real
def test_real_grading_split_is_stratified_by_grade(real_idrid: Path, real_grading: Path) -> None:
    document = build_metadata(read_idrid([real_idrid, real_grading]))
    val = document["summary"]["val"]["dr_grade"]
    full = [134, 20, 136, 74, 49]
    for grade, count in enumerate(full):
        assert abs(val[str(grade)] - 0.2 * count) <= 1, (grade, val)
    assert isinstance(document["root"], list) and len(document["root"]) == 2
    assert {s.get("root") for s in document["samples"] if s["task"] == "classification"} == {1}


def test_split_is_seeded_exact_and_disjoint() -> None:
    units = list(range(100))
    strata = [u % 3 for u in units]
    first = stratified_split(units, strata, 0.2, seed=0)
    assert first == stratified_split(units, strata, 0.2, seed=0)
    assert first != stratified_split(units, strata, 0.2, seed=1)
    assert len(first) == 20
    assert all(6 <= sum(1 for u in first if u % 3 == s) <= 7 for s in range(3))


def test_split_handles_single_member_strata() -> None:
    chosen = stratified_split(["a", "b", "c"], [0, 1, 2], 0.34, seed=0)
    assert len(chosen) == 1


def test_weights_balance_tasks_and_grades(tmp_path: Path) -> None:
    make_idrid(tmp_path, FixtureSpec(seg={"train": 10}, grading={"train": 40}))
    document = _build(tmp_path, val_fraction=0.25)
    train = [s for s in document["samples"] if s["split"] == "train"]
    by_task = Counter()
    by_grade = Counter()
    for sample in train:
        by_task[sample["task"]] += sample["weight"]
        if sample["task"] == "classification":
            by_grade[sample["dr_grade"]] += sample["weight"]
    assert by_task["segmentation"] == pytest.approx(0.5, abs=1e-6)
    assert by_task["classification"] == pytest.approx(0.5, abs=1e-6)
    assert all(w == pytest.approx(0.1, abs=1e-6) for w in by_grade.values()) and len(by_grade) == 5
    assert all(s["weight"] == 0 for s in document["samples"] if s["split"] != "train")


def test_test_split_is_the_official_testing_half(tmp_path: Path) -> None:
    document = _build(make_idrid(tmp_path))
    for sample in document["samples"]:
        assert (sample["split"] == "test") == ("/test/" in sample["id"])


def test_refuses_unknown_schema(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"schema": "something/9", "samples": []}))
    with pytest.raises(DataError, match="schema 'something/9' is not"):
        load_metadata(path)


def test_refuses_paths_that_no_longer_exist(tmp_path: Path) -> None:
    root = make_idrid(tmp_path / "data")
    path = write_metadata(_build(root), tmp_path / "m.json")
    (root / "A. Segmentation" / "1. Original Images" / "a. Training Set" / "IDRiD_01.jpg").unlink()
    with pytest.raises(DataError, match="no longer exist.*IDRiD_01.jpg"):
        load_metadata(path)


def test_refuses_broken_json_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "m.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not readable JSON"):
        load_metadata(bad)
    with pytest.raises(DataError, match="does not exist"):
        load_metadata(tmp_path / "absent.json")


def test_parse_accepts_what_build_writes(tmp_path: Path) -> None:
    document = _build(make_idrid(tmp_path))
    assert document["schema"] == SCHEMA
    metadata = parse_metadata(json.loads(json.dumps(document)))
    assert {s.task for s in metadata.samples} == {"segmentation", "classification"}
    assert len(metadata.split("train")) + len(metadata.split("val")) == 6 + 10
