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


def _strip(width: int = 4000, height: int = 20) -> np.ndarray:
    """A long thin photograph without a dark border: nearly all of the square canvas is padding."""
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
    write_image(folder / "strip.png", _strip(2000, 20))
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
