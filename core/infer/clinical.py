"""Clinical read-outs from predicted masks: lesion counts and areas, and the DME risk the masks imply.

The implied DME follows the IDRiD definition (0: no hard exudate; 1: hard exudates farther than one disc diameter
from the centre of the macula; 2: within one disc diameter), with the fovea placed from the optic disc: about 2.5
disc diameters temporal to the disc centre (towards the middle of the photograph, since the disc sits on the nasal
side) and slightly below it (``FOVEA_*`` in ``core.vocabulary``). Shown beside the classifier's DME it gives a
second opinion a clinician can check.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from core.vocabulary import FOVEA_BELOW_DISC_DIAMETERS, FOVEA_DISC_DIAMETERS, LESIONS


@dataclass(frozen=True)
class LesionStats:
    count: int  # connected components
    area_px: float  # in original-image pixels
    area_fraction: float  # of the image


def lesion_stats(masks: np.ndarray, pixel_area: float = 1.0, image_area: float | None = None) -> dict[str, LesionStats]:
    """Per lesion: components and area of a (5, H, W) bool mask; ``pixel_area`` converts mask pixels to original
    pixels when the mask is at a reduced resolution, ``image_area`` is the original image's area in pixels."""
    stats = {}
    total = image_area if image_area else masks.shape[1] * masks.shape[2] * pixel_area
    for channel, code in enumerate(LESIONS):
        mask = masks[channel].astype(np.uint8)
        count = cv2.connectedComponents(mask, connectivity=8)[0] - 1 if mask.any() else 0
        area = float(mask.sum())
        stats[code] = LesionStats(int(count), area * pixel_area, area * pixel_area / total)
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
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(od.astype(np.uint8), connectivity=8)
    if count <= 1:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    area = float(stats[largest, cv2.CC_STAT_AREA])
    diameter = 2.0 * np.sqrt(area / np.pi)
    return (float(centroids[largest][0]), float(centroids[largest][1])), diameter


def place_fovea(disc_centre: tuple[float, float], disc_diameter: float, width: int) -> tuple[float, float]:
    """Temporal to the disc means towards the image's middle: the disc sits on the nasal side of the photograph."""
    direction = 1.0 if disc_centre[0] < width / 2 else -1.0
    return (disc_centre[0] + direction * FOVEA_DISC_DIAMETERS * disc_diameter,
            disc_centre[1] + FOVEA_BELOW_DISC_DIAMETERS * disc_diameter)


def implied_dme(masks: np.ndarray) -> ImpliedDme:
    """DME risk from a (5, H, W) bool mask (any resolution: distances are in disc diameters)."""
    od, ex = masks[LESIONS.index("OD")], masks[LESIONS.index("EX")]
    disc = _disc(od)
    if not ex.any():
        return ImpliedDme(0, "no hard exudate found", *(disc or (None, None)))
    if disc is None:
        return ImpliedDme(None, "hard exudates found but no optic disc, so the fovea cannot be placed")
    centre, diameter = disc
    fovea = place_fovea(centre, diameter, od.shape[1])
    ys, xs = np.nonzero(ex)
    nearest = float(np.sqrt((xs - fovea[0]) ** 2 + (ys - fovea[1]) ** 2).min() / diameter)
    if nearest <= 1.0:
        return ImpliedDme(2, f"hard exudate {nearest:.2f} disc diameters from the fovea (within one)",
                          centre, diameter, fovea, nearest)
    return ImpliedDme(1, f"nearest hard exudate {nearest:.2f} disc diameters from the fovea (farther than one)",
                      centre, diameter, fovea, nearest)
