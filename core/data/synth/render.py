"""One synthetic photograph: draw the eye, choose lesions (for a target grade or the lesion-rich segmentation
profile), label them by the clinical rules, then paint image and masks.

Each image has its own random stream, derived from (global seed, half, index), so any image can be re-rendered
alone and the dataset is identical whatever the number of worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from core.data.synth import canvas, lesions as les
from core.data.synth.grading import dme_risk, dr_grade
from core.data.synth.records import Geometry, Lesion

HALF_CODES = {"segmentation": 1, "grading": 2}
MAX_ATTEMPTS = 25

# Real training-half presence of each mask: MA 54/54, HE 53/54, EX 54/54, SE 26/54. A little below 1 for the
# common ones, so that "absent lesion, no file" occurs in small synthetic sets too.
SEGMENTATION_PRESENCE = {"MA": 0.97, "HE": 0.95, "EX": 0.96, "SE": 0.48, "NV": 0.15}
BORDER_BGR = np.array([5.0, 1.0, 2.0], np.float32)  # the real black surround is faintly blue


@dataclass
class Sample:
    """A rendered image, its masks (lesion code -> uint8 0/1; only kinds drawn, OD always) and its labels."""

    image: np.ndarray
    masks: dict[str, np.ndarray]
    lesions: list[Lesion]
    geometry: Geometry
    dr_grade: int
    dme_risk: int


def image_rng(seed: int, half: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, HALF_CODES[half], index])


def segmentation_lesions(rng: np.random.Generator, geometry: Geometry) -> list[Lesion]:
    """The lesion-rich profile of IDRiD's segmentation half (counts and presence from its training masks)."""
    p = SEGMENTATION_PRESENCE
    drawn: list[Lesion] = []
    if rng.random() < p["MA"]:
        drawn += les.microaneurysms(rng, geometry, les.lesion_count(rng, 35, 0.94, 1, 150))
    if rng.random() < p["HE"]:
        drawn += les.haemorrhages(rng, geometry, les.lesion_count(rng, 18, 1.0, 1, 110), large=0.25)
    if rng.random() < p["EX"]:
        drawn += les.hard_exudates(rng, geometry, les.lesion_count(rng, 160, 1.2, 6, 1000))
    if rng.random() < p["SE"]:
        drawn += les.soft_exudates(rng, geometry, les.lesion_count(rng, 4, 0.75, 1, 10))
    if rng.random() < p["NV"]:
        drawn += les.neovascularisation(rng, geometry)
    if not any(lesion.kind in ("MA", "HE", "EX", "SE") for lesion in drawn):
        drawn += les.microaneurysms(rng, geometry, les.lesion_count(rng, 20, 0.8, 1, 80))
    return drawn


def graded_lesions(rng: np.random.Generator, geometry: Geometry, grade: int, dme: int) -> list[Lesion]:
    """Lesions meant to give ICDR ``grade`` and DME risk ``dme`` (the caller checks what they really give)."""
    if grade == 0:
        return []
    if grade == 1:
        return les.microaneurysms(rng, geometry, les.lesion_count(rng, 6, 0.7, 1, 25))
    drawn = les.microaneurysms(rng, geometry, les.lesion_count(rng, 25, 0.8, 1, 120))
    severe = grade == 3 or (grade == 4 and rng.random() < 0.4)
    if severe:
        drawn += les.haemorrhages_in_quadrants(rng, geometry, [int(n) for n in rng.integers(21, 31, 4)])
        with_se = rng.random() < 0.6
    else:
        with_he, with_se = rng.random() < 0.85, rng.random() < 0.35
        if dme == 0 and not (with_he or with_se):
            with_he = True
        if with_he:
            drawn += les.haemorrhages(rng, geometry, les.lesion_count(rng, 8, 0.8, 1, 40))
    if with_se:
        drawn += les.soft_exudates(rng, geometry, les.lesion_count(rng, 3, 0.6, 1, 8))
    if dme > 0:
        drawn += les.hard_exudates(rng, geometry, les.lesion_count(rng, 85, 1.0, 6, 650), dme=dme)
    if grade == 4:
        drawn += les.neovascularisation(rng, geometry)
    return drawn


def paint(rng: np.random.Generator, geometry: Geometry, drawn: list[Lesion]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The JPEG-ready BGR uint8 image and its masks."""
    target = canvas.colour_target(rng)
    light = canvas.illumination(rng, geometry)
    fov = canvas.fov_alpha(geometry)
    hard = fov > 0.5
    out = canvas.calibrate_colour(canvas.background(rng, geometry, light), fov, target)
    canvas.paint_macula(rng, out, geometry)
    disc = canvas.paint_disc(rng, out, geometry)
    canvas.paint_vessels(rng, out, geometry)
    masks = les.paint_lesions(rng, out, geometry, drawn, hard)
    masks["OD"] = disc & hard.astype(np.uint8)
    out = cv2.blendLinear(out, np.broadcast_to(BORDER_BGR, out.shape).copy(), fov, 1.0 - fov)
    # Sensor grain: luminance noise at half resolution (full-resolution Gaussian noise would cost more than the
    # rest of the painting).
    h, w = geometry.height, geometry.width
    grain = rng.standard_normal(((h + 1) // 2, (w + 1) // 2), dtype=np.float32) * np.float32(1.5)
    grain = cv2.resize(grain, (w, h), interpolation=cv2.INTER_NEAREST)
    out += grain[..., None]
    out += np.float32(0.5)  # round, not truncate, in the cast below
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8), masks


def render(seed: int, half: str, index: int, width: int, target: tuple[int, int] | None = None) -> Sample:
    """Render image ``index`` of ``half``; with a ``target`` (grade, dme) re-draw lesions until the rules agree."""
    rng = image_rng(seed, half, index)
    geometry = canvas.sample_geometry(rng, width)
    for _attempt in range(MAX_ATTEMPTS):
        drawn = segmentation_lesions(rng, geometry) if target is None else graded_lesions(rng, geometry, *target)
        labels = (dr_grade(drawn, geometry), dme_risk(drawn, geometry))
        if target is None or labels == tuple(target):
            break
    else:
        raise RuntimeError(f"could not draw lesions for grade/DME {target} in {MAX_ATTEMPTS} attempts ({half} #{index})")
    image, masks = paint(rng, geometry, drawn)
    return Sample(image, masks, drawn, geometry, labels[0], labels[1])
