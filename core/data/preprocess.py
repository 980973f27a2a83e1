"""From a photograph of any size to the fixed canvas the model sees, and back.

Steps, in order: decode (JPEG at a reduced DCT scale when the canvas is much smaller, about 10x faster than a
full decode of 4288x2848), crop to the field of view (the black border carries nothing), resize keeping the aspect,
optional CLAHE, pad to the canvas with black. ``Geometry`` records the crop, scale and padding so predictions map
back onto the original pixels.

Masks follow the same crop and resize, but are reduced by area interpolation thresholded at > 0: a microaneurysm
of a few pixels at 4288 wide covers part of one pixel at 1024 wide, and nearest-neighbour or a 0.5 threshold would
erase it from its own ground truth.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image

from core.data.imageio import (
    array_notes,
    array_to_rgb,
    conversion_notes,
    open_image,
    oriented_size,
    read_mask,
    source_name,
    to_rgb_array,
)
from core.config import DataConfig
from core.errors import ConfigError, DataError
from core.vocabulary import LESIONS

ClaheMode = Literal["none", "luminance", "green", "luminance+green"]
CLAHE_MODES = ("none", "luminance", "green", "luminance+green")
ChannelMode = Literal["rgb", "green"]
CHANNEL_MODES = ("rgb", "green")

# The border of IDRiD photographs stays below ~15 in every channel (JPEG noise); the dimmest rim of the field of view
# is well above 25 in red, the brightest channel of a fundus.
FOV_THRESHOLD = 25


@dataclass(frozen=True)
class PreprocessConfig:
    """What the model's input looks like; part of every cache key.

    ``clahe="luminance"`` equalises the L channel of CIELAB: it evens out illumination fall-off and camera
    differences while keeping hue, which tells hard exudates (yellow) from haemorrhages (red). ``"green"`` equalises
    only the green channel, where red lesions have the most contrast against the red background (the classic
    choice for microaneurysms), leaving red and blue untouched. ``"luminance+green"`` does the first, then the
    second on its green channel. ``channels="green"`` then keeps the green channel alone, repeated in all three (a
    grey image stays grey under the colour jitter of core.data.augment: it scales every channel alike).
    """

    width: int = 512
    height: int = 512
    clahe: ClaheMode = "luminance"
    clahe_clip: float = 2.0
    clahe_grid: int = 8
    crop_fov: bool = True
    channels: ChannelMode = "rgb"

    def __post_init__(self) -> None:
        if self.width < 16 or self.height < 16:
            raise ConfigError(f"image size {self.width}x{self.height} is too small (16 px at least)")
        if self.clahe not in CLAHE_MODES:
            raise ConfigError(f"clahe {self.clahe!r} is not one of {', '.join(CLAHE_MODES)}")
        if self.clahe_clip <= 0 or self.clahe_grid < 1:
            raise ConfigError(f"clahe_clip must be > 0 and clahe_grid >= 1 (got {self.clahe_clip}, {self.clahe_grid})")
        if self.channels not in CHANNEL_MODES:
            raise ConfigError(f"channels {self.channels!r} is not one of {', '.join(CHANNEL_MODES)}")

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)


@dataclass(frozen=True)
class Geometry:
    """Where the canvas came from: ``crop`` (x0, y0, x1, y1) in original pixels, resized to ``content`` (w, h),
    placed at ``offset`` (x, y) in a ``canvas`` (w, h)."""

    original: tuple[int, int]
    crop: tuple[int, int, int, int]
    content: tuple[int, int]
    offset: tuple[int, int]
    canvas: tuple[int, int]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Geometry:
        return cls(**{k: tuple(v) for k, v in data.items()})

    def point_to_original(self, x: float, y: float) -> tuple[float, float]:
        """A canvas coordinate in original pixels."""
        scale_x = (self.crop[2] - self.crop[0]) / self.content[0]
        scale_y = (self.crop[3] - self.crop[1]) / self.content[1]
        return ((x - self.offset[0]) * scale_x + self.crop[0], (y - self.offset[1]) * scale_y + self.crop[1])

    def canvas_to_original(self, array: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """Map an HxW(xC) canvas-sized map (probabilities, say) back onto the original image; zero outside the crop."""
        ox, oy = self.offset
        cw, ch = self.content
        x0, y0, x1, y1 = self.crop
        content = np.ascontiguousarray(array[oy : oy + ch, ox : ox + cw])
        resized = cv2.resize(content, (x1 - x0, y1 - y0), interpolation=interpolation)
        out = np.zeros((self.original[1], self.original[0], *array.shape[2:]), dtype=array.dtype)
        out[y0:y1, x0:x1] = resized.reshape(out[y0:y1, x0:x1].shape)
        return out


def fov_box(rgb: np.ndarray, threshold: int = FOV_THRESHOLD) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1) of the field of view; the whole image when no dark border is found."""
    height, width = rgb.shape[:2]
    step = max(1, min(width, height) // 256)
    small = rgb[::step, ::step].max(axis=2) > threshold
    cols = np.flatnonzero(small.mean(axis=0) > 0.01)
    rows = np.flatnonzero(small.mean(axis=1) > 0.01)
    if cols.size == 0 or rows.size == 0:
        return (0, 0, width, height)
    x0, x1 = max(0, (cols[0] - 1) * step), min(width, (cols[-1] + 2) * step)
    y0, y1 = max(0, (rows[0] - 1) * step), min(height, (rows[-1] + 2) * step)
    if (x1 - x0) < width // 8 or (y1 - y0) < height // 8:
        return (0, 0, width, height)  # a speck, not a field of view
    return (int(x0), int(y0), int(x1), int(y1))


def apply_clahe(rgb: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    if config.clahe == "none":
        return rgb
    clahe = cv2.createCLAHE(clipLimit=config.clahe_clip, tileGridSize=(config.clahe_grid, config.clahe_grid))
    if config.clahe in ("luminance", "luminance+green"):
        lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
        lab[:, :, 0] = clahe.apply(np.ascontiguousarray(lab[:, :, 0]))
        rgb = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    if config.clahe in ("green", "luminance+green"):
        rgb = rgb.copy()
        rgb[:, :, 1] = clahe.apply(np.ascontiguousarray(rgb[:, :, 1]))
    return rgb


def select_channels(rgb: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    if config.channels == "rgb":
        return rgb
    return np.ascontiguousarray(np.repeat(rgb[:, :, 1:2], 3, axis=2))


def plan_geometry(original: tuple[int, int], crop: tuple[int, int, int, int], canvas: tuple[int, int]) -> Geometry:
    x0, y0, x1, y1 = crop
    scale = min(canvas[0] / (x1 - x0), canvas[1] / (y1 - y0))
    content = (max(1, min(canvas[0], round((x1 - x0) * scale))), max(1, min(canvas[1], round((y1 - y0) * scale))))
    offset = ((canvas[0] - content[0]) // 2, (canvas[1] - content[1]) // 2)
    return Geometry(original=original, crop=crop, content=content, offset=offset, canvas=canvas)


def _resize(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    shrinking = size[0] < array.shape[1]
    return cv2.resize(array, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def _place(content: np.ndarray, geometry: Geometry) -> np.ndarray:
    canvas = np.zeros((geometry.canvas[1], geometry.canvas[0], *content.shape[2:]), dtype=content.dtype)
    ox, oy = geometry.offset
    canvas[oy : oy + content.shape[0], ox : ox + content.shape[1]] = content
    return canvas


def decode_for_canvas(source: str | Path | bytes | Image.Image | np.ndarray, canvas: tuple[int, int],
                      what: str = "image", name: str | None = None,
                      notes: list[str] | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode to RGB uint8 at the smallest JPEG DCT scale that still leaves the canvas at least 1.5x oversampled.

    Returns the pixels and the original (width, height): geometry stays in original pixels whatever was decoded.
    ``name`` names bytes (an upload's file name) in error messages; ``notes``, when given, receives what was done
    to the pixels on the way to 8-bit RGB (``conversion_notes``).
    """
    notes = [] if notes is None else notes
    if isinstance(source, np.ndarray):
        notes += array_notes(source)
        rgb = array_to_rgb(source)
        return rgb, (rgb.shape[1], rgb.shape[0])
    if isinstance(source, Image.Image):
        notes += conversion_notes(source)
        return to_rgb_array(source), oriented_size(source)
    name = source_name(source, name)
    image = open_image(source, what, name)
    try:
        with image:
            notes += conversion_notes(image)
            original = oriented_size(image)  # geometry is in the pixels a viewer sees (EXIF-turned)
            if image.format == "JPEG":
                need = max(canvas[0] / original[0], canvas[1] / original[1]) * 1.5
                stored = image.size  # draft() works on the stored frame; a turn only swaps its sides
                image.draft("RGB", (math.ceil(stored[0] * need), math.ceil(stored[1] * need)))
            image.load()
            return to_rgb_array(image), original
    except (OSError, ValueError, SyntaxError) as error:
        raise DataError(f"{what} {name} does not decode ({error.__class__.__name__}: {error})") from None


def canvas_preprocess(data: DataConfig, side: int | None = None) -> PreprocessConfig:
    """The preprocessing a run's data settings ask for, on a square canvas of ``side`` (the run's image size by
    default; larger for the canvases that windows and crops are taken from). One place, so that training,
    prediction and the gallery cannot preprocess the same photograph differently."""
    side = data.image_size if side is None else side
    return PreprocessConfig(side, side, clahe=data.clahe, channels=data.channels)


def preprocess_image(rgb: np.ndarray, original: tuple[int, int], config: PreprocessConfig) -> tuple[np.ndarray, Geometry]:
    """Crop, resize, CLAHE and pad a decoded image (which may be a reduced decode of ``original``)."""
    if rgb.shape[0] < 2 or rgb.shape[1] < 2:
        raise DataError(f"image is {rgb.shape[1]}x{rgb.shape[0]} pixels: too small to be a fundus photograph")
    factor = rgb.shape[1] / original[0]
    box = fov_box(rgb) if config.crop_fov else (0, 0, rgb.shape[1], rgb.shape[0])
    crop = (
        int(round(box[0] / factor)), int(round(box[1] / factor)),
        min(original[0], int(round(box[2] / factor))), min(original[1], int(round(box[3] / factor))),
    )
    geometry = plan_geometry(original, crop, config.size)
    content = _resize(np.ascontiguousarray(rgb[box[1] : box[3], box[0] : box[2]]), geometry.content)
    return _place(select_channels(apply_clahe(content, config), config), geometry), geometry


def reduce_mask(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Crop and resize a full-size bool mask onto the canvas, keeping every lesion pixel's trace (area > 0)."""
    x0, y0, x1, y1 = geometry.crop
    region = np.ascontiguousarray(mask[y0:y1, x0:x1], dtype=np.uint8)
    if geometry.content[0] < region.shape[1]:
        # 0/255 in uint8: one lesion pixel among up to 510 source pixels still averages to >= 1 after rounding.
        resized = cv2.resize(region * np.uint8(255), geometry.content, interpolation=cv2.INTER_AREA) > 0
    else:
        resized = cv2.resize(region, geometry.content, interpolation=cv2.INTER_NEAREST) > 0
    return _place(resized, geometry)


def preprocess_masks(mask_paths: dict[str, Path | None] | None, geometry: Geometry) -> np.ndarray:
    """(5, H, W) bool canvas in lesion order; a lesion without a file is all zeros."""
    height, width = geometry.canvas[1], geometry.canvas[0]
    masks = np.zeros((len(LESIONS), height, width), dtype=bool)
    for channel, code in enumerate(LESIONS):
        path = (mask_paths or {}).get(code)
        if path is None:
            continue
        mask = read_mask(path)
        if (mask.shape[1], mask.shape[0]) != geometry.original:
            raise DataError(
                f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but its image is "
                f"{geometry.original[0]}x{geometry.original[1]}"
            )
        masks[channel] = reduce_mask(mask, geometry)
    return masks
