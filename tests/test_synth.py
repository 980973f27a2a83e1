"""The synthetic IDRiD: layout and formats like the real download, labels by the clinical rules, determinism.

One small dataset (9 segmentation and 25 grading images at 320 px) is generated once per session with two
worker processes and once more in-process; most tests read it.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from core.__main__ import main as cli_main
from core.data.synth import generate_dataset, writer
from core.data.synth.grading import (
    QUADRANTS,
    SEVERE_HE_PER_QUADRANT,
    dme_risk,
    dr_grade,
    haemorrhages_per_quadrant,
    quadrant,
)
from core.data.synth.plan import plan, segmentation_id, split_sizes, target_schedule
from core.data.synth.records import Geometry, Lesion, height_for
from core.data.synth.render import render
from core.errors import ConfigError, DataError

N_SEG, N_CLS, WIDTH, SEED = 9, 25, 320, 3
HEIGHT = height_for(WIDTH)
LESION_KINDS = ("MA", "HE", "EX", "SE")


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "idrid"
    generate_dataset(out, n_seg=N_SEG, n_cls=N_CLS, width=WIDTH, seed=SEED, workers=2, progress=False)
    return out


@pytest.fixture(scope="session")
def synth_inline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same dataset generated without worker processes."""
    out = tmp_path_factory.mktemp("synth-inline") / "idrid"
    generate_dataset(out, n_seg=N_SEG, n_cls=N_CLS, width=WIDTH, seed=SEED, workers=1, progress=False)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != "synth.json"}


def _csv_rows(root: Path, split: str) -> dict[str, tuple[int, int]]:
    text = writer.csv_path(root, split).read_bytes().decode("ascii")
    rows = text.split("\r\n")[1:-1]
    return {r.split(",")[0]: (int(r.split(",")[1]), int(r.split(",")[2])) for r in rows}


# --- determinism ---------------------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files_whatever_the_workers(synth: Path, synth_inline: Path) -> None:
    a, b = _files(synth), _files(synth_inline)
    assert a.keys() == b.keys()
    assert all(a[name] == b[name] for name in a), [name for name in a if a[name] != b[name]][:5]


def test_other_seed_gives_other_images(tmp_path: Path, synth: Path) -> None:
    out = tmp_path / "other"
    generate_dataset(out, n_seg=2, n_cls=2, width=WIDTH, seed=SEED + 1, progress=False)
    image = "A. Segmentation/1. Original Images/a. Training Set/IDRiD_01.jpg"
    assert (out / image).read_bytes() != (synth / image).read_bytes()


def test_each_file_is_its_image_rendered_alone(synth: Path) -> None:
    """An image depends only on (seed, half, index): re-rendering one reproduces its file exactly."""
    spec = next(s for s in plan(N_SEG, N_CLS, SEED) if s.half == "grading" and s.split == "test")
    sample = render(SEED, spec.half, spec.index, WIDTH, spec.target)
    assert writer.encode_jpeg(sample.image) == writer.grading_image_path(synth, spec.split, spec.id).read_bytes()


# --- layout and formats --------------------------------------------------------------------------------------


def test_layout_and_ids_like_the_real_download(synth: Path) -> None:
    seg_train, seg_test = split_sizes(N_SEG, 1 / 3)
    cls_train, cls_test = split_sizes(N_CLS, 0.2)
    assert (seg_train, seg_test, cls_train, cls_test) == (6, 3, 20, 5)
    seg = synth / "A. Segmentation" / "1. Original Images"
    assert sorted(p.name for p in (seg / "a. Training Set").iterdir()) == [f"IDRiD_{i:02d}.jpg" for i in range(1, 7)]
    assert sorted(p.name for p in (seg / "b. Testing Set").iterdir()) == [f"IDRiD_{i:02d}.jpg" for i in range(7, 10)]
    grading = synth / "B. Disease Grading" / "1. Original Images"
    assert sorted(p.name for p in (grading / "a. Training Set").iterdir()) == [f"IDRiD_{i:03d}.jpg" for i in range(1, 21)]
    assert sorted(p.name for p in (grading / "b. Testing Set").iterdir()) == [f"IDRiD_{i:03d}.jpg" for i in range(1, 6)]
    truth = synth / "A. Segmentation" / "2. All Segmentation Groundtruths"
    for split in ("a. Training Set", "b. Testing Set"):
        assert sorted(p.name for p in (truth / split).iterdir()) == sorted(writer.LESION_FOLDERS.values())
    assert sorted(p.name for p in (synth / "B. Disease Grading" / "2. Groundtruths").iterdir()) == sorted(writer.CSV_NAMES.values())
    assert not list(synth.rglob("*.tmp")), "temporary files left behind"


def test_ids_pad_like_idrid() -> None:
    assert segmentation_id(7, 81) == "IDRiD_07"
    assert segmentation_id(7, 120) == "IDRiD_007"
    assert split_sizes(81, 1 / 3) == (54, 27)
    assert split_sizes(516, 0.2) == (413, 103)


def test_images_are_jpegs_of_the_requested_size(synth: Path) -> None:
    images = list(synth.rglob("*.jpg"))
    assert len(images) == N_SEG + N_CLS
    for path in images:
        assert path.read_bytes()[:2] == b"\xff\xd8"
        image = cv2.imread(str(path))
        assert image.shape == (HEIGHT, WIDTH, 3)
    assert HEIGHT == round(WIDTH * 2848 / 4288)


def test_masks_are_one_bit_palette_tiffs_like_the_real_ones(synth: Path) -> None:
    masks = list(synth.rglob("*.tif"))
    assert masks
    for path in masks:
        with Image.open(path) as image:
            assert image.mode == "P"
            assert image.size == (WIDTH, HEIGHT)
            assert image.tag_v2[258] == (1,)  # BitsPerSample
            assert image.getpalette()[:6] == [0, 0, 0, 255, 0, 0]
            values = set(np.unique(np.asarray(image)).tolist())
        assert values == {0, 1}, f"{path.name}: a written mask is never empty"
        grey = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert grey.shape == (HEIGHT, WIDTH) and set(np.unique(grey).tolist()) == {0, 76}


def test_csvs_are_laid_out_like_the_official_file(synth: Path) -> None:
    row = re.compile(r"^IDRiD_\d{3},[0-4],[0-2],{9}$")
    for split, n in (("train", 20), ("test", 5)):
        data = writer.csv_path(synth, split).read_bytes()
        assert data.endswith(b"\r\n") and b"\n" not in data.replace(b"\r\n", b"")
        lines = data.decode("ascii").split("\r\n")[:-1]
        assert lines[0] == "Image name,Retinopathy grade,Risk of macular edema ,,,,,,,,,"
        assert len(lines) == n + 1 and all(row.match(line) for line in lines[1:])
        ids = [line.split(",")[0] for line in lines[1:]]
        assert ids == sorted(ids) == [p.stem for p in sorted(writer.grading_image_path(synth, split, "x").parent.iterdir())]


# --- lesions and labels --------------------------------------------------------------------------------------


def test_every_segmentation_image_has_a_lesion_and_a_disc_and_absent_lesions_have_no_file(synth: Path) -> None:
    for spec in (s for s in plan(N_SEG, N_CLS, SEED) if s.half == "segmentation"):
        sample = render(SEED, spec.half, spec.index, WIDTH)
        drawn = {lesion.kind for lesion in sample.lesions}
        assert drawn & set(LESION_KINDS), f"{spec.id} has no lesion"
        for kind in (*LESION_KINDS, "OD"):
            path = writer.mask_path(synth, spec.split, spec.id, kind)
            assert path.is_file() == (kind in drawn or kind == "OD"), (spec.id, kind)
    assert not list((synth / "B. Disease Grading").rglob("*.tif")), "the grading half carries no masks"


def test_segmentation_masks_are_lesion_rich(tmp_path: Path) -> None:
    """Like the real half (MA 54/54, HE 53/54, EX 54/54, SE 26/54): the common lesions nearly always present."""
    kinds = [{les.kind for les in render(SEED, "segmentation", i, 128).lesions} for i in range(40)]
    share = {k: sum(k in ks for ks in kinds) / len(kinds) for k in LESION_KINDS}
    assert share["MA"] >= 0.85 and share["HE"] >= 0.8 and share["EX"] >= 0.8
    assert 0.25 <= share["SE"] <= 0.75


def test_every_grade_and_dme_class_in_both_splits(synth: Path) -> None:
    for split in ("train", "test"):
        rows = _csv_rows(synth, split).values()
        assert {g for g, _ in rows} == {0, 1, 2, 3, 4}
        assert {d for _, d in rows} == {0, 1, 2}


def _dme_from_mask(mask: np.ndarray, geometry: Geometry) -> int:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return 0
    nearest = np.hypot(xs - geometry.fovea_x, ys - geometry.fovea_y).min()
    return 2 if nearest <= geometry.disc_diameter else 1


def test_labels_are_the_clinical_rules_applied_to_what_was_drawn(synth: Path) -> None:
    for spec in (s for s in plan(N_SEG, N_CLS, SEED) if s.half == "grading"):
        sample = render(SEED, spec.half, spec.index, WIDTH, spec.target)
        grade, dme = _csv_rows(synth, spec.split)[spec.id]
        assert (grade, dme) == spec.target == (dr_grade(sample.lesions, sample.geometry), dme_risk(sample.lesions, sample.geometry))
        kinds = set(sample.masks) - {"OD"}
        if grade == 0:
            assert not kinds
        elif grade == 1:
            assert kinds == {"MA"}
        else:
            assert kinds & {"HE", "EX", "SE"}
        counts = haemorrhages_per_quadrant(sample.lesions, sample.geometry)
        assert (grade == 3) == (min(counts.values()) > SEVERE_HE_PER_QUADRANT) or grade == 4
        assert (grade == 4) == any(les.kind == "NV" for les in sample.lesions)
        # DME from the exudate pixels themselves agrees with DME from the lesion list (margins keep them apart).
        assert _dme_from_mask(sample.masks.get("EX", np.zeros((1, 1))), sample.geometry) == dme


def test_anatomy_follows_idrid_geometry() -> None:
    for i in range(12):
        g = render(SEED, "grading", i, 1024, (0, 0)).geometry
        assert 387 * g.scale <= g.disc_diameter <= 652 * g.scale
        offset = (g.fovea_x - g.disc_x) / g.disc_diameter
        assert 2.2 <= abs(offset) <= 2.8 and np.sign(offset) == g.temporal_sign
        assert 0 < (g.fovea_y - g.disc_y) / g.disc_diameter < 0.5
        assert (g.disc_x < g.width / 2) == (g.eye == "left")


# --- the clinical rules on literal cases ---------------------------------------------------------------------

# A left eye: disc at (100, 300), disc diameter 100, fovea 250 px to the right and a little below.
EYE = Geometry(width=1000, height=660, fov_x=460, fov_y=330, fov_r=400, eye="left", disc_x=100, disc_y=300,
               disc_diameter=100, fovea_x=350, fovea_y=310)


def _les(kind: str, x: float = 500, y: float = 200, r: float = 2) -> Lesion:
    return Lesion(kind, x, y, r)


def _he_in_quadrants(per_quadrant: list[int]) -> list[Lesion]:
    spots = {"superotemporal": (500, 100), "superonasal": (200, 100), "inferotemporal": (500, 500), "inferonasal": (200, 500)}
    return [_les("HE", *spots[q]) for q, n in zip(QUADRANTS, per_quadrant) for _ in range(n)]


def test_quadrants_are_about_the_fovea_and_mirror_with_the_eye() -> None:
    assert quadrant(500, 100, EYE) == "superotemporal"
    assert quadrant(200, 500, EYE) == "inferonasal"
    right = Geometry(**{**EYE.__dict__, "eye": "right"})
    assert quadrant(500, 100, right) == "superonasal"


@pytest.mark.parametrize(
    ("lesions", "grade"),
    [
        ([], 0),
        ([_les("MA")], 1),
        ([_les("MA")] * 30, 1),
        ([_les("MA"), _les("HE")], 2),
        ([_les("EX")], 2),
        ([_les("SE")], 2),
        (_he_in_quadrants([21, 21, 21, 21]), 3),
        (_he_in_quadrants([20, 30, 30, 30]), 2),  # "more than 20" in each quadrant
        (_he_in_quadrants([40, 40, 40, 0]), 2),  # not all four quadrants
        (_he_in_quadrants([21, 21, 21, 21]) + [_les("NV")], 4),
        ([_les("NV")], 4),
    ],
)
def test_dr_grade_follows_icdr(lesions: list[Lesion], grade: int) -> None:
    assert dr_grade(lesions, EYE) == grade


@pytest.mark.parametrize(
    ("exudates", "risk"),
    [
        ([], 0),
        ([(350 + 250, 310, 5)], 1),  # 2.5 disc diameters away
        ([(350 + 120, 310, 30)], 2),  # centre 1.2 DD away, but its edge within 0.9 DD
        ([(350 + 100, 310, 0)], 2),  # exactly one disc diameter: within
        ([(350 + 101, 310, 0)], 1),
        ([(600, 310, 5), (360, 300, 2)], 2),  # any one near the fovea decides
    ],
)
def test_dme_risk_follows_idrid(exudates: list[tuple[float, float, float]], risk: int) -> None:
    lesions = [_les("MA")] + [Lesion("EX", x, y, r) for x, y, r in exudates]
    assert dme_risk(lesions, EYE) == risk


def test_schedule_covers_every_class_and_is_balanced_ish() -> None:
    rng = np.random.default_rng(0)
    five = target_schedule(5, rng)
    assert {g for g, _ in five} == set(range(5)) and {d for _, d in five} == {0, 1, 2}
    many = target_schedule(1000, rng)
    shares = np.bincount([g for g, _ in many], minlength=5) / 1000
    assert shares.min() >= 0.1 and shares.max() <= 0.3
    assert all(d == 0 for g, d in many if g < 2), "grades 0-1 have no exudates, hence DME 0"


# --- arguments and the output folder -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [({"n_seg": 0}, "n-seg"), ({"n_seg": -3}, "n-seg"), ({"n_cls": 0}, "n-cls"), ({"width": 32}, "width"), ({"seed": -1}, "seed")],
)
def test_bad_arguments_raise_one_clear_error(tmp_path: Path, kwargs: dict, word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        generate_dataset(tmp_path / "x", **({"n_seg": 2, "n_cls": 2, "width": 96} | kwargs), progress=False)
    assert not (tmp_path / "x").exists()


def test_cli_reports_bad_arguments_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["synth", "--out", str(tmp_path / "x"), "--n-seg", "0"]) == 2
    assert "n-seg" in capsys.readouterr().err
    assert cli_main(["synth", "--out", str(tmp_path / "x"), "--width", "63"]) == 2
    assert "width" in capsys.readouterr().err


def test_cli_generates_and_summarises(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli"
    assert cli_main(["synth", "--out", str(out), "--n-seg", "3", "--n-cls", "5", "--width", "96", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 8 images (96x64)" in printed and "DR grade" in printed
    assert len(list(out.rglob("*.jpg"))) == 8


def test_refuses_a_foreign_folder_and_replaces_its_own(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        generate_dataset(foreign, n_seg=2, n_cls=2, width=96, progress=False)
    ours = tmp_path / "ours"
    generate_dataset(ours, n_seg=6, n_cls=6, width=96, progress=False)
    generate_dataset(ours, n_seg=3, n_cls=2, width=96, progress=False)
    assert len(list(ours.rglob("*.jpg"))) == 5, "a regenerated set keeps no stale files"


# --- the project's own reader --------------------------------------------------------------------------------


def test_reader_and_metadata_accept_it(synth: Path) -> None:
    from core.data.idrid import read_idrid
    from core.data.metadata import build_metadata

    index = read_idrid(synth, strict=True)
    assert index.counts() == {"segmentation": {"train": 6, "test": 3}, "classification": {"train": 20, "test": 5}}
    assert not index.problems
    for record in index.grading:
        assert (record.dr_grade, record.dme_risk) == _csv_rows(synth, record.split)[record.id]
    for record in index.segmentation:
        for kind, path in record.masks.items():
            expected = writer.mask_path(synth, record.split, record.id, kind)
            assert (path is not None) == expected.is_file()
            assert path is None or Path(path).resolve() == expected.resolve()
    document = build_metadata(index, val_fraction=0.2, seed=0)
    assert len(document["samples"]) == N_SEG + N_CLS
    assert {s["split"] for s in document["samples"]} == {"train", "val", "test"}


def test_disc_mask_has_idrid_proportions(synth: Path) -> None:
    """OD mask equivalent diameter 387-652 px at 4288 wide, i.e. 0.09-0.152 of the width."""
    for path in (synth / "A. Segmentation").rglob("*_OD.tif"):
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) > 0
        diameter = 2 * math.sqrt(mask.sum() / math.pi) / WIDTH
        assert 0.085 <= diameter <= 0.16, (path.name, diameter)
