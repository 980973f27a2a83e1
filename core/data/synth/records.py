"""Plain records shared by the synthetic generator: the eye's geometry and the lesions drawn on it.

Kept free of drawing code so that the clinical rules in :mod:`grading` can be tested on literal values.
All coordinates are pixels of the image being generated (x to the right, y down).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.vocabulary import LESIONS

# The masks written, in the project's channel order (core.vocabulary); NV is drawn but has no mask in IDRiD.
MASK_LESIONS: tuple[str, ...] = LESIONS
DRAWN_KINDS: tuple[str, ...] = ("MA", "HE", "EX", "SE", "NV")

# IDRiD's native frame; every size constant in this package is quoted at this width and scaled.
NATIVE_WIDTH = 4288
NATIVE_HEIGHT = 2848


def height_for(width: int) -> int:
    """Height of an image ``width`` wide with IDRiD's 4288x2848 aspect."""
    return int(round(width * NATIVE_HEIGHT / NATIVE_WIDTH))


@dataclass(frozen=True)
class Geometry:
    """Where the anatomy sits in one image; ``eye`` is 'left' (disc on the left) or 'right'."""

    width: int
    height: int
    fov_x: float
    fov_y: float
    fov_r: float
    eye: str
    disc_x: float
    disc_y: float
    disc_diameter: float
    fovea_x: float
    fovea_y: float

    @property
    def scale(self) -> float:
        """Pixels here per pixel at IDRiD's native 4288 width."""
        return self.width / NATIVE_WIDTH

    @property
    def temporal_sign(self) -> int:
        """+1 when temporal (away from the disc, towards the fovea) is to the right."""
        return 1 if self.eye == "left" else -1


@dataclass(frozen=True)
class Lesion:
    """One drawn lesion.

    ``r`` is the lesion's extent: no pixel of it lies farther than ``r`` from ``(x, y)``. The clinical rules only
    need kind, position and extent; ``parts`` carries the shape for the painter (kind-specific tuples).
    """

    kind: str
    x: float
    y: float
    r: float
    parts: tuple = field(default=(), compare=False, repr=False)
