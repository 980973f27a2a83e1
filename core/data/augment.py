"""Training augmentation with albumentations, the same geometry applied to image and masks.

``strict=True`` makes a mistyped argument an error: albumentations 2.x renamed many of them and would otherwise
warn and silently ignore the transform's setting.
"""

from __future__ import annotations

from typing import Literal

import albumentations as A
import cv2

AugmentLevel = Literal["none", "light", "standard"]
AUGMENT_LEVELS = ("none", "light", "standard")


def build_augmentation(level: AugmentLevel = "standard", preprocessed_clahe: bool = True) -> A.Compose | None:
    """Fundus-safe augmentation.

    Colour jitter stays small: albumentations' default hue range of +-0.5 turns a retina green, and hue is what
    tells an exudate (yellow) from a haemorrhage (red). Flips are safe (left and right eyes are mirror images).
    Masks are warped with nearest-neighbour so they stay binary. CLAHE is only added when preprocessing did not
    already equalise, since applying it twice over-amplifies JPEG noise.
    """
    if level == "none":
        return None
    if level not in AUGMENT_LEVELS:
        raise ValueError(f"augmentation level {level!r} is not one of {', '.join(AUGMENT_LEVELS)}")
    strong = level == "standard"
    transforms: list[A.BasicTransform] = [
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.2 if strong else 0.0),
        A.Affine(
            scale=(0.9, 1.1) if strong else (0.95, 1.05),
            translate_percent=(-0.05, 0.05) if strong else (-0.02, 0.02),
            rotate=(-20, 20) if strong else (-8, 8),
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=0,
            p=0.7 if strong else 0.5,
        ),
        A.ColorJitter(
            brightness=(0.8, 1.2) if strong else (0.9, 1.1),
            contrast=(0.8, 1.2) if strong else (0.9, 1.1),
            saturation=(0.9, 1.1),
            hue=(-0.02, 0.02),
            p=0.8 if strong else 0.5,
        ),
    ]
    if not preprocessed_clahe:
        transforms.append(A.CLAHE(clip_limit=(1.0, 2.5), tile_grid_size=(8, 8), p=0.3))
    return A.Compose(transforms, strict=True)
