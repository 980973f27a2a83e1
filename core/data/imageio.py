"""Decoding fundus photographs and lesion masks in every form real files take.

Images are returned as uint8 RGB arrays whatever their mode (grey, RGBA, palette, 16-bit, CMYK), turned upright as
their EXIF orientation says (phones and some fundus cameras store the pixels sideways and a tag that rotates them),
so that a prediction, its masks and the picture shown all agree with what a viewer sees; masks as bool arrays
where any non-black colour is lesion (the official masks are 1-bit palette TIFFs that OpenCV reads as 0/76 and PIL
as 0/1; copies in the wild are grey 0/255, RGB or RGBA). Every failure raises ``DataError`` naming the file.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import DataError

# PIL refuses images above ~179 megapixels as possible decompression bombs; we keep that limit on purpose and
# turn its error into a clear message instead of raising the limit.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError)


UPLOAD_NAME = "uploaded image"  # how messages name bytes that came without a file name


def source_name(source: str | Path | bytes, name: str | None = None) -> str:
    """How a message names the input: the path of a file, the file name an upload came with (``name``)."""
    if isinstance(source, bytes):
        return name or UPLOAD_NAME
    return str(source)


def _is_empty(source: str | Path | bytes) -> bool:
    if isinstance(source, bytes):
        return not source
    try:
        return Path(source).stat().st_size == 0
    except OSError:
        return False  # missing or unreadable: ``Image.open`` says which


def open_image(source: str | Path | bytes, what: str, name: str | None = None) -> Image.Image:
    """Open lazily; header problems surface here, pixel problems on ``load``. ``name`` names bytes in messages.

    An empty file is refused here, before PIL calls it an unknown format, so that an empty upload on the Predict
    page and an empty file given to ``python -m core predict`` get the same words."""
    name = source_name(source, name)
    if _is_empty(source):
        raise DataError(f"{what} {name} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError:
        raise DataError(f"{what} not found: {name}") from None
    except Image.DecompressionBombWarning as error:
        raise DataError(f"{what} {name} is too large to decode safely ({error})") from None
    except Image.DecompressionBombError as error:
        raise DataError(f"{what} {name} is too large to decode safely ({error})") from None
    except UnidentifiedImageError:
        raise DataError(f"{what} {name} is not an image file (unknown format)") from None
    except _DECODE_ERRORS as error:
        raise DataError(f"{what} {name} is not a readable image ({error.__class__.__name__}: {error})") from None


# EXIF orientations 5-8 turn the stored pixels by a quarter turn (with or without a mirror): width and height swap.
_EXIF_ORIENTATION = 0x0112
_QUARTER_TURNS = (5, 6, 7, 8)


def orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1: upright, also when absent or unreadable)."""
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except (OSError, ValueError, TypeError, SyntaxError):
        return 1


def oriented_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) as displayed: the stored size, swapped when the EXIF tag turns the picture a quarter."""
    width, height = image.size
    return (height, width) if orientation(image) in _QUARTER_TURNS else (width, height)


def upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says (the same object when it is already upright)."""
    if orientation(image) == 1:
        return image
    return ImageOps.exif_transpose(image)


def image_size(path: str | Path, what: str = "image") -> tuple[int, int]:
    """(width, height) as displayed, from the header only: cheap enough to check every file of a dataset."""
    with open_image(path, what) as image:
        return oriented_size(image)


def is_complete(path: str | Path) -> bool:
    """Whether a JPEG or PNG ends with its end marker: a truncated download fails this without a full decode."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        with open(path, "rb") as handle:
            handle.seek(0, io.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 32))
            tail = handle.read()
    except OSError:
        return False
    if suffix in (".jpg", ".jpeg"):
        return b"\xff\xd9" in tail
    if suffix == ".png":
        return b"IEND" in tail
    return True


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale 16-bit or float data to 0-255 so every later step sees one dtype."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    values = array.astype(np.float32)
    top = float(values.max(initial=0))
    if np.issubdtype(array.dtype, np.floating) and top <= 1.0:
        peak = 1.0
    else:
        peak = 65535.0 if top > 255 else 255.0
    return np.clip(values * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8)


_MODE_NOTES = {
    "L": "a greyscale image: its one channel was copied to red, green and blue",
    "LA": "a greyscale image with transparency: composited on black, then copied to red, green and blue",
    "I;16": "a 16-bit greyscale image: scaled to 8 bits and copied to red, green and blue",
    "I;16B": "a 16-bit greyscale image: scaled to 8 bits and copied to red, green and blue",
    "I;16L": "a 16-bit greyscale image: scaled to 8 bits and copied to red, green and blue",
    "I": "a 32-bit greyscale image: scaled to 8 bits and copied to red, green and blue",
    "F": "a floating-point greyscale image: scaled to 8 bits and copied to red, green and blue",
    "CMYK": "a CMYK image: converted to RGB",
    "YCbCr": "a YCbCr image: converted to RGB",
    "LAB": "a CIELAB image: converted to RGB",
    "HSV": "an HSV image: converted to RGB",
    "1": "a black-and-white (1-bit) image: converted to RGB",
    "RGBA": "an image with transparency: transparent pixels composited on black",
    "P": "a palette image: converted to RGB",
}


def conversion_notes(image: Image.Image) -> list[str]:
    """What ``to_rgb_array`` will do to ``image`` besides reading it, in words for the warnings a user sees: the
    model reads 8-bit RGB, and a silent conversion of a grey, 16-bit, CMYK or multi-page file would hide why a
    prediction looks as it does."""
    notes = []
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        notes.append("a palette image with transparency: converted to RGB, transparent pixels composited on black")
    elif mode in _MODE_NOTES:
        notes.append(_MODE_NOTES[mode])
    elif mode != "RGB":
        notes.append(f"a {mode} image: converted to RGB")
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        notes.append(f"a file of {frames} pages or frames: only the first was read")
    if orientation(image) != 1:
        notes.append(f"turned upright as its EXIF orientation ({orientation(image)}) says")
    return notes


def array_notes(array: np.ndarray) -> list[str]:
    """``conversion_notes`` for an in-memory array (``array_to_rgb``)."""
    notes = []
    if array.dtype != np.uint8:
        notes.append(f"{array.dtype} pixel values: scaled to 8 bits")
    channels = 1 if array.ndim == 2 else array.shape[2]
    if channels in (1, 2):
        notes.append("a greyscale image: its one channel was copied to red, green and blue")
    if channels in (2, 4):
        notes.append("an image with transparency: transparent pixels composited on black")
    return notes


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Any PIL mode -> HxWx3 uint8 RGB, upright; transparency is composited on black (the fundus border)."""
    image = upright(image)
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        grey = _to_uint8(np.asarray(image))
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        rgb = rgba[:, :, :3] * (rgba[:, :, 3:4] / 255.0)
        return (rgb + 0.5).astype(np.uint8)
    if mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def read_image(source: str | Path | bytes, what: str = "image", name: str | None = None) -> np.ndarray:
    """Decode fully to HxWx3 uint8 RGB; a truncated or corrupt file raises ``DataError`` naming it (bytes by
    ``name``)."""
    name = source_name(source, name)
    image = open_image(source, what, name)
    try:
        with image:
            image.load()
            if image.width < 1 or image.height < 1:
                raise DataError(f"{what} {name} is empty ({image.width}x{image.height})")
            return to_rgb_array(image)
    except _DECODE_ERRORS as error:
        raise DataError(f"{what} {name} does not decode ({error.__class__.__name__}: {error})") from None


def check_decodes(source: str | Path | bytes, what: str = "image", name: str | None = None) -> None:
    """Refuse, naming the file, what would not decode: empty, not an image, too large, truncated or corrupt.

    A JPEG is decoded at its smallest DCT scale (every coded byte is still read, so truncation shows) and costs a
    few milliseconds: cheap enough to check an upload on every rerun of the page."""
    name = source_name(source, name)
    image = open_image(source, what, name)
    try:
        with image:
            if image.format == "JPEG":
                image.draft("RGB", (1, 1))
            image.load()
    except _DECODE_ERRORS as error:
        raise DataError(f"{what} {name} does not decode ({error.__class__.__name__}: {error})") from None


def mask_from_pil(image: Image.Image) -> np.ndarray:
    """Any non-black colour is lesion; alpha is ignored (RGBA masks use it inconsistently)."""
    if image.mode in ("P", "PA"):
        indices = np.asarray(image.convert("P") if image.mode == "PA" else image)
        palette = np.asarray(image.getpalette() or [0, 0, 0], dtype=np.uint8).reshape(-1, 3)
        lit = palette.any(axis=1)
        if not lit[0] and lit[1:].all():
            return indices != 0  # the usual palette (index 0 black): a comparison is 5x faster than a lookup
        lut = np.zeros(256, dtype=bool)
        lut[: len(lit)] = lit
        return lut[indices]
    array = np.asarray(image)
    if array.ndim == 3:
        channels = array.shape[2]
        colour = array[:, :, :3] if channels >= 3 else array[:, :, :1]
        return colour.any(axis=2)
    return array > 0


def read_mask(path: str | Path) -> np.ndarray:
    """Decode a lesion mask to an HxW bool array."""
    image = open_image(path, "mask")
    try:
        with image:
            image.load()
            return mask_from_pil(upright(image))
    except _DECODE_ERRORS as error:
        raise DataError(f"mask {path} does not decode ({error.__class__.__name__}: {error})") from None


def array_to_rgb(array: np.ndarray) -> np.ndarray:
    """An in-memory image of any dtype and channel count (grey, grey+alpha, RGB, RGBA) -> HxWx3 uint8 RGB."""
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 2, 3, 4)):
        raise DataError(f"an image array must be HxW or HxWxC with 1-4 channels, not shape {array.shape}")
    if array.size == 0:
        raise DataError(f"the image array is empty (shape {array.shape})")
    values = _to_uint8(np.asarray(array))
    if values.ndim == 2:
        values = values[:, :, None]
    channels = values.shape[2]
    if channels in (2, 4):  # composite on black, as for RGBA files
        alpha = values[:, :, -1:].astype(np.float32) / 255.0
        values = (values[:, :, :-1].astype(np.float32) * alpha + 0.5).astype(np.uint8)
    if values.shape[2] == 1:
        values = np.repeat(values, 3, axis=2)
    return np.ascontiguousarray(values)
