"""Masks packed into the bits of one plane: exact round trip, and warping the plane equals warping each mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.data.augment import build_augmentation
from core.data.idrid import read_idrid
from core.data.layout import LESIONS
from core.data.maskbits import pack_masks, unpack_masks
from core.data.preprocess import PreprocessConfig, decode_for_canvas, preprocess_image, preprocess_masks


@pytest.fixture(scope="module")
def real_sample(real_idrid: Path) -> tuple[np.ndarray, np.ndarray]:
    """A real photograph and its five masks at 384 px, with microaneurysms a few pixels wide."""
    record = next(r for r in read_idrid(real_idrid).segmentation if r.split == "train")
    config = PreprocessConfig(384, 384)
    rgb, original = decode_for_canvas(record.image, config.size)
    image, geometry = preprocess_image(rgb, original, config)
    return image, preprocess_masks(record.masks, geometry).astype(np.uint8)


@pytest.mark.real
def test_round_trip_is_exact_on_real_masks(real_sample) -> None:
    _, masks = real_sample
    assert masks.shape[0] == len(LESIONS) and masks.any(axis=(1, 2)).sum() >= 4
    packed = pack_masks(masks)
    assert packed.dtype == np.uint8 and packed.shape == masks.shape[1:]
    assert np.array_equal(unpack_masks(packed, len(LESIONS)), masks)


def test_overlapping_lesions_keep_their_own_bits() -> None:
    masks = np.zeros((5, 4, 4), np.uint8)
    masks[:, 1, 1] = 1  # every lesion on one pixel
    masks[2, 3, 3] = 255  # any non-zero value is a lesion
    packed = pack_masks(masks)
    assert packed[1, 1] == 0b11111 and packed[3, 3] == 0b00100 and packed.sum() == 31 + 4
    assert unpack_masks(packed, 5)[2, 3, 3] == 1


@pytest.mark.real
def test_warping_the_packed_plane_equals_warping_each_mask(real_sample) -> None:
    """The training augmentation (flips, affine with nearest masks) moves every lesion pixel exactly as before."""
    image, masks = real_sample
    augment = build_augmentation("standard")
    moved = 0
    for seed in range(12):
        augment.set_random_seed(seed)
        separate = augment(image=image, mask=np.ascontiguousarray(masks.transpose(1, 2, 0)))
        augment.set_random_seed(seed)
        packed = augment(image=image, mask=pack_masks(masks))
        assert np.array_equal(separate["image"], packed["image"]), seed
        assert np.array_equal(separate["mask"].transpose(2, 0, 1), unpack_masks(packed["mask"], len(LESIONS))), seed
        moved += not np.array_equal(separate["mask"].transpose(2, 0, 1), masks)
    assert moved >= 8  # the draws did warp the masks, so the equality above was tested on moved lesions


def test_more_masks_than_bits_is_refused() -> None:
    with pytest.raises(ValueError, match="9 masks"):
        pack_masks(np.zeros((9, 2, 2), np.uint8))
