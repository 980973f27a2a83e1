"""One Dataset over the metadata for both tasks, and the collate that makes mixed batches.

A segmentation sample carries its five masks and ignore labels (-100) for the grades; a grading sample carries an
all-zero mask with ``mask_valid=False``. Both have the same tensor shapes, so any batch can mix them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from core.data.cache import Preprocessed, PreprocessCache
from core.data.crops import CropPolicy, crop_channels, crop_origin
from core.data.maskbits import pack_masks, unpack_masks
from core.data.metadata import Sample
from core.data.preprocess import PreprocessConfig
from core.data.targets import gate_vector
from core.vocabulary import IGNORE_INDEX, LESIONS

if TYPE_CHECKING:  # albumentations takes 0.9 s to import; prediction and evaluation never augment
    import albumentations as A



def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW float32 normalised with the backbone's own statistics.

    One scale and one shift per channel, applied after the uint8 planes are made contiguous: the loader's
    cached path spends much of its time here, and this order is about twice as fast as dividing by 255, then
    subtracting the mean and dividing by the std on a permuted float view (measured by ``python -m core bench``).
    """
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32).view(3, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std, strict=True)], dtype=torch.float32).view(3, 1, 1)
    planes = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()
    return planes.float().mul_(scale).sub_(shift)


class IdridDataset(Dataset):
    """Samples of one split, preprocessed through the disk cache and augmented per epoch.

    Augmentation is seeded by (seed, epoch, index), so an epoch is reproducible whatever the number of workers
    and a resumed run sees the same images as an uninterrupted one. Call ``set_epoch`` before each epoch.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        preprocess: PreprocessConfig,
        mean: Sequence[float],
        std: Sequence[float],
        cache: PreprocessCache | None = None,
        augment: A.Compose | None = None,
        seed: int = 0,
        crops: CropPolicy | None = None,
        gate_target: str = "task",
    ) -> None:
        self.samples = list(samples)
        self.gate_target = gate_target  # core.data.targets: what the gate is taught for each sample
        self.preprocess = preprocess
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.cache = cache or PreprocessCache(None)
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.crops = crops if crops is not None and crops.enabled else None
        self.crop_preprocess = None if self.crops is None else replace(
            preprocess, width=round(preprocess.width * self.crops.scale),
            height=round(preprocess.height * self.crops.scale))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def _augment(self, index: int, image: np.ndarray, masks: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        if self.augment is None:
            return image, masks
        self.augment.set_random_seed(int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0]))
        if masks is None:
            return self.augment(image=image)["image"], None
        # The masks travel as the bits of one plane: the same nearest-neighbour result, a fifth of the warping.
        out = self.augment(image=image, mask=pack_masks(masks))
        return out["image"], unpack_masks(out["mask"], len(masks))

    def _crop(self, index: int, sample: Sample) -> Preprocessed | None:
        """A crop of the high-resolution canvas for a segmentation draw chosen to be one, else None."""
        if self.crops is None or sample.masks is None:
            return None
        rng = np.random.default_rng([self.seed, self.epoch, index, 1])
        if rng.random() >= self.crops.probability:
            return None
        item = self.cache.get(sample.image, sample.masks, self.crop_preprocess)
        (ox, oy), (cw, ch) = item.geometry.offset, item.geometry.content
        side_w, side_h = self.preprocess.width, self.preprocess.height
        y, x = crop_origin(rng, item.masks, (ox, oy, ox + cw, oy + ch), max(side_w, side_h), self.crops)
        return Preprocessed(item.image[y : y + side_h, x : x + side_w], item.masks[:, y : y + side_h, x : x + side_w],
                            item.geometry)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        crop = self._crop(index, sample)
        item = crop or self.cache.get(sample.image, sample.masks, self.preprocess)
        image, masks = self._augment(index, item.image, item.masks)
        height, width = image.shape[:2]
        mask_valid = masks is not None
        mask = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.uint8)) if mask_valid else \
            torch.zeros((len(LESIONS), height, width), dtype=torch.uint8)
        whole = crop is None  # a crop trains the segmentation expert only: no grades, no gate target
        return {
            "image": normalize(image, self.mean, self.std),
            "task": torch.tensor(sample.task_id, dtype=torch.long),
            "task_vector": torch.tensor(sample.task_vector, dtype=torch.float32),
            "gate_vector": torch.tensor(gate_vector(sample, self.gate_target), dtype=torch.float32),
            "whole": torch.tensor(whole),
            "mask": mask,
            "mask_valid": torch.tensor(mask_valid),
            "mask_channels": torch.from_numpy(crop_channels()) if not whole else torch.full((len(LESIONS),), mask_valid),
            "dr": torch.tensor(IGNORE_INDEX if sample.dr_grade is None or not whole else sample.dr_grade,
                               dtype=torch.long),
            "dme": torch.tensor(IGNORE_INDEX if sample.dme_risk is None or not whole else sample.dme_risk,
                                dtype=torch.long),
            "id": sample.id,
            "index": torch.tensor(index, dtype=torch.long),
        }


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors; keep ids as a list. Batches may mix tasks freely since all shapes agree.

    torch's ``default_collate`` does exactly this and, inside a loader worker, stacks straight into shared memory,
    which saves a copy of every batch on its way to the training process: about 1.3x the cached loading rate with
    two workers (``python -m core bench``).
    """
    return default_collate(items)
