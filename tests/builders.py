"""Small IDRiD-layout datasets written on the fly, in the variants real downloads come in.

Images are tiny (96x64 by default) fundus-like discs so that a fixture is written in milliseconds; masks can be
written in every format the reader must accept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

SEG = "A. Segmentation"
GRADING = "B. Disease Grading"
LESION_DIRS = {
    "MA": "1. Microaneurysms", "HE": "2. Haemorrhages", "EX": "3. Hard Exudates",
    "SE": "4. Soft Exudates", "OD": "5. Optic Disc",
}
SPLIT_DIRS = {"train": "a. Training Set", "test": "b. Testing Set"}
CSV_NAMES = {
    "train": "a. IDRiD_Disease Grading_Training Labels.csv",
    "test": "b. IDRiD_Disease Grading_Testing Labels.csv",
}
OFFICIAL_HEADER = "Image name,Retinopathy grade,Risk of macular edema "


def fundus(width: int = 96, height: int = 64, seed: int = 0) -> np.ndarray:
    """An orange disc on black, clipped at top and bottom like IDRiD's field of view, with a pale optic disc at a
    seeded place: two seeds are two photographs (core.data.twins tells them apart), not one with new noise."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), dtype=np.uint8)
    cv2.circle(image, (width // 2, height // 2), int(height * 0.62), (200, 90, 40), -1)
    disc = (int(rng.integers(width // 4, 3 * width // 4)), int(rng.integers(height // 4, 3 * height // 4)))
    cv2.circle(image, disc, max(2, height // 8), (235, 190, 120), -1)
    noise = rng.integers(0, 20, size=image.shape, dtype=np.uint8)
    return np.where(image > 0, image + noise, image).astype(np.uint8)


def write_image(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=95) if path.suffix.lower() in (".jpg", ".jpeg") else \
        Image.fromarray(rgb).save(path)
    return path


def write_mask(path: Path, mask: np.ndarray, fmt: str = "palette") -> Path:
    """Write a bool mask as the official 1-bit palette TIFF or one of the variants seen in the wild."""
    path.parent.mkdir(parents=True, exist_ok=True)
    on = mask.astype(np.uint8)
    if fmt == "palette":
        image = Image.fromarray(on, mode="P")
        image.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
        image.save(path, compression="tiff_lzw")
    elif fmt == "grey76":
        Image.fromarray(on * 76).save(path)
    elif fmt == "grey255":
        Image.fromarray(on * 255).save(path)
    elif fmt == "rgb":
        rgb = np.zeros((*mask.shape, 3), np.uint8)
        rgb[mask] = (255, 0, 0)
        Image.fromarray(rgb).save(path)
    elif fmt == "rgba":
        rgba = np.zeros((*mask.shape, 4), np.uint8)
        rgba[mask] = (255, 0, 0, 255)
        rgba[..., 3] = np.where(mask, 255, 0)  # transparent background, as some exports have
        Image.fromarray(rgba, mode="RGBA").save(path, compression="tiff_lzw")
    else:
        raise ValueError(fmt)
    return path


def lesion_mask(width: int, height: int, code: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), np.uint8)
    x, y = int(rng.integers(width // 4, 3 * width // 4)), int(rng.integers(height // 4, 3 * height // 4))
    cv2.circle(mask, (x, y), 1 if code == "MA" else 4, 1, -1)
    return mask.astype(bool)


@dataclass
class FixtureSpec:
    seg: dict[str, int] = field(default_factory=lambda: {"train": 6, "test": 3})
    grading: dict[str, int] = field(default_factory=lambda: {"train": 10, "test": 5})
    width: int = 96
    height: int = 64
    mask_format: str = "palette"
    image_ext: str = ".jpg"
    absent: dict[str, set[str]] = field(default_factory=dict)  # image id -> lesion codes without a file
    official_header: bool = True
    grading_images: bool = True


def make_idrid(root: Path, spec: FixtureSpec | None = None) -> Path:
    """Write a tiny dataset in the official layout under ``root`` and return ``root``."""
    spec = spec or FixtureSpec()
    number = 0
    for split, count in spec.seg.items():
        for _ in range(count):
            number += 1
            image_id = f"IDRiD_{number:02d}"
            write_image(root / SEG / "1. Original Images" / SPLIT_DIRS[split] / f"{image_id}{spec.image_ext}",
                        fundus(spec.width, spec.height, number))
            for code, folder in LESION_DIRS.items():
                if code in spec.absent.get(image_id, set()):
                    continue
                mask = lesion_mask(spec.width, spec.height, code, number * 10 + len(code))
                write_mask(root / SEG / "2. All Segmentation Groundtruths" / SPLIT_DIRS[split] / folder /
                           f"{image_id}_{code}.tif", mask, spec.mask_format)
    for split, count in spec.grading.items():
        header = OFFICIAL_HEADER if spec.official_header else OFFICIAL_HEADER.rstrip()
        rows = [header + ",,,,,,,,,"]
        for number in range(1, count + 1):
            image_id = f"IDRiD_{number:03d}"
            rows.append(f"{image_id},{number % 5},{number % 3},,,,,,,,,")
            if spec.grading_images:
                write_image(root / GRADING / "1. Original Images" / SPLIT_DIRS[split] / f"{image_id}{spec.image_ext}",
                            fundus(spec.width, spec.height, 100 + number))
        csv = root / GRADING / "2. Groundtruths" / CSV_NAMES[split]
        csv.parent.mkdir(parents=True, exist_ok=True)
        csv.write_bytes(("\r\n".join(rows) + "\r\n").encode())
    return root


def seg_image(root: Path, image_id: str, split: str = "train", ext: str = ".jpg") -> Path:
    return root / SEG / "1. Original Images" / SPLIT_DIRS[split] / f"{image_id}{ext}"


def seg_mask(root: Path, image_id: str, code: str, split: str = "train") -> Path:
    return root / SEG / "2. All Segmentation Groundtruths" / SPLIT_DIRS[split] / LESION_DIRS[code] / f"{image_id}_{code}.tif"


def grading_image(root: Path, image_id: str, split: str = "train", ext: str = ".jpg") -> Path:
    return root / GRADING / "1. Original Images" / SPLIT_DIRS[split] / f"{image_id}{ext}"


def grading_csv(root: Path, split: str = "train") -> Path:
    return root / GRADING / "2. Groundtruths" / CSV_NAMES[split]
