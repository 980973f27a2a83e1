"""The clinical rules that turn what was drawn into IDRiD's two labels.

Pure functions over :class:`Lesion` lists, so the labels of the synthetic set are computed, not assigned.

DR grade (ICDR scale, as IDRiD uses it):
  0  no abnormality;
  1  mild NPDR: microaneurysms only;
  2  moderate NPDR: more than microaneurysms (any haemorrhage, hard or soft exudate) but less than severe;
  3  severe NPDR by the 4-2-1 rule. Only its haemorrhage arm is drawn here (no venous beading, no IRMA):
     more than 20 intraretinal haemorrhages in each of the four quadrants;
  4  PDR: neovascularisation.
Quadrants are those of the photographed field about the fovea: superior/inferior by the horizontal through the
fovea, temporal/nasal by the vertical through it (the disc lies nasal).

DME risk (IDRiD): 0 no hard exudates; 1 hard exudates, all farther than one disc diameter from the fovea;
2 a hard exudate within one disc diameter of the fovea (measured to its nearest point).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from core.data.synth.records import Geometry, Lesion

# ICDR: "more than 20 intraretinal haemorrhages in each of 4 quadrants".
SEVERE_HE_PER_QUADRANT = 20
QUADRANTS: tuple[str, ...] = ("superotemporal", "superonasal", "inferotemporal", "inferonasal")


def quadrant(x: float, y: float, geometry: Geometry) -> str:
    """The quadrant about the fovea that the point ``(x, y)`` falls in (points on a dividing line go superior/temporal)."""
    vertical = "supero" if y <= geometry.fovea_y else "infero"
    temporal = (x - geometry.fovea_x) * geometry.temporal_sign >= 0
    return vertical + ("temporal" if temporal else "nasal")


def haemorrhages_per_quadrant(lesions: Iterable[Lesion], geometry: Geometry) -> dict[str, int]:
    counts = dict.fromkeys(QUADRANTS, 0)
    for lesion in lesions:
        if lesion.kind == "HE":
            counts[quadrant(lesion.x, lesion.y, geometry)] += 1
    return counts


def is_severe(lesions: Iterable[Lesion], geometry: Geometry) -> bool:
    """The haemorrhage arm of the 4-2-1 rule."""
    counts = haemorrhages_per_quadrant(lesions, geometry)
    return all(n > SEVERE_HE_PER_QUADRANT for n in counts.values())


def dr_grade(lesions: Iterable[Lesion], geometry: Geometry) -> int:
    """ICDR grade 0-4 of an image holding ``lesions``."""
    lesions = list(lesions)
    kinds = {lesion.kind for lesion in lesions}
    if "NV" in kinds:
        return 4
    if is_severe(lesions, geometry):
        return 3
    if kinds & {"HE", "EX", "SE"}:
        return 2
    if "MA" in kinds:
        return 1
    return 0


def exudate_distance_to_fovea(lesion: Lesion, geometry: Geometry) -> float:
    """Distance from the fovea to the exudate's nearest possible pixel (0 when it covers the fovea)."""
    centre = math.hypot(lesion.x - geometry.fovea_x, lesion.y - geometry.fovea_y)
    return max(0.0, centre - lesion.r)


def dme_risk(lesions: Iterable[Lesion], geometry: Geometry) -> int:
    """IDRiD macular-oedema risk 0-2 from the hard exudates among ``lesions``."""
    distances = [exudate_distance_to_fovea(lesion, geometry) for lesion in lesions if lesion.kind == "EX"]
    if not distances:
        return 0
    return 2 if min(distances) <= geometry.disc_diameter else 1
