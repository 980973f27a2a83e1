"""Which files of an IDRiD download are the same photograph: one sample per photograph, never one on both sides.

IDRiD reuses photographs: 42 of the 54 segmentation training images are also grading training images under another
id, re-encoded (so their bytes differ), and the grading half holds byte-identical files under two ids. Twins are
found by comparing 64x43 grey thumbnails of the whole frame (IDRiD's frame is the field of view, clipped at top and
bottom): on the real files a twin differs by a mean squared error of at most 0.71 (0-255 scale) and the nearest
distinct photograph by at least 11.3, so ``TWIN_MSE`` sits between them with a margin on both sides. Byte-identical
files are found by their SHA-256.

Thumbnails of a field-of-view box were measured too and are worse (twins up to 1.9, distinct from 14.9): the box's
edge is a threshold crossing on the dark rim, which a 4x reduction and re-encoding move by a pixel or two, and a
shifted rim is a large error at the sharpest edge of the image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.data.imageio import open_image, to_rgb_array
from core.errors import DataError

THUMB_SIZE = (64, 43)  # width, height: IDRiD's 3:2 frame
TWIN_MSE = 4.0  # twins <= 0.71, nearest distinct photograph >= 11.3 on the real files (tests/test_twins.py)
_DRAFT_SIDE = 512  # JPEG decodes at 1/2 to 1/8 scale for free; a thumbnail needs no more


def thumbnail(path: Path) -> np.ndarray:
    """(43, 64) float32 grey thumbnail of the whole frame: independent of the file's size and encoding."""
    with open_image(path, "image") as image:
        try:
            image.draft("RGB", (_DRAFT_SIDE, _DRAFT_SIDE))  # a no-op for formats other than JPEG
            rgb = to_rgb_array(image)
        except (OSError, ValueError) as error:
            raise DataError(f"image {path} does not decode ({error})") from None
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, THUMB_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pairwise_mse(thumbs: np.ndarray) -> np.ndarray:
    """(n, n) mean squared error between flattened thumbnails, via the expansion |a|^2 + |b|^2 - 2ab."""
    flat = thumbs.reshape(len(thumbs), -1).astype(np.float64)
    norms = (flat**2).sum(axis=1)
    distance = norms[:, None] + norms[None, :] - 2.0 * flat @ flat.T
    return np.maximum(distance, 0.0) / flat.shape[1]


@dataclass(frozen=True)
class Match:
    """Two files found to be one photograph: ``how`` is ``"bytes"`` (identical files) or ``"thumbnail"``."""

    a: int
    b: int
    how: str
    mse: float


def find_matches(paths: Sequence[Path], threshold: float = TWIN_MSE,
                 progress: Callable[[int], None] | None = None) -> list[Match]:
    """Every pair of ``paths`` that is one photograph (indices into ``paths``, a < b)."""
    digests, thumbs = [], []
    for path in paths:
        digests.append(file_digest(path))
        thumbs.append(thumbnail(path))
        if progress is not None:
            progress(1)
    if len(paths) < 2:
        return []
    mse = pairwise_mse(np.stack(thumbs))
    matches = []
    for a, b in zip(*np.triu_indices(len(paths), k=1)):
        if digests[a] == digests[b]:
            matches.append(Match(int(a), int(b), "bytes", 0.0))
        elif mse[a, b] < threshold:
            matches.append(Match(int(a), int(b), "thumbnail", round(float(mse[a, b]), 3)))
    return matches


def groups(n: int, matches: Sequence[Match]) -> list[list[int]]:
    """Connected components of the match graph, each sorted, singletons included (union-find)."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for match in matches:
        parent[find(match.a)] = find(match.b)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(find(i), []).append(i)
    return sorted(members.values())


def photograph_groups(records: Sequence, progress: bool = False) -> tuple[list[list], list[tuple]]:
    """Group records (anything with ``.image`` and ``.split``) into photographs, within each official split.

    Returns the groups (lists of records, singletons included, in input order) and the matches as
    ``(record_a, record_b, how, mse)``. Twins are looked for within a split only: the official train/test division
    is not ours to move, and the real files have no photograph on both sides of it.
    """
    from tqdm import tqdm

    found: list[list] = []
    pairs: list[tuple] = []
    for split in sorted({r.split for r in records}):
        members = [r for r in records if r.split == split and r.image is not None]
        with tqdm(total=len(members), desc=f"compare photographs ({split})", disable=not progress,
                  leave=False) as bar:
            matches = find_matches([r.image for r in members], progress=bar.update)
        pairs += [(members[m.a], members[m.b], m.how, m.mse) for m in matches]
        found += [[members[i] for i in group] for group in groups(len(members), matches)]
    return found, pairs
