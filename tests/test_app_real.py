"""The app with the shipped real-data run (checkpoints/idrid): Predict uses it by default, the dashboard shows it
from its saved results alone, the gallery says which folders it needs and works once given them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from studio_helpers import REAL, copy_demo, copy_real, errors, start, texts

TIMEOUT = 120

pytestmark = pytest.mark.skipif(not (REAL / "weights" / "best.safetensors").exists(),
                                reason="checkpoints/idrid is not shipped in this checkout")


@pytest.fixture
def runs_with_real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def make(roots: list[str] | None = None) -> Path:
        root = tmp_path / "checkpoints"
        copy_demo(root, tmp_path / "synthetic")
        copy_real(root, roots)
        monkeypatch.setenv("IDRID_STUDIO_RUNS", str(root))
        return root
    return make


@pytest.mark.real
def test_predict_uses_the_real_model_and_the_demo_is_one_click_away(runs_with_real, real_idrid: Path) -> None:
    runs_with_real()
    at = start("predict", TIMEOUT)
    assert at.selectbox(key="run_choice").value == "demo"  # the sidebar keeps the demo first...
    assert at.button_group(key="predict_model").value == "idrid"  # ...and Predict takes the real model
    photo = real_idrid / "A. Segmentation" / "1. Original Images" / "a. Training Set" / "IDRiD_03.jpg"
    at.file_uploader(key="uploads").set_value([(photo.name, photo.read_bytes(), "image/jpeg")]).run()
    assert not at.exception and not errors(at), errors(at)
    body = texts(at)
    assert "4288x2848 px" in body and "Gate: **" in body
    assert "run idrid (real IDRiD photographs: 54 with lesion masks" in body  # the dataset, not a folder
    at.button_group(key="predict_model").set_value("demo").run()
    assert not at.exception and not errors(at)
    assert "run demo (synthetic images only)" in texts(at)


def test_dashboard_shows_the_real_run_from_its_saved_results(runs_with_real, tmp_path: Path) -> None:
    runs_with_real(roots=[str(tmp_path / "nowhere-seg"), str(tmp_path / "nowhere-grading")])
    at = start("dashboard", TIMEOUT)
    at.selectbox(key="run_choice").set_value("idrid").run()
    at.switch_page("pages/dashboard.py").run()
    assert not at.exception and not errors(at), errors(at)
    assert at.selectbox(key="dash_split_idrid").value == "val"  # its evaluated split, not the empty test split
    body = texts(at)
    assert "val split" in body and "original image size" in body
    measures = set(at.dataframe[0].value["measure"])
    assert {"Gate accuracy", "AUPR MA", "DR quadratic kappa", "Joint DR + DME accuracy"} <= measures
    gate_rows = next(d.value for d in at.dataframe if "samples" in d.value.columns)
    # a referable gate is judged by its target, twins included: rows per target route, and its two errors apart
    assert any(str(v).startswith("segmentation (53)") for v in gate_rows["samples"])
    assert any(str(v).startswith("missed (5 of 84)") for v in gate_rows["samples"])
    assert any("graded only, DR 4 proliferative" in str(v) for v in gate_rows["samples"])
    assert len(at.get("plotly_chart")) >= 8  # curves, gate, Dice, IoU, PR, DR, DME, routing


@pytest.mark.real
def test_gallery_names_the_folders_it_needs_and_works_when_given_them(runs_with_real, tmp_path: Path,
                                                                      real_idrid: Path, real_grading: Path) -> None:
    runs_with_real(roots=[str(tmp_path / "nowhere-seg"), str(tmp_path / "nowhere-grading")])
    at = start("gallery", TIMEOUT)
    at.selectbox(key="run_choice").set_value("idrid").run()
    at.switch_page("pages/gallery.py").run()
    assert not at.exception and not errors(at), errors(at)
    assert at.selectbox(key="gallery_split_idrid").value == "val"
    warning = " ".join(w.value for w in at.warning)
    assert "are not on this machine" in warning and "nowhere-seg" in warning
    assert len(at.get("image")) == 20  # predictions still shown, photographs marked missing
    at.text_input(key="image_roots_idrid").set_value(f"{real_idrid}, {real_grading}").run()
    assert not at.exception and not errors(at), errors(at)
    assert not at.warning and f"Photographs read from {real_idrid}" in texts(at)
    assert len(at.get("image")) == 20
    tiles = [m.value for m in at.markdown if "→" in m.value]
    assert tiles and not any("MISROUTED" in t for t in tiles if "· both →" in t)  # "both" is never misrouted
