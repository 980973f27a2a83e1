"""Read-outs a clinician can trust (issue 20): areas are shares of the photograph, one optic disc, upload messages
that name the file."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from builders import fundus, write_image
from core.infer.batch import predict_paths
from core.infer.clinical import implied_dme, lesion_stats, place_fovea
from core.infer.predictor import Predictor
from core.views import upload as upload_views
from core.vocabulary import LESIONS
from studio_helpers import bad_uploads

OD = LESIONS.index("OD")


def _strip(width: int = 1000, height: int = 400) -> np.ndarray:
    """A wide photograph without a dark border, as wide as admitted (2.5:1; a 4000x20 strip is refused,
    test_admission): most of the square canvas is padding."""
    return np.full((height, width, 3), (200, 90, 40), np.uint8)


def _fractions(prediction) -> dict[str, float]:
    return {code: value["area_fraction"] for code, value in prediction.report()["lesions"].items()}


@pytest.mark.parametrize("image", ["strip", "fundus"])
def test_area_fractions_are_shares_of_the_photograph(tiny_run: Path, image: str) -> None:
    rgb = _strip() if image == "strip" else fundus(400, 300, seed=5)
    prediction = Predictor.from_run(tiny_run).predict(rgb, both=True)
    assert all(0.0 <= f <= 1.0 for f in _fractions(prediction).values()), _fractions(prediction)
    prediction.seg_probs = np.ones_like(prediction.seg_probs)  # every pixel lesion: the denominator, exactly
    assert _fractions(prediction) == dict.fromkeys(LESIONS, 1.0)
    assert all(row["% of field of view"] == 100.0 for row in upload_views.lesion_rows(prediction, 0.5))


def test_predict_csv_area_fractions_never_exceed_one(tiny_run: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "in"
    write_image(folder / "strip.png", _strip())
    write_image(folder / "eye.png", fundus(400, 300, seed=6))
    monkeypatch.setattr(Predictor, "lesion_probs", lambda self, images, logits: torch.ones_like(logits.float()))
    rows = predict_paths(Predictor.from_run(tiny_run), folder, tmp_path / "out", both=True, progress=False)
    with open(tmp_path / "out" / "predictions.csv", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert len(rows) == len(written) == 2
    for row in written:
        assert [float(row[f"{code}_area_fraction"]) for code in LESIONS] == [1.0] * len(LESIONS), row


def _several_discs() -> np.ndarray:
    """A disc of diameter ~40 at (100, 150) and two small false ones; two microaneurysms, one exudate."""
    masks = np.zeros((5, 300, 400), bool)
    yy, xx = np.mgrid[:300, :400]
    masks[OD] = (xx - 100) ** 2 + (yy - 150) ** 2 <= 20 ** 2
    masks[OD, 20:24, 340:344] = True
    masks[OD, 250:253, 300:303] = True
    masks[OD, 280:282, 20:22] = True
    masks[0, 10:12, 10:12] = True
    masks[0, 50:52, 50:53] = True
    masks[2, 200:203, 330:333] = True
    return masks


def test_one_optic_disc_the_largest_component() -> None:
    masks = _several_discs()
    big = (np.mgrid[:300, :400][1] - 100) ** 2 + (np.mgrid[:300, :400][0] - 150) ** 2 <= 20 ** 2
    stats = lesion_stats(masks)
    assert stats["OD"].count == 1 and stats["OD"].area_px == float(big.sum())
    assert stats["MA"].count == 2 and stats["EX"].count == 1  # other lesions keep their component counts
    result = implied_dme(masks)
    assert result.disc_centre == pytest.approx((100, 150), abs=0.5)
    assert result.disc_diameter == pytest.approx(2 * np.sqrt(big.sum() / np.pi))
    assert result.fovea == pytest.approx(place_fovea(result.disc_centre, result.disc_diameter, 400))
    assert lesion_stats(np.zeros_like(masks))["OD"].count == 0


def test_the_disc_and_fovea_are_placed_without_exudates_too() -> None:
    masks = _several_discs()
    masks[2] = False
    result = implied_dme(masks)
    assert result.risk == 0 and result.disc_centre == pytest.approx((100, 150), abs=0.5)
    assert result.fovea == pytest.approx(place_fovea(result.disc_centre, result.disc_diameter, 400))


def test_the_report_counts_one_disc(tiny_run: Path) -> None:
    prediction = Predictor.from_run(tiny_run).predict(fundus(400, 300, seed=5), both=True)
    canvas = np.zeros_like(prediction.seg_probs)
    ox, oy = prediction.geometry.offset
    canvas[OD, oy + 10 : oy + 20, ox + 5 : ox + 15] = 1.0  # the disc
    canvas[OD, oy + 30, ox + 40] = 1.0  # a false one
    prediction.seg_probs = canvas
    report = prediction.report()
    assert report["lesions"]["OD"]["count"] == 1
    assert report["implied_dme"]["disc_centre"] == pytest.approx(
        list(prediction.geometry.point_to_original(ox + 9.5, oy + 14.5)), abs=0.2)


def test_predict_cli_names_empty_and_non_image_files_as_the_page_does(tiny_run: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from core.__main__ import main

    folder, out = tmp_path / "in", tmp_path / "out"
    write_image(folder / "eye.png", fundus(400, 300))
    bad = {name: bad_uploads()[name] for name in ("empty.png", "notes.jpg")}
    for name, (data, _) in bad.items():
        (folder / name).write_bytes(data)
    main(["predict", "--run", str(tiny_run), "--input", str(folder), "--out", str(out)])
    stdout = capsys.readouterr().out
    with open(out / "predictions.csv", newline="") as handle:
        rows = {Path(r["image"]).name: r for r in csv.DictReader(handle)}
    assert rows["eye.png"]["error"] == ""
    for name, (_, words) in bad.items():
        error = rows[name]["error"]
        assert f"{name} {words}" in error and str(folder / name) in error, error
        assert error in stdout


# -- batch work and labels that say what gave them (issue 20) --------------------------------------------------------

def _save_grader(run: Path) -> None:
    """A lesion grader fitted on random evidence: the run's grades then come from its lesion maps."""
    from core.infer.evidence import FEATURES, fit_grader
    from core.run.folder import RunDir

    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, len(FEATURES)))
    fit_grader(features, rng.integers(0, 5, 60), rng.integers(0, 3, 60)).save(RunDir(run).grader)


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


GRADE_COLUMNS = [*(f"dr_p{g}" for g in range(5)), *(f"dme_p{r}" for r in range(3)), "grades_from"]


def test_predict_csv_gives_every_grade_probability_and_where_the_grades_came_from(tiny_run: Path,
                                                                                  tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_image(folder / "a.png", fundus(400, 300, seed=1))
    write_image(folder / "b.png", fundus(300, 400, seed=2))
    predict_paths(Predictor.from_run(tiny_run), folder, tmp_path / "heads", both=True, progress=False)
    columns, rows = _read_csv(tmp_path / "heads" / "predictions.csv")
    assert set(GRADE_COLUMNS) <= set(columns)
    for row in rows:
        dr = [float(row[f"dr_p{g}"]) for g in range(5)]
        dme = [float(row[f"dme_p{r}"]) for r in range(3)]
        assert sum(dr) == pytest.approx(1, abs=1e-3) and sum(dme) == pytest.approx(1, abs=1e-3)
        assert all(len(row[f"dr_p{g}"].split(".")[-1]) <= 4 for g in range(5))  # rounded to 4 decimals
        assert int(row["dr_grade"]) == int(np.argmax(dr)) and int(row["dme_risk"]) == int(np.argmax(dme))
        assert row["grades_from"] == "classification heads"
    _save_grader(tiny_run)
    predictor = Predictor.from_run(tiny_run)
    predict_paths(predictor, folder, tmp_path / "grader", both=True, progress=False)
    columns_graded, rows = _read_csv(tmp_path / "grader" / "predictions.csv")
    assert {row["grades_from"] for row in rows} == {"lesion evidence"}
    # the Predict page's CSV has the same columns, an error row among them
    results = [upload_views.UploadResult("a.png", predictor.predict(folder / "a.png", both=True)),
               upload_views.UploadResult("empty.png", error="empty.png is empty (0 bytes)"),
               upload_views.UploadResult("b.png", predictor.predict(folder / "b.png", both=True))]
    page = tmp_path / "page.csv"
    page.write_bytes(upload_views.results_csv(results, 0.5, predictor.grades_source))
    page_columns, page_rows = _read_csv(page)
    assert page_columns == columns_graded
    assert [r["image"] for r in page_rows] == ["a.png", "empty.png", "b.png"]
    assert page_rows[1]["error"] == "empty.png is empty (0 bytes)" and page_rows[1]["dr_grade"] == ""
    assert page_rows[0]["grades_from"] == "lesion evidence"


def test_the_table_across_uploads_has_a_row_per_file_and_one_zip_of_every_mask(tiny_run: Path) -> None:
    import io
    import zipfile

    predictor = Predictor.from_run(tiny_run)
    eye = predictor.predict(fundus(400, 300, seed=5), both=True)
    results = [upload_views.UploadResult("eye.jpg", eye), upload_views.UploadResult("eye.png", eye),
               upload_views.UploadResult("notes.jpg", error="notes.jpg is not an image file (unknown format)")]
    rows = upload_views.results_table(results, 0.5, predictor.grades_source)
    assert [r["file"] for r in rows] == ["eye.jpg", "eye.png", "notes.jpg"]
    first, failed = rows[0], rows[2]
    assert first["DR grade %"] == round(100 * float(eye.dr_probs.max()), 1)
    assert first["DME risk %"] == round(100 * float(eye.dme_probs.max()), 1)
    assert first["grades from"] == "classification heads" and first["error"] == ""
    stats = eye.lesion_stats(0.5)
    for code in LESIONS:
        assert first[f"{code} count"] == stats[code].count
        assert first[f"{code} % of FOV"] == round(100 * stats[code].area_fraction, 3)
    assert failed["error"].startswith("notes.jpg is not an image file") and "route" not in failed
    with zipfile.ZipFile(io.BytesIO(upload_views.all_masks_zip(results, 0.5))) as archive:
        names = archive.namelist()
        assert sorted(names) == sorted(f"{stem}_{code}.png" for stem in ("eye", "eye-2") for code in LESIONS)
        from PIL import Image
        assert Image.open(archive.open("eye_OD.png")).size == (400, 300)


def test_dme_readouts_name_the_part_of_the_model_and_say_when_they_disagree(tiny_run: Path) -> None:
    prediction = Predictor.from_run(tiny_run).predict(fundus(400, 300, seed=5), both=True)
    prediction.seg_probs = np.zeros_like(prediction.seg_probs)  # no exudate: the masks imply DME 0
    prediction.dme_probs = np.array([0.1, 0.2, 0.7])
    assert prediction.report()["dme_disagreement"]
    masks, model = upload_views.dme_readouts(prediction, "lesion evidence", 0.5)
    assert (masks.label, masks.value) == ("DME from the masks", "0 none")
    assert (model.label, model.value) == ("DME risk (lesion grader)", "2 near")
    assert "lesion grader" in masks.note and "2 near" in masks.note
    assert "DME from the masks" in model.note and "0 none" in model.note
    _, heads = upload_views.dme_readouts(prediction, "classification heads", 0.5)
    assert heads.label == "DME risk (classification head)"
    prediction.dme_probs = np.array([0.7, 0.2, 0.1])  # now they agree: nothing said
    masks, model = upload_views.dme_readouts(prediction, "lesion evidence", 0.5)
    assert masks.note == model.note == ""
    assert upload_views.grade_title("dr", "lesion evidence") == "DR grade (lesion grader)"
    assert "not for the DR grade shown" in upload_views.gradcam_caption("dr", "lesion evidence")
    assert "not for" not in upload_views.gradcam_caption("dr", "classification heads")


def test_gradcam_is_zero_on_the_padding_and_peaks_on_the_photograph(tiny_run: Path) -> None:
    predictor = Predictor.from_run(tiny_run)
    image = fundus(400, 200, seed=5)  # wide: the square canvas is padded above and below
    prediction = predictor.predict(image, both=True)
    (ox, oy), (cw, ch) = prediction.geometry.offset, prediction.geometry.content
    assert oy > 0
    cam = np.full(prediction.canvas.shape[:2], 0.5, np.float32)
    cam[0, :] = 1.0  # the global peak lies on the padding
    on_photo = upload_views.cam_on_photograph(cam, prediction.geometry)
    assert on_photo[:oy].max() == 0 and on_photo[oy + ch :].max() == 0
    assert on_photo[oy : oy + ch, ox : ox + cw].min() == pytest.approx(1.0)  # normalised on the photograph
    real = upload_views.cam_on_photograph(predictor.gradcam(image, "dr"), prediction.geometry)
    assert real[:oy].max() == 0 and real.max() in (0.0, pytest.approx(1.0))
    assert upload_views.gradcam_picture(prediction, predictor.gradcam(image, "dme")).shape == prediction.canvas.shape


def test_gallery_judges_the_route_and_the_grades_apart(tmp_path: Path) -> None:
    from core.evaluate.gallery import gallery
    from core.run.folder import RunDir
    from core.views.gallery import grading_verdict, routing_verdict

    run = RunDir(tmp_path / "run")
    run.predictions("test").parent.mkdir(parents=True)
    header = "id,task,route,misrouted,gate_confidence,dr_true,dr_pred,dme_true,dme_pred\n"
    run.predictions("test").write_text(header + "\n".join([
        "cls/a,classification,classification,False,0.9,3,1,0,0",  # routed right, DR wrong
        "cls/b,classification,classification,False,0.9,2,2,1,1",  # both right
        "cls/c,classification,segmentation,True,0.6,0,0,0,2",  # misrouted, DME wrong
        "seg/d,segmentation,segmentation,False,0.9,,,,",  # no grades to judge
    ]) + "\n")
    tiles = {t.id: t for t in gallery(run.path, "test", n=4)}
    assert (tiles["cls/a"].misrouted, tiles["cls/a"].dr_right, tiles["cls/a"].dme_right) == (False, False, True)
    assert (tiles["cls/c"].misrouted, tiles["cls/c"].dr_right, tiles["cls/c"].dme_right) == (True, True, False)
    assert tiles["seg/d"].dr_right is None and tiles["seg/d"].dme_right is None
    routes = {key: routing_verdict(tile.task, tile.misrouted) for key, tile in tiles.items()}
    grades = {key: grading_verdict(tile.dr_right, tile.dme_right) for key, tile in tiles.items()}
    assert "routed right" in routes["cls/a"] and "✗ DR grade wrong" in grades["cls/a"]  # the tick is the route's
    assert "grades right" in grades["cls/b"] and "✗" not in grades["cls/b"]
    assert "MISROUTED" in routes["cls/c"] and "DME risk wrong" in grades["cls/c"]
    assert grades["seg/d"] == ""
