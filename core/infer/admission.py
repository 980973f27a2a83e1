"""What the Predictor refuses, and what it predicts with a warning: one rule for the Predict page and the CLI.

A 10x10 image and a 4000x20 strip once got lesions and "DR 3 severe 93%" beside a "too small" warning: the model
answers whatever it is given, so the answer must be withheld where no fundus photograph can be. Refused (a
``DataError`` naming the file): a short side below ``MIN_SIDE`` pixels (no structure of the retina is visible) or
a long side more than ``MAX_ASPECT`` times the short one (fundus cameras write 1:1 to 16:9; IDRiD's are 1.51).
Predicted with a warning: a short side below ``SMALL_SIDE`` (lesions are not visible), and no dark border around
a field of view (it may be a photograph of something else, or a crop of the retina).
"""

from __future__ import annotations

from core.errors import DataError

MIN_SIDE = 32
MAX_ASPECT = 2.5
SMALL_SIDE = 256  # below this short side a photograph holds too little detail for lesions


def check_fundus_shape(size: tuple[int, int], name: str) -> None:
    """Refuse a size no fundus photograph has; ``name`` is the file as the message names it."""
    width, height = size
    short, long = min(size), max(size)
    if long > MAX_ASPECT * short:  # first: a 4000x20 strip is a wrong shape more than a small image
        raise DataError(f"image {name} is {width}x{height} pixels, {long / short:.1f} times longer than wide: no "
                        f"fundus camera makes that shape (at most {MAX_ASPECT:g}:1), so it is not predicted")
    if short < MIN_SIDE:
        raise DataError(f"image {name} is only {width}x{height} pixels: below {MIN_SIDE} pixels a side it cannot "
                        "show a retina, so it is not predicted")


def shape_warnings(size: tuple[int, int], found_field_of_view: bool) -> list[str]:
    """What is predicted but should be read with caution."""
    width, height = size
    warnings = []
    if min(size) < SMALL_SIDE:
        warnings.append(f"the image is only {width}x{height} pixels: too small for lesions to be visible; treat "
                        "the prediction with caution")
    elif not found_field_of_view:
        warnings.append("no dark border around a field of view was found: is this a fundus photograph?")
    return warnings
