"""What the Predictor refuses and what it says it did (core.infer.admission, core.data.imageio.conversion_notes):
the same words through ``predict``, the folder CSV and ``python -m core predict``."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from builders import fundus, write_image
from core.errors import DataError
from core.infer.admission import MAX_ASPECT, MIN_SIDE, check_fundus_shape
from core.infer.batch import predict_paths
from core.infer.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("size", "words"), [
    ((10, 10), "only 10x10 pixels"),
    ((4000, 20), "200.0 times longer than wide"),
    ((20, 4000), "200.0 times longer than wide"),
    ((MIN_SIDE - 1, 40), f"only {MIN_SIDE - 1}x40 pixels"),
    ((int(MAX_ASPECT * 100) + 1, 100), "times longer than wide"),
])
def test_shapes_no_fundus_camera_makes_are_refused_by_name(size: tuple[int, int], words: str) -> None:
    with pytest.raises(DataError, match=words) as raised:
        check_fundus_shape(size, "x.png")
    assert str(raised.value).startswith("image x.png ")


@pytest.mark.parametrize("size", [(MIN_SIDE, MIN_SIDE), (4288, 2848), (1920, 1080), (int(MAX_ASPECT * 100), 100)])
def test_shapes_a_camera_can_make_pass(size: tuple[int, int]) -> None:
    check_fundus_shape(size, "x.png")


def test_refusals_reach_predict_the_folder_csv_and_the_cli_in_the_same_words(tiny_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_image(folder / "tiny.png", fundus(10, 10))
    write_image(folder / "strip.png", np.full((20, 4000, 3), 120, np.uint8))
    write_image(folder / "eye.png", fundus(400, 300, seed=2))
    predictor = Predictor.from_run(tiny_run)
    with pytest.raises(DataError, match="only 10x10 pixels"):
        predictor.predict(np.full((10, 10, 3), 120, np.uint8))
    with pytest.raises(DataError, match="image upload.png is only 10x10"):
        predictor.prepare((folder / "tiny.png").read_bytes(), name="upload.png")
    rows = {Path(r["image"]).name: r for r in predict_paths(predictor, folder, tmp_path / "out", progress=False)}
    assert "only 10x10 pixels" in rows["tiny.png"]["error"] and str(folder / "tiny.png") in rows["tiny.png"]["error"]
    assert "times longer than wide" in rows["strip.png"]["error"]
    assert rows["eye.png"]["error"] == ""
    result = subprocess.run([sys.executable, "-m", "core", "predict", "--run", str(tiny_run), "--input", str(folder),
                             "--out", str(tmp_path / "cli")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 3, result.stderr[-2000:]
    assert rows["tiny.png"]["error"] in result.stdout and rows["strip.png"]["error"] in result.stdout


def _tiff_pages(path: Path, rgb: np.ndarray) -> Path:
    first, second = Image.fromarray(rgb), Image.fromarray(rgb[::-1].copy())
    first.save(path, save_all=True, append_images=[second])
    return path


def _rotated_jpeg(path: Path, rgb: np.ndarray) -> Path:
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 when displayed
    image.save(path, exif=exif, quality=95)
    return path


def test_silent_conversions_are_said_in_the_warnings_and_the_csv(tiny_run: Path, tmp_path: Path) -> None:
    rgb = fundus(400, 300, seed=1)
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(rgb[..., 1]).save(folder / "grey.png")
    Image.fromarray(rgb[..., 1].astype(np.uint16) * 257).save(folder / "sixteen.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    _tiff_pages(folder / "pages.tif", rgb)
    _rotated_jpeg(folder / "turned.jpg", rgb)
    Image.fromarray(np.dstack([rgb, np.full((300, 400), 255, np.uint8)])).save(folder / "alpha.png")
    Image.fromarray(rgb).save(folder / "plain.png")
    expected = {
        "grey.png": "a greyscale image: its one channel was copied to red, green and blue",
        "sixteen.png": "a 16-bit greyscale image: scaled to 8 bits",
        "cmyk.jpg": "a CMYK image: converted to RGB",
        "pages.tif": "a file of 2 pages or frames: only the first was read",
        "turned.jpg": "turned upright as its EXIF orientation (6) says",
        "alpha.png": "transparent pixels composited on black",
    }
    predictor = Predictor.from_run(tiny_run)
    for name, words in expected.items():
        prediction = predictor.predict(folder / name)
        assert any(words in w for w in prediction.warnings), (name, prediction.warnings)
        assert any(words in w for w in prediction.report()["warnings"]), name
    assert not any("converted" in w or "copied" in w for w in predictor.predict(folder / "plain.png").warnings)
    assert any("16-bit" in w or "uint16" in w for w in predictor.predict(rgb.astype(np.uint16) * 257).warnings)
    predict_paths(predictor, folder, tmp_path / "out", progress=False, masks="none")
    with open(tmp_path / "out" / "predictions.csv", newline="") as handle:
        written = {Path(r["image"]).name: r["warnings"] for r in csv.DictReader(handle)}
    for name, words in expected.items():
        assert words in written[name], (name, written[name])
    assert predictor.predict(folder / "turned.jpg").original_size == (300, 400)  # shown upright: sides swapped


def test_one_rule_for_gifs_a_folder_a_file_and_the_uploader(tiny_run: Path, tmp_path: Path) -> None:
    """GIFs were refused by the uploader, skipped in a folder and predicted alone; now all three read them."""
    from core.infer.batch import INPUT_SUFFIXES
    from core.views.upload import UPLOAD_TYPES

    assert [f".{t}" for t in UPLOAD_TYPES] == list(INPUT_SUFFIXES)
    rgb = fundus(400, 300, seed=3)
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(rgb).save(folder / "eye.gif")
    frames = [Image.fromarray(rgb), Image.fromarray(rgb[::-1].copy())]
    frames[0].save(folder / "moving.gif", save_all=True, append_images=frames[1:])
    predictor = Predictor.from_run(tiny_run)
    rows = {Path(r["image"]).name: r for r in predict_paths(predictor, folder, tmp_path / "out", progress=False,
                                                                masks="none")}
    assert set(rows) == {"eye.gif", "moving.gif"} and all(not r["error"] for r in rows.values())
    assert "a palette image: converted to RGB" in rows["eye.gif"]["warnings"]
    assert "a file of 2 pages or frames: only the first was read" in rows["moving.gif"]["warnings"]
    single = predictor.predict(folder / "eye.gif")
    assert single.original_size == (400, 300) and "a palette image: converted to RGB" in single.warnings
