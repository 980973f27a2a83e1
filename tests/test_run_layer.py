"""The run layer as the app reads it: the typed evaluation summary (core.run.summary) round-trips the shipped
summaries and refuses foreign ones by name, the catalogue finds a run's files through ``RunDir``, and the Dashboard's
read-outs (core.views.evaluation) take the typed summary."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core import catalogue
from core.errors import DataError
from core.run.folder import RunDir
from core.run.summary import ClassScores, EvalSummary, GateSummary, LesionScores
from core.views import evaluation as evaluation_views
from core.vocabulary import LESIONS

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = [("demo", "test"), ("idrid", "val")]


@pytest.mark.parametrize(("name", "split"), SHIPPED)
def test_the_shipped_summaries_load_typed_and_write_back_unchanged(name: str, split: str) -> None:
    path = RunDir(ROOT / "checkpoints" / name).summary(split)
    summary = EvalSummary.load(path)
    assert summary.split == split and summary.n > 0
    assert isinstance(summary.gate, GateSummary) and isinstance(summary.classification.dr, ClassScores)
    assert summary.segmentation.lesions and all(isinstance(s, LesionScores)
                                                for s in summary.segmentation.lesions.values())
    assert summary.to_dict() == json.loads(path.read_text(encoding="utf-8"))


def _damaged(tmp_path: Path, change) -> Path:
    document = json.loads(RunDir(ROOT / "checkpoints" / "demo").summary("test").read_text(encoding="utf-8"))
    change(document)
    path = RunDir(tmp_path / "run").summary("test")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


@pytest.mark.parametrize("change", [
    pytest.param(lambda d: d.update(unexpected=1), id="unknown key"),
    pytest.param(lambda d: d["gate"].update(routes=[]), id="unknown key in a section"),
    pytest.param(lambda d: d.update(gate=[1, 2]), id="section of the wrong shape"),
    pytest.param(lambda d: d["segmentation"].update(lesions=["MA"]), id="lesions of the wrong shape"),
    pytest.param(lambda d: d["classification"].pop("dr"), id="missing section"),
])
def test_a_foreign_summary_is_a_data_error_naming_the_file(tmp_path: Path, change) -> None:
    path = _damaged(tmp_path, change)
    with pytest.raises(DataError, match="evaluation summary") as raised:
        EvalSummary.load(path)
    assert str(path) in str(raised.value)
    with pytest.raises(DataError) as through_the_page:  # the Dashboard says the same, not a KeyError
        evaluation_views.load_evaluation(tmp_path / "run", "test")
    assert str(path) in str(through_the_page.value)


def test_an_unreadable_summary_is_a_data_error_naming_the_file(tmp_path: Path) -> None:
    path = RunDir(tmp_path / "run").summary("test")
    path.parent.mkdir(parents=True)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match="unreadable") as raised:
        evaluation_views.load_evaluation(tmp_path / "run", "test")
    assert str(path) in str(raised.value)


def test_the_dashboard_read_outs_take_the_typed_summary() -> None:
    evaluation = evaluation_views.load_evaluation(ROOT / "checkpoints" / "demo", "test")
    assert evaluation is not None and isinstance(evaluation.summary, EvalSummary)
    assert evaluation_views.load_evaluation(ROOT / "checkpoints" / "demo", "train") is None  # never evaluated
    summary = evaluation.summary
    assert evaluation.resolution == summary.resolution
    assert evaluation.caption.startswith(f"test split, {summary.n} images ({summary.n_segmentation} segmentation")
    rows = {row["measure"]: row for row in evaluation_views.challenge_rows(evaluation)}
    assert rows["Gate accuracy"]["what"] == f"{summary.gate.misrouted} of {summary.gate.n} images misrouted"
    assert {f"AUPR {code}" for code in summary.segmentation.lesions} <= set(rows)
    lesions = evaluation_views.lesion_results(evaluation)
    assert set(lesions) == set(summary.segmentation.lesions) and set(lesions) <= set(LESIONS)
    assert all(isinstance(scores, dict) and {"dice", "iou", "aupr"} <= set(scores) for scores in lesions.values())
    counts, names = evaluation_views.confusion(evaluation, "dr")
    assert counts == summary.classification.dr.confusion_matrix and len(names) == len(counts)
    assert evaluation_views.confusion(evaluation, "neither") is None
    matrix, row_labels, column_labels = evaluation_views.routing(evaluation)
    assert matrix == summary.gate.confusion_matrix and row_labels == summary.gate.row_labels
    assert len(evaluation_views.misrouted_rows(evaluation)) == len(summary.gate.misrouted_samples)
    assert isinstance(evaluation_views.gate_rows(evaluation), list)


def test_the_catalogue_finds_a_runs_files_through_its_run_dir(tmp_path: Path) -> None:
    shipped = RunDir(ROOT / "checkpoints" / "demo")
    folder = tmp_path / "copy"
    run = RunDir(folder)
    assert not catalogue.is_run_folder(folder)
    folder.mkdir()
    assert not catalogue.is_run_folder(folder)
    shutil.copy(shipped.config, run.config)
    assert catalogue.is_run_folder(folder)
    info = catalogue.run_info(folder)
    assert info.run == run and not info.has_weights and info.evaluated == ()
    run.weights.mkdir()
    shutil.copy(shipped.weights_file("best"), run.weights_file("best"))
    for split in ("val", "test"):
        run.eval_dir(split).mkdir(parents=True)
        shutil.copy(shipped.summary("test"), run.summary(split))
    info = catalogue.run_info(folder)
    assert info.has_weights and info.evaluated == ("test", "val") == run.evaluated_splits()


def test_a_run_is_described_by_its_dataset_and_size_not_by_folders() -> None:
    from core.config import load_config
    from core.views.runs import data_description, data_summary

    real = RunDir(ROOT / "checkpoints" / "idrid")
    config = load_config(real.config)
    assert config.data.source == "folder" and config.data.roots  # the config does hold the machine's folders
    words = data_description(config, real)
    assert words == ("real IDRiD photographs: 54 with lesion masks and 411 graded, of which 43 and 329 in its "
                     "training split")
    assert not any(str(root) in words or "shared" in words for root in config.data.roots)
    assert data_summary(config, real) == words
    assert data_description(config) == "real IDRiD photographs"  # no saved split: no counts, still no folders
    demo = RunDir(ROOT / "checkpoints" / "demo")
    assert data_summary(load_config(demo.config), demo) == "synthetic images only"
