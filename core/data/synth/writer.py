"""Writing a dataset in IDRiD's published layout and formats, atomically (temporary file beside it, then
``os.replace``), so a generation killed half-way never leaves a truncated image, mask or CSV.

Formats follow the real download: JPEG images; masks as 1-bit palette TIFFs (index 0 black, index 1 red; PIL
reads mode "P" 0/1, OpenCV grey 0/76), LZW-compressed like the copies in ``../shared/idrid``; label CSVs with the
official header (trailing space after "edema"), nine empty trailing columns and CRLF line ends. A lesion absent
from an image has no mask file.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, TiffImagePlugin

SEG = "A. Segmentation"
GRADING = "B. Disease Grading"
SPLIT_FOLDERS = {"train": "a. Training Set", "test": "b. Testing Set"}
LESION_FOLDERS = {
    "MA": "1. Microaneurysms",
    "HE": "2. Haemorrhages",
    "EX": "3. Hard Exudates",
    "SE": "4. Soft Exudates",
    "OD": "5. Optic Disc",
}
CSV_NAMES = {
    "train": "a. IDRiD_Disease Grading_Training Labels.csv",
    "test": "b. IDRiD_Disease Grading_Testing Labels.csv",
}
CSV_HEADER = "Image name,Retinopathy grade,Risk of macular edema "
CSV_TRAILING_EMPTY = 9
JPEG_QUALITY = 90
MASK_PALETTE = (0, 65535, 0, 0, 0, 0)  # TIFF ColorMap: all reds, then greens, then blues (16-bit)


def seg_image_path(root: Path, split: str, image_id: str) -> Path:
    return root / SEG / "1. Original Images" / SPLIT_FOLDERS[split] / f"{image_id}.jpg"


def mask_path(root: Path, split: str, image_id: str, lesion: str) -> Path:
    return root / SEG / "2. All Segmentation Groundtruths" / SPLIT_FOLDERS[split] / LESION_FOLDERS[lesion] / f"{image_id}_{lesion}.tif"


def grading_image_path(root: Path, split: str, image_id: str) -> Path:
    return root / GRADING / "1. Original Images" / SPLIT_FOLDERS[split] / f"{image_id}.jpg"


def csv_path(root: Path, split: str) -> Path:
    return root / GRADING / "2. Groundtruths" / CSV_NAMES[split]


def make_folders(root: Path) -> None:
    """Every folder of the layout, so that an empty split still looks like the real download."""
    for split in SPLIT_FOLDERS:
        seg_image_path(root, split, "x").parent.mkdir(parents=True, exist_ok=True)
        grading_image_path(root, split, "x").parent.mkdir(parents=True, exist_ok=True)
        for lesion in LESION_FOLDERS:
            mask_path(root, split, "x", lesion).parent.mkdir(parents=True, exist_ok=True)
    csv_path(root, "train").parent.mkdir(parents=True, exist_ok=True)


def write_atomic(path: Path, data: bytes) -> None:
    """Write beside the target under a hidden temporary name, then rename over it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def encode_jpeg(image_bgr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def encode_mask(mask: np.ndarray) -> bytes:
    """A 1-bit palette TIFF like IDRiD's: packed bits, photometric 'palette', ColorMap black/red, LZW."""
    image = Image.fromarray(mask.astype(bool))  # mode "1": bit 1 = palette index 1
    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[262] = 3  # PhotometricInterpretation: palette
    info[277] = 1  # SamplesPerPixel; without it OpenCV expands the palette to three channels
    info[320] = MASK_PALETTE
    buf = io.BytesIO()
    image.save(buf, format="TIFF", compression="tiff_lzw", tiffinfo=info)
    return buf.getvalue()


def csv_bytes(rows: list[tuple[str, int, int]]) -> bytes:
    """The label CSV, rows sorted by id, exactly as the official training file is laid out."""
    pad = "," * CSV_TRAILING_EMPTY
    lines = [CSV_HEADER + pad] + [f"{image_id},{grade},{dme}{pad}" for image_id, grade, dme in sorted(rows)]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
