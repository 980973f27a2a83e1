"""The statistics the synthetic set is calibrated on, computed the same way on real and synthetic files.

- lesion area fraction: mask pixels / image pixels, per image holding that mask, at the mask's full size
  (masks are cheap; tiny microaneurysms would not survive downscaling);
- field of view: pixels whose brightest channel exceeds 20, opened with a 5x5 kernel; its horizontal extent and
  centre as fractions of the width, and the share of the second row / second-to-last row it covers (> 0 means the
  circle is clipped at top and bottom);
- colour: per-channel RGB mean and standard deviation inside the field of view (0-255);
- hue and saturation inside the field of view (OpenCV HSV: hue 0-180, here signed so that reds just below 180
  count as slightly negative instead of wrapping, saturation 0-255): the median hue, the mean saturation, and the
  hue rise, median hue of the brightest quarter of the pixels (by V) minus that of the darkest quarter. Real
  photographs are redder where they are darker (rim, vessels, haemorrhages) and yellower where bright; a
  retina darkened into brown has a flat or negative rise;
- optic disc: centroid (fractions of width and height) and equivalent diameter (fraction of width) of the OD mask.
Images wider than 2000 px are decoded at a quarter size (libjpeg's reduced decoding; fast, same statistics).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from core.data.synth.records import MASK_LESIONS
from core.data.synth.writer import LESION_FOLDERS, SEG, SPLIT_FOLDERS

FOV_THRESHOLD = 20


def read_image(path: Path) -> np.ndarray:
    """BGR image, decoded at a quarter size when it is full-size IDRiD."""
    head = cv2.imread(str(path), cv2.IMREAD_REDUCED_COLOR_8)
    if head is None:
        raise OSError(f"cannot read {path}")
    flag = cv2.IMREAD_REDUCED_COLOR_4 if head.shape[1] * 8 > 2000 else cv2.IMREAD_COLOR
    return cv2.imread(str(path), flag)


def read_mask(path: Path) -> np.ndarray:
    """Boolean mask from any of IDRiD's mask encodings (palette, grey, RGBA)."""
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise OSError(f"cannot read {path}")
    if mask.ndim == 3:
        mask = mask[..., :3].max(axis=2)
    return mask > 0


def fov_mask(image_bgr: np.ndarray) -> np.ndarray:
    fov = (image_bgr.max(axis=2) > FOV_THRESHOLD).astype(np.uint8)
    return cv2.morphologyEx(fov, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8)).astype(bool)


def hue_saturation(image_bgr: np.ndarray, fov: np.ndarray) -> dict[str, float]:
    """Median signed hue, mean saturation and hue rise (bright quarter minus dark quarter) inside ``fov``."""
    hsv = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2HSV)[fov]
    hue = (hsv[:, 0].astype(np.int16) + 90) % 180 - 90  # 0-180 with reds near 180 moved to just below 0
    value = hsv[:, 2]
    low, high = np.percentile(value, (25, 75))
    return {
        "hue": float(np.median(hue)),
        "saturation": float(hsv[:, 1].mean()),
        "hue_rise": float(np.median(hue[value >= high]) - np.median(hue[value <= low])),
    }


def image_stats(image_bgr: np.ndarray) -> dict[str, float]:
    """Field-of-view geometry and colour of one photograph."""
    w = image_bgr.shape[1]
    fov = fov_mask(image_bgr)
    cols = np.nonzero(fov.mean(axis=0) > 0.02)[0]
    left, right = cols[0] / w, (cols[-1] + 1) / w
    pixels = image_bgr[fov][:, ::-1].astype(np.float64)  # RGB
    mean, std = pixels.mean(axis=0), pixels.std(axis=0)
    return {
        "fov_left": left,
        "fov_right": right,
        "fov_centre": (left + right) / 2,
        "fov_top_chord": float(fov[1].mean()),
        "fov_bottom_chord": float(fov[-2].mean()),
        "mean_r": mean[0], "mean_g": mean[1], "mean_b": mean[2],
        "std_r": std[0], "std_g": std[1], "std_b": std[2],
        **hue_saturation(image_bgr, fov),
    }


def disc_stats(mask: np.ndarray) -> dict[str, float]:
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    return {"od_x": xs.mean() / w, "od_y": ys.mean() / h, "od_diameter": 2 * np.sqrt(len(xs) / np.pi) / w}


@dataclass
class SegmentationStats:
    """Statistics of one split of a segmentation half."""

    n_images: int = 0
    presence: dict[str, int] = field(default_factory=dict)  # lesion -> images with a mask
    area_fractions: dict[str, list[float]] = field(default_factory=dict)  # lesion -> one value per mask
    images: list[dict[str, float]] = field(default_factory=list)
    discs: list[dict[str, float]] = field(default_factory=list)

    def mean(self, key: str) -> float:
        """Mean over images of an image statistic (``fov_left``, ``mean_r``...) or of an OD statistic."""
        rows = self.discs if key.startswith("od_") else self.images
        return float(np.mean([row[key] for row in rows]))

    def area_mean(self, lesion: str) -> float:
        return float(np.mean(self.area_fractions[lesion]))

    def area_median(self, lesion: str) -> float:
        return float(np.median(self.area_fractions[lesion]))


def measure_segmentation(root: Path, splits: tuple[str, ...] = ("train",), limit: int | None = None) -> SegmentationStats:
    """Measure the segmentation half's ``splits`` under ``root`` (official folder names)."""
    base = Path(root) / SEG
    jobs = []
    for split in splits:
        image_dir = base / "1. Original Images" / SPLIT_FOLDERS[split]
        truth_dir = base / "2. All Segmentation Groundtruths" / SPLIT_FOLDERS[split]
        jobs += [(path, truth_dir) for path in sorted(image_dir.glob("*.jpg"))]
    stats = SegmentationStats(presence=dict.fromkeys(MASK_LESIONS, 0), area_fractions={k: [] for k in MASK_LESIONS})
    for path, truth_dir in jobs[:limit]:
        stats.n_images += 1
        stats.images.append(image_stats(read_image(path)))
        for lesion in MASK_LESIONS:
            mask_path = truth_dir / LESION_FOLDERS[lesion] / f"{path.stem}_{lesion}.tif"
            if not mask_path.is_file():
                continue
            mask = read_mask(mask_path)
            stats.presence[lesion] += 1
            stats.area_fractions[lesion].append(float(mask.mean()))
            if lesion == "OD":
                stats.discs.append(disc_stats(mask))
    return stats


# Calibration tolerances. Ratios for lesion areas (synthetic / real must lie in [1/t, t]): tight for the
# microaneurysm and disc, whose real spread is narrow, loose for the heavy-tailed haemorrhages and exudates
# (real per-image fractions span two orders of magnitude). Absolute differences for the rest.
AREA_RATIO = {"MA": 1.5, "HE": 2.0, "EX": 2.0, "SE": 2.0, "OD": 1.5}
PRESENCE_DIFF = 0.15  # share of images holding each mask
FOV_DIFF = 0.01  # edges and centre, fraction of the width
CHORD_DIFF = 0.03  # share of the top/bottom row inside the field of view
COLOUR_MEAN_DIFF = 15.0  # 0-255; about 2/3 of the real between-image SD of the means (R 23, G 14, B 20)
COLOUR_STD_DIFF = 5.0
# Hue and saturation inside the field of view (OpenCV HSV). About half the real between-image SD of each per-image
# value (median hue 2.0, mean saturation 31, hue rise 1.1), several standard errors of the 54-image mean.
HUE_DIFF = 1.0
SATURATION_DIFF = 15.0
HUE_RISE_DIFF = 0.6
DISC_POSITION_DIFF = 0.03  # centroid, fraction of width / height, per eye side
DISC_DIAMETER_DIFF = 0.012  # fraction of the width (real 0.123, range 0.090-0.152)


@dataclass
class Check:
    """One calibrated statistic: ``ok`` when ``synthetic`` is within ``tolerance`` of ``real``."""

    name: str
    synthetic: float
    real: float
    tolerance: str
    ok: bool


def _disc_side(stats: SegmentationStats, left: bool) -> dict[str, float]:
    rows = [d for d in stats.discs if (d["od_x"] < 0.46) == left]
    return {k: float(np.mean([d[k] for d in rows])) for k in ("od_x", "od_y")} if rows else {"od_x": np.nan, "od_y": np.nan}


def compare(synthetic: SegmentationStats, real: SegmentationStats) -> list[Check]:
    """Every calibrated statistic, synthetic against real, with its tolerance."""
    checks: list[Check] = []
    for lesion in MASK_LESIONS:
        t = AREA_RATIO[lesion]
        for what, fn in (("mean", SegmentationStats.area_mean), ("median", SegmentationStats.area_median)):
            s, r = fn(synthetic, lesion), fn(real, lesion)
            checks.append(Check(f"{lesion} area fraction, {what} (%)", 100 * s, 100 * r, f"x/÷ {t}", 1 / t <= s / r <= t))
        s, r = synthetic.presence[lesion] / synthetic.n_images, real.presence[lesion] / real.n_images
        checks.append(Check(f"{lesion} images with mask (share)", s, r, f"± {PRESENCE_DIFF}", abs(s - r) <= PRESENCE_DIFF))
    for key, tol in (("fov_left", FOV_DIFF), ("fov_right", FOV_DIFF), ("fov_centre", FOV_DIFF),
                     ("fov_top_chord", CHORD_DIFF), ("fov_bottom_chord", CHORD_DIFF)):
        s, r = synthetic.mean(key), real.mean(key)
        checks.append(Check(f"{key} (fraction)", s, r, f"± {tol}", abs(s - r) <= tol and (s > 0) == (r > 0)))
    for key, tol in [(f"mean_{c}", COLOUR_MEAN_DIFF) for c in "rgb"] + [(f"std_{c}", COLOUR_STD_DIFF) for c in "rgb"]:
        s, r = synthetic.mean(key), real.mean(key)
        checks.append(Check(f"colour {key} in FOV (0-255)", s, r, f"± {tol:g}", abs(s - r) <= tol))
    for key, tol, what in (("hue", HUE_DIFF, "median hue in FOV (OpenCV 0-180)"),
                           ("saturation", SATURATION_DIFF, "mean saturation in FOV (0-255)"),
                           ("hue_rise", HUE_RISE_DIFF, "hue rise, bright quarter minus dark quarter")):
        s, r = synthetic.mean(key), real.mean(key)
        checks.append(Check(f"colour {key}: {what}", s, r, f"± {tol:g}", abs(s - r) <= tol))
    for left in (True, False):
        s, r = _disc_side(synthetic, left), _disc_side(real, left)
        side = "left" if left else "right"
        for key in ("od_x", "od_y"):
            checks.append(Check(f"OD centre {key[-1]}, disc on the {side}", s[key], r[key], f"± {DISC_POSITION_DIFF}",
                                abs(s[key] - r[key]) <= DISC_POSITION_DIFF))
    s, r = synthetic.mean("od_diameter"), real.mean("od_diameter")
    checks.append(Check("OD diameter (fraction of width)", s, r, f"± {DISC_DIAMETER_DIFF}", abs(s - r) <= DISC_DIAMETER_DIFF))
    return checks
