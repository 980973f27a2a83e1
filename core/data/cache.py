"""A disk cache of preprocessed samples, so that only the first epoch decodes 4288x2848 JPEGs and TIFFs.

An entry is keyed by every source file (path, size, mtime) and the preprocessing config, so an edited mask or a new
image size is a miss, never a stale hit. Entries are written atomically: two loader workers filling the same entry
each write their own temporary file and the last ``os.replace`` wins with identical content.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core.data.preprocess import Geometry, PreprocessConfig, decode_for_canvas, preprocess_image, preprocess_masks
from core.errors import DataError
from core.fileio import atomic_write_bytes
from core.vocabulary import LESIONS

# Bump when preprocessing changes in a way the config does not capture.
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$IDRID_STUDIO_CACHE`` or the user's cache folder: the dataset root may be read-only."""
    if env := os.environ.get("IDRID_STUDIO_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "idrid-studio" / "preprocess"


@dataclass
class Preprocessed:
    image: np.ndarray  # (H, W, 3) uint8 RGB canvas
    masks: np.ndarray | None  # (5, H, W) bool canvas, None for a sample without masks
    geometry: Geometry


def _stamp(path: Path) -> list:
    try:
        stat = path.stat()
    except OSError as error:
        raise DataError(f"{path} cannot be read ({error.strerror})") from None
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def cache_key(image: Path, masks: dict[str, Path | None] | None, config: PreprocessConfig) -> str:
    parts = {
        "version": CACHE_VERSION,
        "image": _stamp(image),
        "masks": {c: _stamp(p) for c, p in (masks or {}).items() if p is not None},
        "has_masks": masks is not None,
        "config": asdict(config),
    }
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def compute(image: Path, masks: dict[str, Path | None] | None, config: PreprocessConfig) -> Preprocessed:
    """Preprocess from the source files, no cache involved."""
    rgb, original = decode_for_canvas(image, config.size)
    canvas, geometry = preprocess_image(rgb, original, config)
    mask_canvas = preprocess_masks(masks, geometry) if masks is not None else None
    return Preprocessed(canvas, mask_canvas, geometry)


def _encode(item: Preprocessed) -> bytes:
    buffer = io.BytesIO()
    arrays = {"image": item.image, "geometry": np.array(json.dumps(item.geometry.to_dict()))}
    if item.masks is not None:
        arrays["masks"] = np.packbits(item.masks, axis=-1)
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _decode(path: Path, width: int) -> Preprocessed:
    with np.load(path, allow_pickle=False) as data:
        masks = np.unpackbits(data["masks"], axis=-1, count=width).astype(bool) if "masks" in data else None
        return Preprocessed(data["image"], masks, Geometry.from_dict(json.loads(str(data["geometry"]))))


class PreprocessCache:
    """Load-or-compute of preprocessed samples; ``folder=None`` disables caching (every call decodes)."""

    def __init__(self, folder: Path | str | None) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.hits = 0
        self.misses = 0

    def path_for(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / key[:2] / f"{key}.npz"

    def get(self, image: Path, masks: dict[str, Path | None] | None, config: PreprocessConfig) -> Preprocessed:
        if self.folder is None:
            self.misses += 1
            return compute(image, masks, config)
        entry = self.path_for(cache_key(image, masks, config))
        if entry.exists():
            try:
                item = _decode(entry, config.width)
                if item.masks is None or item.masks.shape[0] == len(LESIONS):
                    self.hits += 1
                    return item
            except (OSError, ValueError, KeyError, EOFError):
                pass  # an unreadable entry (disk full at write, foreign file) is recomputed and replaced
        self.misses += 1
        item = compute(image, masks, config)
        try:
            atomic_write_bytes(entry, _encode(item))
        except OSError:
            pass  # a read-only or full cache folder slows training down but must not stop it
        return item
