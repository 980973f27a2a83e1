"""The balanced metadata file: one JSON that says which sample is in which split, with which labels and weight.

Training, evaluation and the app all read samples through this file, so a split is decided once (seeded) and the
same everywhere. Schema ``idrid-metadata/1`` is specified in DESIGN.md.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.data.idrid import GradingRecord, IdridIndex, SegmentationRecord
from core.data.layout import LESIONS, TASKS
from core.errors import DataError
from core.fileio import atomic_write_text

SCHEMA = "idrid-metadata/1"
SPLITS = ("train", "val", "test")
DEFAULT_NAME = "balanced_idrid_metadata.json"


@dataclass(frozen=True)
class Sample:
    """One training or evaluation sample with absolute paths, as the dataset consumes it."""

    id: str
    split: str
    task: str
    task_vector: tuple[int, int]
    image: Path
    masks: dict[str, Path | None] | None
    dr_grade: int | None
    dme_risk: int | None
    weight: float
    size: tuple[int, int] | None = None

    @property
    def task_id(self) -> int:
        return TASKS.index(self.task)


@dataclass
class Metadata:
    roots: list[Path]
    samples: list[Sample]
    raw: dict[str, Any]
    path: Path | None = None

    def split(self, name: str) -> list[Sample]:
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}: expected one of {', '.join(SPLITS)}")
        return [s for s in self.samples if s.split == name]

    @property
    def tasks_present(self) -> set[str]:
        return {s.task for s in self.samples}


# --- splitting -------------------------------------------------------------------------------------------------

def stratified_split(
    units: Sequence[Hashable], strata: Sequence[Hashable], fraction: float, seed: int
) -> set[Hashable]:
    """Seeded choice of ``round(fraction * len(units))`` units for validation, stratum by stratum.

    Written here rather than taken from scikit-learn because ``train_test_split(stratify=...)`` refuses strata of
    one member, which small synthetic sets and rare grades produce; largest remainders keep the total exact.
    Units are whatever must stay together (a photograph and its duplicates), so no unit is on both sides.
    """
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"val fraction {fraction} must be in [0, 1)")
    rng = random.Random(seed)
    groups: dict[Hashable, list[Hashable]] = defaultdict(list)
    for unit, stratum in zip(units, strata, strict=True):
        groups[stratum].append(unit)
    target = round(fraction * len(units))
    exact = {k: fraction * len(v) for k, v in groups.items()}
    counts = {k: int(x) for k, x in exact.items()}
    leftovers = sorted(groups, key=lambda k: (-(exact[k] - counts[k]), str(k)))
    for key in leftovers[: target - sum(counts.values())]:
        counts[key] += 1
    chosen: set[Hashable] = set()
    for key in sorted(groups, key=str):
        members = sorted(groups[key], key=str)
        rng.shuffle(members)
        chosen.update(members[: counts[key]])
    return chosen


# --- building --------------------------------------------------------------------------------------------------

def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _seg_entry(record: SegmentationRecord, split: str, root: Path) -> dict[str, Any]:
    return {
        "id": record.key, "split": split, "task": "segmentation", "task_vector": [1, 0],
        "image": _relative(record.image, root),
        "masks": {code: (_relative(p, root) if p is not None else None) for code, p in record.masks.items()},
        "dr_grade": None, "dme_risk": None, "size": list(record.size), "weight": 0.0,
    }


def _cls_entry(record: GradingRecord, split: str, root: Path) -> dict[str, Any]:
    assert record.image is not None and record.size is not None
    return {
        "id": record.key, "split": split, "task": "classification", "task_vector": [0, 1],
        "image": _relative(record.image, root), "masks": None,
        "dr_grade": record.dr_grade, "dme_risk": record.dme_risk, "size": list(record.size), "weight": 0.0,
    }


def _assign_weights(entries: list[dict[str, Any]]) -> None:
    """Weights over the train split so that a WeightedRandomSampler draws each task present equally often and,
    within classification, each DR grade equally often (in expectation). They sum to 1."""
    train = [e for e in entries if e["split"] == "train"]
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in train:
        by_task[entry["task"]].append(entry)
    if not by_task:
        return
    share = 1.0 / len(by_task)
    for task, members in by_task.items():
        if task == "classification":
            grades = Counter(e["dr_grade"] for e in members)
            for entry in members:
                entry["weight"] = share / (len(grades) * grades[entry["dr_grade"]])
        else:
            for entry in members:
                entry["weight"] = share / len(members)
    for entry in train:
        entry["weight"] = round(entry["weight"], 8)


def _summary(entries: list[dict[str, Any]], index: IdridIndex) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for split in SPLITS:
        members = [e for e in entries if e["split"] == split]
        seg = [e for e in members if e["task"] == "segmentation"]
        cls = [e for e in members if e["task"] == "classification"]
        summary[split] = {
            "segmentation": len(seg),
            "classification": len(cls),
            "masks": {code: sum(1 for e in seg if e["masks"][code] is not None) for code in LESIONS},
            "dr_grade": {str(g): sum(1 for e in cls if e["dr_grade"] == g) for g in range(5)},
            "dme_risk": {str(g): sum(1 for e in cls if e["dme_risk"] == g) for g in range(3)},
        }
    summary["labels_without_images"] = dict(index.labels_without_images)
    summary["skipped"] = [str(p) for p in index.problems]
    return summary


def build_metadata(index: IdridIndex, val_fraction: float = 0.2, seed: int = 0) -> dict[str, Any]:
    """The metadata document for ``index``: val carved from each official training half, seeded and stratified
    (DR grade for grading samples; soft-exudate presence, the rarest lesion, for segmentation samples)."""
    seg_train = [r for r in index.segmentation if r.split == "train"]
    cls_train = [r for r in index.grading if r.split == "train"]
    val_keys = stratified_split(
        [r.key for r in seg_train], [r.masks["SE"] is not None for r in seg_train], val_fraction, seed
    ) | stratified_split([r.key for r in cls_train], [r.dr_grade for r in cls_train], val_fraction, seed)

    def split_of(record: SegmentationRecord | GradingRecord) -> str:
        if record.split == "test":
            return "test"
        return "val" if record.key in val_keys else "train"

    roots = index.roots
    entries = [_seg_entry(r, split_of(r), roots[r.root]) for r in index.segmentation]
    entries += [_cls_entry(r, split_of(r), roots[r.root]) for r in index.grading]
    if len(roots) > 1:
        records = list(index.segmentation) + list(index.grading)
        for entry, record in zip(entries, records, strict=True):
            entry["root"] = record.root
    _assign_weights(entries)
    return {
        "schema": SCHEMA,
        "root": str(roots[0].resolve()) if len(roots) == 1 else [str(r.resolve()) for r in roots],
        "lesions": list(LESIONS),
        "tasks": list(TASKS),
        "seed": seed,
        "val_fraction": val_fraction,
        "samples": entries,
        "summary": _summary(entries, index),
    }


def write_metadata(document: dict[str, Any], path: Path) -> Path:
    atomic_write_text(Path(path), json.dumps(document, indent=1) + "\n")
    return Path(path)


# --- loading ---------------------------------------------------------------------------------------------------

def _sample(entry: dict[str, Any], roots: list[Path], where: str) -> Sample:
    try:
        root = roots[int(entry.get("root", 0))]
        masks = entry.get("masks")
        return Sample(
            id=str(entry["id"]), split=str(entry["split"]), task=str(entry["task"]),
            task_vector=(int(entry["task_vector"][0]), int(entry["task_vector"][1])),
            image=root / entry["image"],
            masks=None if masks is None else {c: (root / m if m else None) for c, m in masks.items()},
            dr_grade=entry.get("dr_grade"), dme_risk=entry.get("dme_risk"),
            weight=float(entry.get("weight", 0.0)),
            size=tuple(entry["size"]) if entry.get("size") else None,
        )
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise DataError(f"{where}: sample {entry.get('id', '?')!r} is malformed ({error!r})") from None


def parse_metadata(document: dict[str, Any], where: str = "metadata", check_files: bool = True) -> Metadata:
    """Validate a metadata document; refuse an unknown schema or paths that no longer exist."""
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        found = document.get("schema") if isinstance(document, dict) else type(document).__name__
        raise DataError(f"{where}: schema {found!r} is not {SCHEMA!r}; rebuild it with `python -m core metadata`")
    raw_root = document.get("root")
    roots = [Path(r) for r in (raw_root if isinstance(raw_root, list) else [raw_root])] if raw_root else []
    if not roots:
        raise DataError(f"{where}: has no dataset root")
    samples = [_sample(e, roots, where) for e in document.get("samples", [])]
    if not samples:
        raise DataError(f"{where}: lists no samples")
    for sample in samples:
        if sample.split not in SPLITS or sample.task not in TASKS:
            raise DataError(f"{where}: sample {sample.id} has split {sample.split!r} / task {sample.task!r}")
    if check_files:
        missing = [s.image for s in samples if not s.image.exists()]
        missing += [m for s in samples if s.masks for m in s.masks.values() if m is not None and not m.exists()]
        if missing:
            raise DataError(
                f"{where}: {len(missing)} file(s) it lists no longer exist (first: {missing[0]}); the dataset "
                "moved or changed: rebuild it with `python -m core metadata`"
            )
    return Metadata(roots=roots, samples=samples, raw=document)


def load_metadata(path: Path | str, check_files: bool = True) -> Metadata:
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"metadata file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"metadata file {path} is not readable JSON ({error})") from None
    metadata = parse_metadata(document, where=f"metadata file {path}", check_files=check_files)
    metadata.path = path
    return metadata
