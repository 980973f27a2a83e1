"""The synthetic segmentation half against the real training half in ../shared/idrid.

60 synthetic images (both splits, 1024 wide, seed 0) are measured exactly as the 54 real ones are
(``core.data.synth.measure``) and must agree, statistic by statistic, within these tolerances:
  lesion area fraction (mean and median over images holding the mask): synthetic/real within x/÷ 1.5 for MA and
    OD, x/÷ 2 for HE, EX and SE (heavy-tailed in the real set);
  share of images holding each mask: ± 0.15;
  field of view: left and right edges and centre ± 0.01 of the width; share of the top and bottom rows inside it
    ± 0.03 and non-zero on both sides (the circle is clipped top and bottom);
  colour inside the field of view (RGB, 0-255): per-channel mean ± 15, standard deviation ± 5;
  hue and saturation inside the field of view (OpenCV HSV): median hue ± 1 (0-180 scale), mean saturation ± 15,
    and the hue rise (median hue of the brightest quarter of the pixels minus that of the darkest quarter) ± 0.6:
    real retinas are orange-red, redder where dim and yellower where lit, not a uniform brown;
  optic disc: centroid ± 0.03 (per eye side), equivalent diameter ± 0.012 of the width.
Skipped when the real files are absent. The real side takes ~15 s (JPEGs decoded at a quarter size, masks at full
size so microaneurysms survive).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core.data.synth import generate_dataset
from core.data.synth.measure import compare, measure_segmentation

N_SEG, WIDTH, SEED = 60, 1024, 0
pytestmark = pytest.mark.real  # every test here compares against the real masks


@pytest.fixture(scope="module")
def checks(real_idrid: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("calibration") / "idrid"
    generate_dataset(out, n_seg=N_SEG, n_cls=1, width=WIDTH, seed=SEED, progress=False)
    synthetic = measure_segmentation(out, ("train", "test"))
    real = measure_segmentation(real_idrid, ("train",))
    assert real.n_images == 54 and synthetic.n_images == N_SEG
    return compare(synthetic, real)


def test_every_statistic_is_within_tolerance(checks) -> None:
    failed = [f"{c.name}: synthetic {c.synthetic:.4g}, real {c.real:.4g}, tolerance {c.tolerance}" for c in checks if not c.ok]
    assert not failed, "\n".join(failed)


def test_the_comparison_covers_lesions_field_of_view_colour_and_disc(checks) -> None:
    names = " ".join(c.name for c in checks)
    for word in ("MA area", "HE area", "EX area", "SE area", "OD area", "fov_left", "fov_top_chord", "mean_r", "std_b",
                 "colour hue:", "colour saturation", "hue_rise", "OD diameter"):
        assert word in names
