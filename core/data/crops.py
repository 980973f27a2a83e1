"""Training crops of segmentation photographs at a higher resolution than the whole-image canvas.

Lesions are small: a microaneurysm of 6-12 pixels at 4288 wide is one or two pixels on a 512 canvas, where a
network cannot learn it. A crop of the canvas side taken from a canvas ``scale`` times larger shows it at 4-8
pixels for the cost of one whole image. Crops are centred on a lesion more often than at random, and the lesion type
is drawn uniformly among those the photograph has, so that soft exudates (half of the photographs) and
microaneurysms (a thousandth of the pixels) are seen as often as the optic disc.

A crop has the same side as the whole-image canvas, so crops and whole images stack into one batch and go through
one model; the loss keeps the gate and the grade heads on whole images (``whole=False`` on a crop).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.errors import ConfigError

# Structures a crop does not teach (WHOLE_IMAGE_STRUCTURES: the optic disc) and where a crop-trained run's
# prediction of each channel comes from (PREDICTION_SOURCES) are columns of the lesion table, with the measurements
# behind them: see core.vocabulary.
from core.vocabulary import LESIONS, PREDICTION_SOURCES, WHOLE_IMAGE_STRUCTURES  # noqa: F401


@dataclass(frozen=True)
class CropPolicy:
    """How segmentation samples are drawn in training; ``scale=0`` turns crops off (whole images only)."""

    scale: float = 0.0  # crop canvas side / whole-image canvas side
    probability: float = 0.75  # share of segmentation draws that are crops rather than whole images
    on_lesion: float = 0.8  # share of crops centred on a lesion pixel rather than anywhere in the field of view
    jitter: float = 0.35  # the lesion lands up to this fraction of the crop side away from the centre

    def __post_init__(self) -> None:
        if self.scale != 0 and self.scale < 1:
            raise ConfigError(f"data.crop_scale must be 0 (no crops) or >= 1, got {self.scale}")
        for name in ("probability", "on_lesion", "jitter"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigError(f"data.crop_{name} must lie in [0, 1], got {value}")

    @property
    def enabled(self) -> bool:
        return self.scale >= 1 and self.probability > 0


def _clip_origin(centre: float, side: int, length: int) -> int:
    return int(np.clip(round(centre - side / 2), 0, max(0, length - side)))


def crop_origin(rng: np.random.Generator, masks: np.ndarray, fov: tuple[int, int, int, int], side: int,
                policy: CropPolicy) -> tuple[int, int]:
    """Top-left (y, x) of a ``side`` crop of a canvas with (C, H, W) ``masks`` and field of view box (x0, y0, x1, y1).

    With probability ``on_lesion`` the crop holds a pixel of a lesion type drawn uniformly among those present (the
    optic disc is not one: crops do not teach it); otherwise its centre is uniform over the field of view.
    """
    height, width = masks.shape[1:]
    labelled = crop_channels()
    present = [c for c in range(masks.shape[0]) if labelled[c] and masks[c].any()]
    if present and rng.random() < policy.on_lesion:
        channel = present[int(rng.integers(len(present)))]
        ys, xs = np.nonzero(masks[channel])
        pick = int(rng.integers(len(ys)))
        offset = (rng.random(2) * 2 - 1) * policy.jitter * side
        cy, cx = ys[pick] + offset[0], xs[pick] + offset[1]
    else:
        x0, y0, x1, y1 = fov
        cy, cx = y0 + rng.random() * max(1, y1 - y0), x0 + rng.random() * max(1, x1 - x0)
    return _clip_origin(cy, side, height), _clip_origin(cx, side, width)


def crop_channels() -> np.ndarray:
    """(C,) bool: the mask channels a crop carries labels for."""
    return np.array([code not in WHOLE_IMAGE_STRUCTURES for code in LESIONS])


def lesion_names(masks: np.ndarray) -> list[str]:
    """Codes of the lesions a crop's masks hold; for logs and tests."""
    return [code for code, plane in zip(LESIONS, masks, strict=True) if plane.any()]
