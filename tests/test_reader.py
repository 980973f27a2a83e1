"""The IDRiD reader on the real files and on generated variants, including every bad input it must name."""

from __future__ import annotations

import re
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


def _edit_csv(root: Path, old: bytes, new: bytes) -> Path:
    """The training grading CSV with one piece of a row replaced."""
    csv = grading_csv(root)
    csv.write_bytes(csv.read_bytes().replace(old, new))
    return csv


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
        return _edit_csv(root, b"IDRiD_002,2,2", b"IDRiD_002,7,2"), r"line 3: Retinopathy grade '7' is out of range 0-4"
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
    if kind == "misnamed_mask":  # an EX file dropped into the haemorrhages folder
        path = write_mask(seg_mask(root, "IDRiD_02", "HE").with_name("IDRiD_02_EX.tif"), np.zeros((64, 96), bool))
        return path, "mask name does not end in _HE"
    if kind == "duplicate_mask":  # the same lesion of one image twice, as .tif and .png
        write_mask(seg_mask(root, "IDRiD_02", "EX").with_suffix(".png"), np.zeros((64, 96), bool), "grey255")
        return seg_mask(root, "IDRiD_02", "EX"), r"duplicate EX mask for IDRiD_02 \(also IDRiD_02_EX.png\)"
    if kind == "orphan_mask":
        path = write_mask(seg_mask(root, "IDRiD_77", "OD"), np.zeros((64, 96), bool))
        return path, "mask has no image 'IDRiD_77' in the matching images folder"
    if kind == "image_without_masks":
        path = write_image(seg_image(root, "IDRiD_50"), fundus(seed=50))
        return path, "has no ground-truth mask for any lesion"
    if kind == "non_numeric_grade":
        return _edit_csv(root, b"IDRiD_002,2,2", b"IDRiD_002,two,2"), r"line 3: Retinopathy grade 'two' is not a number"
    if kind == "short_row":
        return _edit_csv(root, b"IDRiD_003,3,0,,,,,,,,,", b"IDRiD_003,3"), "line 4: has too few cells"
    raise ValueError(kind)


BAD = ["not_an_image", "truncated", "mask_size", "label_range", "row_without_image", "image_without_label",
       "duplicate_row", "duplicate_image", "misnamed_mask", "duplicate_mask", "orphan_mask", "image_without_masks",
       "non_numeric_grade", "short_row"]


@pytest.mark.parametrize("kind", BAD)
def test_strict_stops_with_one_clear_message(tmp_path: Path, kind: str) -> None:
    make_idrid(tmp_path)
    named, pattern = _break(tmp_path, kind)
    with pytest.raises(DataError) as caught:
        read_idrid(tmp_path, strict=True)
    message = str(caught.value)
    # the file (and, for a CSV, the line) and the whole reason, on one line
    assert str(named) in message and re.search(pattern, message), message
    assert "\n" not in message


@pytest.mark.parametrize("kind", BAD)
def test_lenient_skips_and_lists(tmp_path: Path, kind: str) -> None:
    make_idrid(tmp_path)
    named, pattern = _break(tmp_path, kind)
    index = read_idrid(tmp_path, strict=False)
    assert len(index.problems) >= 1
    assert any(str(named) in str(p) and re.search(pattern, str(p)) for p in index.problems), index.problems
    total = len(index.segmentation) + len(index.grading)
    assert total >= 9 + 15 - 2  # the rest of the dataset is still there


# --- whole-file problems: no mode can skip a sample of a file it cannot read ------------------------------------


def _csv_without_dme_column(root: Path) -> tuple[Path, str]:
    csv = grading_csv(root)
    text = csv.read_bytes().decode().replace("Risk of macular edema", "Comment")
    csv.write_bytes(text.encode())
    return csv, r"has no column like 'macular' in its header \['Image name', 'Retinopathy grade', 'Comment"


def _empty_csv(root: Path) -> tuple[Path, str]:
    csv = grading_csv(root)
    csv.write_bytes(b"")
    return csv, "is empty"


def _root_is_a_file(root: Path) -> tuple[Path, str]:
    path = root / "IDRiD.zip"
    path.write_bytes(b"PK")
    return path, "is not a folder"


@pytest.mark.parametrize("damage", [_csv_without_dme_column, _empty_csv, _root_is_a_file])
@pytest.mark.parametrize("strict", [True, False])
def test_unreadable_file_stops_both_modes_naming_it(tmp_path: Path, damage, strict: bool) -> None:
    make_idrid(tmp_path)
    named, pattern = damage(tmp_path)
    target = named if damage is _root_is_a_file else tmp_path
    with pytest.raises(DataError) as caught:
        read_idrid(target, strict=strict)
    message = str(caught.value)
    assert str(named) in message and re.search(pattern, message), message
    assert "\n" not in message


def test_csv_with_a_byte_order_mark_reads_like_one_without(tmp_path: Path) -> None:
    """Excel writes UTF-8 CSVs with a BOM; the first header cell must still be found as 'Image name'."""
    make_idrid(tmp_path / "plain")
    make_idrid(tmp_path / "bom")
    csv = grading_csv(tmp_path / "bom")
    csv.write_bytes(b"\xef\xbb\xbf" + csv.read_bytes())
    plain, bom = read_idrid(tmp_path / "plain"), read_idrid(tmp_path / "bom")
    assert bom.problems == [] and len(bom.grading) == len(plain.grading) == 15
    assert [(r.key, r.dr_grade, r.dme_risk) for r in bom.grading] == \
        [(r.key, r.dr_grade, r.dme_risk) for r in plain.grading]


# --- input forms: each checked against the pixels it must give, not only its shape ----------------------------


def test_rgba_with_real_transparency_is_composited_on_black(tmp_path: Path) -> None:
    rgb = fundus(48, 32)
    alpha = np.zeros((32, 48), np.uint8)
    alpha[:, 16:32] = 128  # half transparent
    alpha[:, 32:] = 255  # opaque
    from PIL import Image
    Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png").astype(int)
    assert (out[:, :16] == 0).all()  # fully transparent: the black of a fundus border, not the hidden colour
    np.testing.assert_allclose(out[:, 16:32], rgb[:, 16:32].astype(int) * 128 / 255, atol=1)
    np.testing.assert_array_equal(out[:, 32:], rgb[:, 32:])


def test_cmyk_jpeg_decodes_to_its_rgb(tmp_path: Path) -> None:
    from PIL import Image
    rgb = fundus(96, 64)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=100)
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    out = read_image(tmp_path / "c.jpg")
    assert out.shape == (64, 96, 3)
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 3  # JPEG's loss only, colours not inverted


def _exif_rotated(path: Path, stored: np.ndarray, orientation: int) -> Path:
    from PIL import Image
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif.tobytes(), quality=95)
    return path


def test_exif_orientation_is_honoured_for_images_sizes_and_masks(tmp_path: Path) -> None:
    """A camera stored the pixels sideways with 'rotate 90 CW to view' (orientation 6)."""
    from PIL import Image
    from core.data.imageio import image_size
    from core.data.preprocess import PreprocessConfig, decode_for_canvas

    upright = fundus(96, 64, seed=5)
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # 64 wide, 96 high on disk
    path = _exif_rotated(tmp_path / "phone.jpg", stored, 6)
    assert Image.open(path).size == (64, 96)
    out = read_image(path)
    assert out.shape == (64, 96, 3) and image_size(path) == (96, 64)
    error = np.abs(out.astype(int) - upright.astype(int)).mean()
    turned_wrong = np.abs(out.astype(int) - np.rot90(upright, k=2).astype(int)).mean()
    assert error < 6 < turned_wrong  # JPEG noise, against the same picture upside down
    decoded, original = decode_for_canvas(path, PreprocessConfig(64, 64).size)
    assert original == (96, 64) and decoded.shape[1] > decoded.shape[0]
    mask_stored = np.zeros((96, 64), np.uint8)
    mask_stored[:10, :5] = 255  # top-left corner on disk is the top-right corner once turned
    mask_path = tmp_path / "m.png"
    image = Image.fromarray(mask_stored)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(mask_path, exif=exif.tobytes())
    mask = read_mask(mask_path)
    assert mask.shape == (64, 96) and mask[:5, -10:].all() and mask.sum() == 50


@pytest.mark.parametrize(("values", "expected"), [
    (np.array([[0.0, 0.5, 1.0]], np.float32), [0, 128, 255]),  # a float image in [0, 1]
    (np.array([[0.0, 127.0, 255.0]], np.float64), [0, 127, 255]),  # a float image on the 0-255 scale
    (np.array([[0, 32896, 65535]], np.uint16), [0, 128, 255]),  # 16-bit: the full range maps onto 0-255
    (np.array([[0, 100, 200]], np.uint16), [0, 100, 200]),  # a 16-bit file holding 8-bit values stays as it is
    (np.array([[False, True, True]]), [0, 255, 255]),
])
def test_arrays_of_every_dtype_scale_onto_0_255(values: np.ndarray, expected: list[int]) -> None:
    from core.data.imageio import array_to_rgb

    out = array_to_rgb(values)
    assert out.dtype == np.uint8 and out.shape == (1, 3, 3)
    assert out[0, :, 0].tolist() == expected and (out[..., 0] == out[..., 2]).all()  # grey: three equal channels


def test_grey_with_alpha_arrays_composite_on_black() -> None:
    from core.data.imageio import array_to_rgb

    grey_alpha = np.array([[[200, 0], [200, 255], [200, 128]]], np.uint8)
    assert array_to_rgb(grey_alpha)[0, :, 1].tolist() == [0, 200, 100]
