"""Clinical read-outs from predicted masks: lesion counts and areas, and the DME risk the masks imply.

The implied DME follows the IDRiD definition (0: no hard exudate; 1: hard exudates farther than one disc diameter
from the centre of the macula; 2: within one disc diameter), with the fovea placed from the optic disc: about 2.5
disc diameters temporal to the disc centre (towards the middle of the photograph, since the disc sits on the nasal
side) and slightly below it (``FOVEA_*`` in ``core.vocabulary``). Shown beside the classifier's DME it gives a
second opinion a clinician can check. The disc is one region, the largest component of the thresholded OD map
(``disc_component``): its count, area, centre and diameter, and so the fovea, all come from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from core.vocabulary import FOVEA_BELOW_DISC_DIAMETERS, FOVEA_DISC_DIAMETERS, LESIONS


@dataclass(frozen=True)
class LesionStats:
    count: int  # connected components; the optic disc is one region (0 or 1)
    area_px: float  # in original-image pixels
    area_fraction: float  # share of the photograph's field-of-view box, in [0, 1] (see ``lesion_stats``)


def disc_component(od: np.ndarray) -> np.ndarray | None:
    """The optic disc as one region: the largest connected component of a thresholded OD map, None when empty.

    An eye has one disc, so the other components are false detections (bright exudate clusters, reflexes at the
    rim); the largest is the disc, and its count, area, centre and diameter are what every read-out uses."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(od.astype(np.uint8), connectivity=8)
    if count <= 1:
        return None
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def lesion_stats(masks: np.ndarray, pixel_area: float = 1.0, image_area: float | None = None) -> dict[str, LesionStats]:
    """Per lesion: components and area of a (5, H, W) bool mask; ``pixel_area`` converts mask pixels to original
    pixels when the mask is at a reduced resolution.

    ``area_fraction`` is the share of the mask's own pixels, so pass the mask of the photograph alone (the canvas
    without its padding, ``Prediction.content_probs``): it can never exceed 1. ``image_area`` (original pixels), when
    given, is the denominator instead. The optic disc counts as one region, its largest component (``disc_component``).
    """
    stats = {}
    for channel, code in enumerate(LESIONS):
        mask = masks[channel].astype(bool)
        if code == "OD":
            disc = disc_component(mask)
            mask, count = (np.zeros_like(mask), 0) if disc is None else (disc, 1)
        else:
            count = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1 if mask.any() else 0
        area = float(mask.sum())
        fraction = area * pixel_area / image_area if image_area else area / mask.size
        stats[code] = LesionStats(int(count), area * pixel_area, fraction)
    return stats


@dataclass(frozen=True)
class ImpliedDme:
    risk: int | None  # None when the disc cannot be found, so the fovea cannot be placed
    reason: str
    disc_centre: tuple[float, float] | None = None
    disc_diameter: float | None = None
    fovea: tuple[float, float] | None = None
    nearest_exudate_dd: float | None = None  # distance from the fovea, in disc diameters

    def to_dict(self) -> dict:
        return asdict(self)


def _disc(od: np.ndarray) -> tuple[tuple[float, float], float] | None:
    """Centre and diameter (of the circle of the same area) of the disc, the largest component of ``od``."""
    disc = disc_component(od)
    if disc is None:
        return None
    ys, xs = np.nonzero(disc)
    diameter = 2.0 * np.sqrt(xs.size / np.pi)
    return (float(xs.mean()), float(ys.mean())), diameter


def place_fovea(disc_centre: tuple[float, float], disc_diameter: float, width: int) -> tuple[float, float]:
    """Temporal to the disc means towards the image's middle: the disc sits on the nasal side of the photograph."""
    direction = 1.0 if disc_centre[0] < width / 2 else -1.0
    return (disc_centre[0] + direction * FOVEA_DISC_DIAMETERS * disc_diameter,
            disc_centre[1] + FOVEA_BELOW_DISC_DIAMETERS * disc_diameter)


def implied_dme(masks: np.ndarray) -> ImpliedDme:
    """DME risk from a (5, H, W) bool mask (any resolution: distances are in disc diameters)."""
    od, ex = masks[LESIONS.index("OD")], masks[LESIONS.index("EX")]
    disc = _disc(od)
    if disc is None:
        if not ex.any():
            return ImpliedDme(0, "no hard exudate found")
        return ImpliedDme(None, "hard exudates found but no optic disc, so the fovea cannot be placed")
    centre, diameter = disc
    fovea = place_fovea(centre, diameter, od.shape[1])
    if not ex.any():
        return ImpliedDme(0, "no hard exudate found", centre, diameter, fovea)
    ys, xs = np.nonzero(ex)
    nearest = float(np.sqrt((xs - fovea[0]) ** 2 + (ys - fovea[1]) ** 2).min() / diameter)
    if nearest <= 1.0:
        return ImpliedDme(2, f"hard exudate {nearest:.2f} disc diameters from the fovea (within one)",
                          centre, diameter, fovea, nearest)
    return ImpliedDme(1, f"nearest hard exudate {nearest:.2f} disc diameters from the fovea (farther than one)",
                      centre, diameter, fovea, nearest)


def referable_from_grades(dr_probs: np.ndarray, dme_probs: np.ndarray) -> np.ndarray:
    """P(more than mild DR) from the grade probabilities: DR grade >= 2 or DME risk >= 1, taking the two heads as
    independent (1 - P(DR < 2) P(DME = 0))."""
    dr, dme = np.asarray(dr_probs, dtype=np.float64), np.asarray(dme_probs, dtype=np.float64)
    return 1.0 - dr[..., :2].sum(axis=-1) * dme[..., 0]


def graded_not_referable(dr_probs: np.ndarray, dme_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The grade probabilities renormalised over the grades of an eye without referable DR (DR 0-1, DME 0).

    A referable gate that sends a photograph to classification has judged it not referable; graded among all grades,
    the classification expert (class-balanced regressions on a coarse lesion summary) gave many of those photographs
    DME risk 1-2, so the prediction said "no referable DR" and a referable grade at once. Among these grades it
    cannot: on checkpoints/idrid's validation split (27 photographs spared the decoder) DME accuracy went from 0.659 to
    0.744 and joint accuracy from 0.415 to 0.463, DR unchanged (docs/training.md).
    """
    dr, dme = np.array(dr_probs, dtype=np.float64), np.array(dme_probs, dtype=np.float64)
    dr[..., 2:], dme[..., 1:] = 0.0, 0.0
    mass = dr.sum(axis=-1, keepdims=True)
    dr = np.where(mass > 0, dr / np.where(mass > 0, mass, 1.0), np.eye(dr.shape[-1])[0])
    return dr, np.broadcast_to(np.eye(dme.shape[-1])[0], dme.shape).copy()
