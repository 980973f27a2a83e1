"""Grouped k-fold cross-validation: the folds, the split each run trains with, and the summary over folds."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from builders import FixtureSpec, make_idrid
from core.config import config_from_dict
from core.data.idrid import read_idrid
from core.data.metadata import build_metadata, only_tasks, stratified_folds
from core.errors import ConfigError, DataError


def test_folds_are_even_within_each_stratum_and_seeded() -> None:
    units = list(range(31))
    strata = [u % 4 for u in units]
    folds = stratified_folds(units, strata, 3, seed=0)
    assert set(folds) == set(units) and set(folds.values()) == {0, 1, 2}
    assert max(Counter(folds.values()).values()) - min(Counter(folds.values()).values()) <= 1
    for stratum in range(4):
        sizes = Counter(folds[u] for u in units if u % 4 == stratum)
        assert max(sizes.values()) - min(sizes.values()) <= 1, (stratum, sizes)
    assert folds == stratified_folds(units, strata, 3, seed=0)
    assert folds != stratified_folds(units, strata, 3, seed=1)
    with pytest.raises(DataError, match="at least 2 folds"):
        stratified_folds(units, strata, 1, seed=0)


def _val_ids(document: dict) -> set[str]:
    return {s["id"] for s in document["samples"] if s["split"] == "val"}


def test_each_photograph_is_validation_in_exactly_one_fold(tmp_path: Path) -> None:
    root = make_idrid(tmp_path / "data", FixtureSpec(seg={"train": 9, "test": 2}, grading={"train": 15, "test": 3}))
    index = read_idrid(root)
    documents = [build_metadata(index, folds=3, fold=i) for i in range(3)]
    vals = [_val_ids(d) for d in documents]
    trainable = {s["id"] for s in documents[0]["samples"] if s["split"] != "test"}
    assert set().union(*vals) == trainable and sum(map(len, vals)) == len(trainable)  # disjoint, covering
    assert all(d["folds"] == 3 and d["fold"] == i for i, d in enumerate(documents))
    tests = [{s["id"] for s in d["samples"] if s["split"] == "test"} for d in documents]
    assert tests[0] == tests[1] == tests[2]  # the official testing half is never a fold
    for document in documents:  # every fold validates photographs with masks and graded ones
        val = [s for s in document["samples"] if s["split"] == "val"]
        assert any(s["masks"] for s in val) and any(s["dr_grade"] is not None for s in val)
    with pytest.raises(DataError, match="fold 3 does not exist"):
        build_metadata(index, folds=3, fold=3)


def test_the_config_and_the_command_line_refuse_a_fold_that_does_not_exist() -> None:
    with pytest.raises(ConfigError, match="data.fold must lie in 0..2"):
        config_from_dict({"data": {"folds": 3, "fold": 5}})
    with pytest.raises(ConfigError, match="data.folds must be 0 or at least 2"):
        config_from_dict({"data": {"folds": 1}})
    done = subprocess.run([sys.executable, "-m", "core", "train", "--fold", "1"], capture_output=True, text=True)
    assert done.returncode == 2 and "--fold needs --folds K" in done.stderr + done.stdout


@pytest.mark.real
def test_real_folds_keep_copies_of_a_photograph_together(real_idrid: Path, real_grading: Path) -> None:
    index = read_idrid([real_idrid, real_grading])
    documents = [build_metadata(index, folds=3, fold=i) for i in range(3)]
    vals = [_val_ids(d) for d in documents]
    assert not (vals[0] & vals[1]) and not (vals[1] & vals[2]) and not (vals[0] & vals[2])
    trainable = {s["id"] for s in documents[0]["samples"] if s["split"] != "test"}
    assert set().union(*vals) == trainable
    for document in documents:  # 54 photographs with masks: 18 a fold
        assert document["summary"]["val"]["segmentation"] == 18


@pytest.mark.real
def test_real_lesion_folds_do_not_depend_on_the_grading_half_being_read(real_idrid: Path, real_grading: Path) -> None:
    """A semi-supervised run reads both halves, a lesion run the segmentation half alone: on the same fold they must
    validate, and (with only the masks trained) draw from, the same photographs, or their figures do not compare."""
    alone, both = read_idrid(real_idrid), read_idrid([real_idrid, real_grading])
    for fold in range(3):
        documents = [only_tasks(build_metadata(index, folds=3, fold=fold), ["segmentation"]) for index in (alone, both)]
        seen = [[(s["id"], s["split"], s["weight"]) for s in d["samples"] if s["split"] != "test"] for d in documents]
        assert len(seen[0]) == 54 and seen[0] == seen[1], fold
        assert sum(split == "val" for _, split, _ in seen[0]) == 18


def test_the_cv_summary_gives_mean_and_spread_over_folds(tiny_run: Path, tmp_path: Path) -> None:
    from core.evaluate.crossval import cross_validate
    from core.evaluate.runner import evaluate_run

    summary = evaluate_run(tiny_run, "test", progress=False)
    other = shutil.copytree(tiny_run, tmp_path / "fold-1")
    rows = {row.figure: row for row in cross_validate([tiny_run, other], "test")}
    od = summary.segmentation.lesions["OD"].dice
    assert rows["OD Dice"].values == [od, od] and rows["OD Dice"].mean == pytest.approx(od)
    assert rows["OD Dice"].sd == 0
    assert rows["DME accuracy"].mean == pytest.approx(summary.classification.dme.accuracy)
    with pytest.raises(DataError, match="no evaluation of its val split"):
        cross_validate([tiny_run], "val")
