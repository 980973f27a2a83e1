"""The IDRiD reader on the real files and on generated variants, including every bad input it must name."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from builders import (FixtureSpec, grading_csv, grading_image, lesion_mask, make_idrid, seg_image, seg_mask,
                      write_image, write_mask, fundus)
from core.data.idrid import read_idrid
from core.data.imageio import read_image, read_mask
from core.errors import DataError

# --- the real files -------------------------------------------------------------------------------------------


@pytest.mark.real
def test_reads_real_segmentation_half_exactly(real_idrid: Path) -> None:
    index = read_idrid(real_idrid, strict=True)
    assert index.counts()["segmentation"] == {"train": 54, "test": 0}
    assert index.mask_counts("train") == {"MA": 54, "HE": 53, "EX": 54, "SE": 26, "OD": 54}
    assert index.grading == []
    assert index.labels_without_images == {"train": 413, "test": 103}
    assert index.problems == []
    idrid_43 = next(r for r in index.segmentation if r.id == "IDRiD_43")
    assert idrid_43.masks["HE"] is None and idrid_43.masks["OD"] is not None
    assert {r.size for r in index.segmentation} == {(4288, 2848)}


@pytest.mark.real
def test_reads_two_real_roots_one_per_half(real_idrid: Path, real_grading: Path) -> None:
    index = read_idrid([real_idrid, real_grading], strict=True)
    assert index.counts() == {"segmentation": {"train": 54, "test": 0},
                              "classification": {"train": 413, "test": 0}}
    grades = np.bincount([r.dr_grade for r in index.grading], minlength=5).tolist()
    dme = np.bincount([r.dme_risk for r in index.grading], minlength=3).tolist()
    assert grades == [134, 20, 136, 74, 49]
    assert dme == [177, 41, 195]
    assert index.labels_without_images == {"test": 103}  # test labels sit in the first root, images nowhere
    assert {r.root for r in index.grading} == {1}


@pytest.mark.real
def test_real_palette_mask_decodes_to_its_lesion_pixels(real_idrid: Path) -> None:
    index = read_idrid(real_idrid)
    record = next(r for r in index.segmentation if r.id == "IDRiD_01")
    od = read_mask(record.masks["OD"])
    assert od.shape == (2848, 4288) and od.dtype == bool
    assert 0.01 < od.mean() < 0.03  # the disc covers about 1.8% of an image


# --- tolerated variants ---------------------------------------------------------------------------------------


def test_official_layout_fixture(tmp_path: Path) -> None:
    index = read_idrid(make_idrid(tmp_path), strict=True)
    assert index.counts() == {"segmentation": {"train": 6, "test": 3}, "classification": {"train": 10, "test": 5}}
    # Train and test both hold IDRiD_001: keys carry the split.
    keys = [r.key for r in index.grading]
    assert "cls/train/IDRiD_001" in keys and "cls/test/IDRiD_001" in keys
    assert len(set(keys)) == len(keys)


def test_doubled_top_folder(tmp_path: Path) -> None:
    make_idrid(tmp_path / "src")
    for half in ("A. Segmentation", "B. Disease Grading"):
        shutil.copytree(tmp_path / "src" / half, tmp_path / "dl" / half / half)
    index = read_idrid(tmp_path / "dl", strict=True)
    assert index.counts()["segmentation"]["train"] == 6 and index.counts()["classification"]["test"] == 5


def test_root_one_level_above_the_halves(tmp_path: Path) -> None:
    make_idrid(tmp_path / "IDRiD")
    assert read_idrid(tmp_path, strict=True).counts()["segmentation"]["train"] == 6


@pytest.mark.parametrize("half", ["A. Segmentation", "B. Disease Grading"])
def test_either_half_absent(tmp_path: Path, half: str) -> None:
    make_idrid(tmp_path)
    shutil.rmtree(tmp_path / half)
    index = read_idrid(tmp_path, strict=True)
    assert (index.segmentation == []) == (half == "A. Segmentation")
    assert (index.grading == []) == (half == "B. Disease Grading")


@pytest.mark.parametrize("ext", [".jpg", ".jpeg", ".png"])
def test_image_extensions(tmp_path: Path, ext: str) -> None:
    index = read_idrid(make_idrid(tmp_path, FixtureSpec(image_ext=ext)), strict=True)
    assert len(index.segmentation) == 9 and all(r.image.suffix == ext for r in index.segmentation)


@pytest.mark.parametrize("fmt", ["palette", "grey76", "grey255", "rgb", "rgba"])
def test_mask_formats_read_as_the_same_lesion(tmp_path: Path, fmt: str) -> None:
    expected = lesion_mask(96, 64, "EX", 7)
    path = write_mask(tmp_path / f"m_{fmt}.tif", expected, fmt)
    np.testing.assert_array_equal(read_mask(path), expected)


def test_missing_mask_file_means_absent(tmp_path: Path) -> None:
    spec = FixtureSpec(absent={"IDRiD_02": {"SE", "MA"}})
    index = read_idrid(make_idrid(tmp_path, spec), strict=True)
    record = next(r for r in index.segmentation if r.id == "IDRiD_02")
    assert record.masks["SE"] is None and record.masks["MA"] is None and record.masks["EX"] is not None
    assert index.mask_counts("train") == {"MA": 5, "HE": 6, "EX": 6, "SE": 5, "OD": 6}


def test_csv_as_published_and_as_copied(tmp_path: Path) -> None:
    make_idrid(tmp_path, FixtureSpec(official_header=False))
    csv = grading_csv(tmp_path)
    # stray spaces in cells and a trailing space at the end of a row, as in the real training CSV
    text = csv.read_bytes().decode().replace("IDRiD_003,3,0", " IDRiD_003 , 3 ,0 ").replace(
        "IDRiD_004,4,1,,,,,,,,,", "IDRiD_004,4,1,,,,,,,,, ")
    csv.write_bytes(text.encode())
    index = read_idrid(tmp_path, strict=True)
    row3 = next(r for r in index.grading if r.key == "cls/train/IDRiD_003")
    assert (row3.dr_grade, row3.dme_risk) == (3, 0)
    assert len([r for r in index.grading if r.split == "train"]) == 10


def test_labels_without_images_folder_are_counted_not_errors(tmp_path: Path) -> None:
    index = read_idrid(make_idrid(tmp_path, FixtureSpec(grading_images=False)), strict=True)
    assert index.grading == [] and index.labels_without_images == {"train": 10, "test": 5}


def test_image_modes_decode_to_rgb(tmp_path: Path) -> None:
    rgb = fundus(48, 32)
    grey = (rgb[..., 0].astype(np.uint16) * 257)
    paths = {
        "grey": write_image(tmp_path / "g.png", rgb[..., 0]),
        "rgba": write_image(tmp_path / "a.png", np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])),
        "16bit": tmp_path / "w.png",
    }
    from PIL import Image
    Image.fromarray(grey).save(paths["16bit"])
    for name, path in paths.items():
        out = read_image(path)
        assert out.shape == (32, 48, 3) and out.dtype == np.uint8, name
        np.testing.assert_allclose(out[..., 0].astype(int), rgb[..., 0].astype(int), atol=1, err_msg=name)


# --- bad data: strict names it, lenient skips it ---------------------------------------------------------------


def test_root_not_found(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_idrid(tmp_path / "nope")


def test_root_not_idrid(tmp_path: Path) -> None:
    (tmp_path / "holiday photos").mkdir()
    with pytest.raises(DataError, match="is not an IDRiD folder"):
        read_idrid(tmp_path)


def _break(root: Path, kind: str) -> tuple[Path, str]:
    """Damage one sample of a fixture; return the file the message must name and a pattern of the message."""
    if kind == "not_an_image":
        path = seg_image(root, "IDRiD_02")
        path.write_bytes(b"this is not a JPEG")
        return path, "is not an image file"
    if kind == "truncated":
        path = seg_image(root, "IDRiD_03")
        path.write_bytes(path.read_bytes()[:-300])
        return path, "truncated"
    if kind == "mask_size":
        path = seg_mask(root, "IDRiD_04", "EX")
        write_mask(path, np.zeros((32, 48), bool))
        return path, "48x32 but its image IDRiD_04.jpg is 96x64"
    if kind == "label_range":
        csv = grading_csv(root)
        csv.write_bytes(csv.read_bytes().replace(b"IDRiD_002,2,2", b"IDRiD_002,7,2"))
        return csv, r"line 3: Retinopathy grade '7' is out of range 0-4"
    if kind == "row_without_image":
        grading_image(root, "IDRiD_005").unlink()
        return grading_csv(root), "line 6: image 'IDRiD_005' is not in"
    if kind == "image_without_label":
        path = write_image(grading_image(root, "IDRiD_099"), fundus())
        return path, "has no label row"
    if kind == "duplicate_row":
        csv = grading_csv(root)
        csv.write_bytes(csv.read_bytes() + b"IDRiD_001,0,0,,,,,,,,,\r\n")
        return csv, "duplicate id 'IDRiD_001'"
    if kind == "duplicate_image":
        path = write_image(seg_image(root, "IDRiD_01", ext=".png"), fundus())
        return path.parent, "duplicate id 'IDRiD_01'"
    raise ValueError(kind)


BAD = ["not_an_image", "truncated", "mask_size", "label_range", "row_without_image", "image_without_label",
       "duplicate_row", "duplicate_image"]


@pytest.mark.parametrize("kind", BAD)
def test_strict_stops_with_one_clear_message(tmp_path: Path, kind: str) -> None:
    make_idrid(tmp_path)
    named, pattern = _break(tmp_path, kind)
    with pytest.raises(DataError) as caught:
        read_idrid(tmp_path, strict=True)
    message = str(caught.value)
    assert str(named) in message and pattern.split(":")[-1].strip().split(" '")[0] in message
    assert "\n" not in message


@pytest.mark.parametrize("kind", BAD)
def test_lenient_skips_and_lists(tmp_path: Path, kind: str) -> None:
    make_idrid(tmp_path)
    named, pattern = _break(tmp_path, kind)
    index = read_idrid(tmp_path, strict=False)
    assert len(index.problems) >= 1
    import re
    assert any(str(named) in str(p) and re.search(pattern, str(p)) for p in index.problems), index.problems
    total = len(index.segmentation) + len(index.grading)
    assert total >= 9 + 15 - 2  # the rest of the dataset is still there
