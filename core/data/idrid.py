"""Reading an IDRiD download into records: which images exist, their masks and their grades.

The reader checks what it can cheaply (headers, sizes, end markers, CSV cells) so that a bad file is named before
training starts, not in the middle of an epoch. ``strict=True`` stops at the first bad sample with one message;
``strict=False`` skips bad samples and lists them (``IdridIndex.problems``).
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.data import layout
from core.data.imageio import image_size, is_complete, read_image, read_mask
from core.errors import DataError
from core.vocabulary import LESIONS, NUM_DME_RISKS, NUM_DR_GRADES

log = logging.getLogger(__name__)

_MASK_NAME = re.compile(rf"^(?P<id>.+?)_(?P<code>{'|'.join(LESIONS)})$", re.IGNORECASE)


@dataclass(frozen=True)
class Problem:
    """One bad sample or file: what was skipped (lenient) or what stopped the read (strict)."""

    path: str
    message: str

    def __str__(self) -> str:
        return self.message if self.path in self.message else f"{self.path}: {self.message}"


@dataclass(frozen=True)
class SegmentationRecord:
    id: str
    split: str
    root: int
    image: Path
    size: tuple[int, int]
    masks: dict[str, Path | None]

    @property
    def key(self) -> str:
        return f"seg/{self.split}/{self.id}"


@dataclass(frozen=True)
class GradingRecord:
    id: str
    split: str
    root: int
    image: Path | None
    size: tuple[int, int] | None
    dr_grade: int
    dme_risk: int

    @property
    def key(self) -> str:
        return f"cls/{self.split}/{self.id}"


@dataclass
class IdridIndex:
    """Everything read from one or several dataset roots."""

    roots: list[Path]
    segmentation: list[SegmentationRecord] = field(default_factory=list)
    grading: list[GradingRecord] = field(default_factory=list)
    # Grading labels whose images are absent because the whole images folder is (half a download): split -> rows.
    labels_without_images: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def mask_counts(self, split: str = "train") -> dict[str, int]:
        return {
            code: sum(1 for r in self.segmentation if r.split == split and r.masks.get(code) is not None)
            for code in LESIONS
        }

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            "segmentation": {s: sum(r.split == s for r in self.segmentation) for s in layout.SPLITS},
            "classification": {s: sum(r.split == s for r in self.grading) for s in layout.SPLITS},
        }


class _Collector:
    """Gathers problems; in strict mode the first one ends the read."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.problems: list[Problem] = []

    def add(self, path: Path | str, message: str) -> None:
        problem = Problem(str(path), message)
        if self.strict:
            raise DataError(f"{problem} (lenient mode, the CLI default, skips and lists bad samples)")
        self.problems.append(problem)


def _check_image(path: Path, issues: _Collector, verify: bool) -> tuple[int, int] | None:
    try:
        size = image_size(path)
        if not is_complete(path):
            raise DataError(f"image {path} is truncated (no end-of-image marker)")
        if verify:
            read_image(path)
    except DataError as error:
        issues.add(path, str(error))
        return None
    return size


def _image_ids(folder: Path, issues: _Collector) -> dict[str, Path]:
    """Image id -> file; two files with one id (``x.jpg`` and ``x.png``) are a problem, not a silent pick."""
    found: dict[str, Path] = {}
    for path in layout.list_files(folder, layout.IMAGE_SUFFIXES):
        if path.stem in found:
            issues.add(path, f"duplicate id {path.stem!r} (also {found[path.stem].name})")
            found.pop(path.stem)
            continue
        found[path.stem] = path
    return found


def _read_masks(truth: Path | None, ids: Iterable[str], issues: _Collector) -> dict[str, dict[str, Path]]:
    """id -> {lesion code -> mask file}; a lesion with no file is absent from that image."""
    by_id: dict[str, dict[str, Path]] = {i: {} for i in ids}
    if truth is None:
        return by_id
    for code, folder in layout.lesion_folders(truth).items():
        for path in layout.list_files(folder, layout.MASK_SUFFIXES):
            match = _MASK_NAME.match(path.stem)
            if match is None or match["code"].upper() != code:
                issues.add(path, f"mask name does not end in _{code} as the files of '{folder.name}' must")
                continue
            image_id = match["id"]
            if image_id not in by_id:
                issues.add(path, f"mask has no image {image_id!r} in the matching images folder")
                continue
            if code in by_id[image_id]:
                issues.add(path, f"duplicate {code} mask for {image_id} (also {by_id[image_id][code].name})")
                continue
            by_id[image_id][code] = path
    return by_id


def _read_segmentation(root: Path, root_index: int, issues: _Collector, verify: bool) -> list[SegmentationRecord]:
    half = layout.segmentation_folders(root)
    if half is None:
        return []
    records = []
    for split, folder in half.images.items():
        ids = _image_ids(folder, issues)
        masks = _read_masks(half.truth.get(split), ids, issues)
        for image_id, path in ids.items():
            size = _check_image(path, issues, verify)
            if size is None:
                continue
            found = masks[image_id]
            if not found:
                issues.add(path, "has no ground-truth mask for any lesion (expected files like "
                                 f"{image_id}_OD.tif under '{half.truth.get(split, half.base)}')")
                continue
            if not _masks_match(found, size, path, issues, verify):
                continue
            full = {code: found.get(code) for code in LESIONS}
            records.append(SegmentationRecord(image_id, split, root_index, path, size, full))
    return records


def _masks_match(masks: dict[str, Path], size: tuple[int, int], image: Path, issues: _Collector, verify: bool) -> bool:
    for code, path in masks.items():
        try:
            mask_size = image_size(path, "mask")
            if verify:
                read_mask(path)
        except DataError as error:
            issues.add(path, str(error))
            return False
        if mask_size != size:
            issues.add(path, f"mask is {mask_size[0]}x{mask_size[1]} but its image {image.name} is {size[0]}x{size[1]}")
            return False
    return True


@dataclass(frozen=True)
class _LabelRow:
    line: int
    name: str
    dr_grade: int
    dme_risk: int


def _column(header: list[str], csv_path: Path, *words: str) -> int:
    normal = [re.sub(r"\s+", " ", h.strip().lower()) for h in header]
    for index, name in enumerate(normal):
        if any(w in name for w in words):
            return index
    raise DataError(f"grading CSV {csv_path} has no column like {words[0]!r} in its header {header!r}")


def _parse_label(cell: str, limit: int, what: str) -> int:
    try:
        value = float(cell)
    except ValueError:
        raise ValueError(f"{what} {cell!r} is not a number") from None
    if not value.is_integer() or not 0 <= value < limit:
        raise ValueError(f"{what} {cell!r} is out of range 0-{limit - 1}")
    return int(value)


def read_label_csv(csv_path: Path, issues: _Collector) -> list[_LabelRow]:
    """Rows of a grading CSV as published: CRLF, empty trailing columns, header with or without trailing spaces."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"grading CSV {csv_path} cannot be read ({error})") from None
    if not rows:
        raise DataError(f"grading CSV {csv_path} is empty")
    header = rows[0]
    name_col = _column(header, csv_path, "image")
    dr_col = _column(header, csv_path, "retinopathy")
    dme_col = _column(header, csv_path, "macular", "edema", "oedema")
    labels: list[_LabelRow] = []
    for line, row in enumerate(rows[1:], start=2):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        try:
            if len(cells) <= max(name_col, dr_col, dme_col) or not cells[name_col]:
                raise ValueError("has too few cells")
            name = cells[name_col]
            stem = Path(name).stem if Path(name).suffix.lower() in layout.IMAGE_SUFFIXES else name
            dr = _parse_label(cells[dr_col], NUM_DR_GRADES, "Retinopathy grade")
            dme = _parse_label(cells[dme_col], NUM_DME_RISKS, "Risk of macular edema")
        except ValueError as error:
            issues.add(f"{csv_path}, line {line}", str(error))
            continue
        labels.append(_LabelRow(line, stem, dr, dme))
    return labels


def _read_grading(root: Path, root_index: int, issues: _Collector, verify: bool,
                  without_images: dict[str, int]) -> list[GradingRecord]:
    half = layout.grading_folders(root)
    if half is None:
        return []
    records = []
    for split in layout.SPLITS:
        csv_path = half.truth.get(split)
        folder = half.images.get(split)
        rows = read_label_csv(csv_path, issues) if csv_path is not None else []
        if folder is None:
            # Labels without their images folder: half a download, not an error. They train nothing.
            if rows:
                without_images[split] = without_images.get(split, 0) + len(rows)
            continue
        ids = _image_ids(folder, issues)
        seen: dict[str, int] = {}
        for row in rows:
            where = f"{csv_path}, line {row.line}"
            if row.name in seen:
                issues.add(where, f"duplicate id {row.name!r} (also on line {seen[row.name]})")
                continue
            seen[row.name] = row.line
            path = ids.get(row.name)
            if path is None:
                issues.add(where, f"image {row.name!r} is not in '{folder}'")
                continue
            size = _check_image(path, issues, verify)
            if size is not None:
                records.append(GradingRecord(row.name, split, root_index, path, size, row.dr_grade, row.dme_risk))
        for image_id, path in ids.items():
            if image_id not in seen:
                where = csv_path if csv_path is not None else f"'{half.base}' (no {split} labels CSV)"
                issues.add(path, f"image has no label row in {where}")
    return records


def _as_roots(roots: Path | str | Sequence[Path | str]) -> list[Path]:
    if isinstance(roots, (str, Path)):
        roots = [roots]
    paths = [Path(r).expanduser() for r in roots]
    if not paths:
        raise DataError("no dataset root given")
    for path in paths:
        if not path.exists():
            raise DataError(f"dataset root {path} does not exist")
        if not path.is_dir():
            raise DataError(f"dataset root {path} is not a folder")
    return paths


def _drop_duplicate_keys(records: list, issues: _Collector) -> list:
    """The same half found under two roots would give one id twice; keep neither silently."""
    seen: dict[str, object] = {}
    kept = []
    for record in records:
        if record.key in seen:
            issues.add(record.image or record.key, f"duplicate id {record.key} (also {seen[record.key].image})")
            continue
        seen[record.key] = record
        kept.append(record)
    return kept


def read_idrid(roots: Path | str | Sequence[Path | str], strict: bool = True, verify: bool = False) -> IdridIndex:
    """Read one or several IDRiD roots (one per half is how the official archives unpack).

    ``verify`` decodes every image and mask fully (slow at 4288x2848); without it, headers, sizes and end markers
    are checked, which catches non-images, size mismatches and truncated downloads.
    """
    paths = _as_roots(roots)
    issues = _Collector(strict)
    index = IdridIndex(roots=paths)
    for number, root in enumerate(paths):
        seg = layout.segmentation_folders(root)
        grading = layout.grading_folders(root)
        if seg is None and grading is None:
            raise DataError(
                f"{root} is not an IDRiD folder: found neither 'A. Segmentation' nor 'B. Disease Grading' "
                "in it or one folder below it"
            )
        index.segmentation += _read_segmentation(root, number, issues, verify)
        index.grading += _read_grading(root, number, issues, verify, index.labels_without_images)
    index.segmentation = _drop_duplicate_keys(index.segmentation, issues)
    index.grading = _drop_duplicate_keys(index.grading, issues)
    index.problems = issues.problems
    for split in {r.split for r in index.grading}:
        index.labels_without_images.pop(split, None)  # another root holds these images
    if not index.segmentation and not index.grading:
        raise DataError(f"no usable samples in {', '.join(map(str, paths))}: "
                        + (f"{len(issues.problems)} skipped, first: {issues.problems[0]}" if issues.problems
                           else "no images found in the expected folders"))
    if issues.problems:
        listing = "\n  ".join(map(str, issues.problems))
        log.warning("skipped %d bad samples:\n  %s", len(issues.problems), listing)
    return index
