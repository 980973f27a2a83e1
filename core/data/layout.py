"""Where things sit in an IDRiD download, tolerant of the variants real downloads come in.

The official archives unpack to folders like ``A. Segmentation/1. Original Images/a. Training Set``. Real copies
differ: a doubled top folder (``A. Segmentation/A. Segmentation/...``), a lost letter prefix, other case, one
folder per half. Folders are therefore matched by the words in their names, never by exact strings.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# LESIONS, TASKS and IGNORE_INDEX are re-exported for the modules and tests that import them from here.
from core.vocabulary import IGNORE_INDEX, LESION_FOLDER_WORDS, LESIONS, TASKS  # noqa: F401

SPLITS: tuple[str, ...] = ("train", "test")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MASK_SUFFIXES = (".tif", ".tiff", ".png", ".gif", ".bmp")


def _norm(name: str) -> str:
    """Lower-case, drop a leading enumeration such as ``a. `` or ``1. `` and squeeze spaces."""
    name = re.sub(r"^\s*[a-z0-9]{1,2}\s*[.)]\s*", "", name.strip().lower())
    return re.sub(r"\s+", " ", name)


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def find_child(folder: Path, *words: str) -> Path | None:
    """The one sub-folder whose normalised name contains any of ``words``; ``None`` when there is none."""
    hits = [d for d in _subdirs(folder) if any(w in _norm(d.name) for w in words)]
    return hits[0] if hits else None


def undouble(folder: Path) -> Path:
    """Step into a doubled folder (``X/X``), as unzipping an archive into a folder of its own name gives."""
    while True:
        children = _subdirs(folder)
        if len(children) == 1 and _norm(children[0].name) == _norm(folder.name):
            folder = children[0]
        else:
            return folder


def split_folder(parent: Path, split: str) -> Path | None:
    """The training or testing sub-folder of ``parent``."""
    return find_child(parent, "training" if split == "train" else "testing")


@dataclass
class HalfFolders:
    """The folders of one half of the download that were found (each may be missing)."""

    root: Path
    base: Path
    images: dict[str, Path] = field(default_factory=dict)  # split -> folder of images
    truth: dict[str, Path] = field(default_factory=dict)  # split -> folder of masks, or the CSV file


def find_half(root: Path, words: tuple[str, ...]) -> Path | None:
    """Locate a half (segmentation or grading) under ``root``, at most two folders deep, or ``root`` itself."""
    root = undouble(root)
    hit = find_child(root, *words)
    if hit is None:
        for child in _subdirs(root):
            hit = find_child(undouble(child), *words)
            if hit is not None:
                break
    if hit is None and any(w in _norm(root.name) for w in words) and _looks_like_half(root):
        hit = root
    return undouble(hit) if hit is not None else None


def _looks_like_half(folder: Path) -> bool:
    return find_child(folder, "original image", "groundtruth", "ground truth") is not None


def _half_folders(root: Path, word: str, truth_for: Callable[[Path, str], Path | None]) -> HalfFolders | None:
    """The half whose folder name holds ``word``: its image folder per split and, by ``truth_for``, its truth."""
    base = find_half(root, (word,))
    if base is None:
        return None
    half = HalfFolders(root=root, base=base)
    images = find_child(base, "original image")
    truth = find_child(base, "groundtruth", "ground truth")
    for split in SPLITS:
        if images is not None and (folder := split_folder(images, split)) is not None:
            half.images[split] = folder
        if truth is not None and (found := truth_for(truth, split)) is not None:
            half.truth[split] = found
    return half


def segmentation_folders(root: Path) -> HalfFolders | None:
    """The segmentation half: one ground-truth folder per split, holding a folder per lesion."""
    return _half_folders(root, "segmentation", split_folder)


def _grading_csv(truth: Path, split: str) -> Path | None:
    word = "training" if split == "train" else "testing"
    hits = [p for p in sorted(truth.iterdir()) if p.suffix.lower() == ".csv" and word in p.name.lower()]
    return hits[0] if hits else None


def grading_folders(root: Path) -> HalfFolders | None:
    """The grading half: one label CSV per split in its ground-truth folder."""
    return _half_folders(root, "grading", _grading_csv)


def lesion_folders(truth_split_folder: Path) -> dict[str, Path]:
    """Lesion code -> its ground-truth folder, for the lesions that have one."""
    found: dict[str, Path] = {}
    for code, words in LESION_FOLDER_WORDS.items():
        hit = find_child(truth_split_folder, *words)
        if hit is not None:
            found[code] = hit
    return found


def list_files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."))
