"""The balanced metadata file: one JSON that says which sample is in which split, with which labels and weight.

Training, evaluation and the app all read samples through this file, so a split is decided once (seeded) and the
same everywhere. Schema ``idrid-metadata/1`` (``SCHEMA``, checked by ``parse_metadata``): one JSON object with the
``schema``, the ``root`` folder (a list when the halves sit apart), ``lesions``, ``tasks``, the split settings, a
``summary`` and ``samples``: one entry per sample with its id, split, task and task vector, image and mask paths
relative to its root (``root`` is then an index into the list), grades (null without), image size and training weight.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.data.idrid import GradingRecord, IdridIndex, SegmentationRecord
from core.data.twins import photograph_groups
from core.errors import DataError
from core.fileio import atomic_write_text
from core.vocabulary import LESIONS, NUM_DME_RISKS, NUM_DR_GRADES, TASKS

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
    units: Sequence[Hashable], strata: Sequence[Hashable], fraction: float, seed: int,
    decided: Mapping[Hashable, tuple[int, int]] | None = None,
) -> set[Hashable]:
    """Seeded choice of ``round(fraction * len(units))`` units for validation, stratum by stratum.

    Written here rather than taken from scikit-learn because ``train_test_split(stratify=...)`` refuses strata of
    one member, which small synthetic sets and rare grades produce; largest remainders keep the total exact.
    Units are whatever must stay together (a photograph and its duplicates), so no unit is on both sides.
    ``decided`` gives, per stratum, ``(in validation, in all)`` for members whose side was decided elsewhere (graded
    photographs that also carry masks are split by their masks): the choice then makes the whole validation split,
    not only these units, follow the strata.
    """
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"val fraction {fraction} must be in [0, 1)")
    decided = dict(decided or {})
    rng = random.Random(seed)
    groups: dict[Hashable, list[Hashable]] = defaultdict(list)
    for unit, stratum in zip(units, strata, strict=True):
        groups[stratum].append(unit)
    in_val = {k: decided.get(k, (0, 0))[0] for k in groups}
    in_all = {k: decided.get(k, (0, 0))[1] for k in groups}
    target = max(0, round(fraction * (len(units) + sum(in_all.values()))) - sum(in_val.values()))
    exact = {k: min(len(v), max(0.0, fraction * (len(v) + in_all[k]) - in_val[k])) for k, v in groups.items()}
    counts = {k: int(x) for k, x in exact.items()}
    leftovers = sorted((k for k in groups if counts[k] < len(groups[k])),
                       key=lambda k: (-(exact[k] - counts[k]), str(k)))
    for key in leftovers[: max(0, target - sum(counts.values()))]:
        counts[key] += 1
    chosen: set[Hashable] = set()
    for key in sorted(groups, key=str):
        members = sorted(groups[key], key=str)
        rng.shuffle(members)
        chosen.update(members[: counts[key]])
    return chosen


def stratified_folds(units: Sequence[Hashable], strata: Sequence[Hashable], folds: int, seed: int) -> dict[Hashable, int]:
    """Each unit's fold (0 .. folds-1), stratum by stratum: members shuffled by the seed and dealt round-robin,
    each stratum starting where the previous one stopped, so fold sizes differ by at most one and every stratum is
    spread evenly. Units stay whole (a photograph with its copies), as in ``stratified_split``; scikit-learn's
    StratifiedGroupKFold would do it too but refuses a stratum with fewer members than folds, which rare grades and
    small synthetic sets give."""
    if folds < 2:
        raise DataError(f"cross-validation needs at least 2 folds, not {folds}")
    rng = random.Random(seed)
    groups: dict[Hashable, list[Hashable]] = defaultdict(list)
    for unit, stratum in zip(units, strata, strict=True):
        groups[stratum].append(unit)
    assigned: dict[Hashable, int] = {}
    position = 0
    for key in sorted(groups, key=str):
        members = sorted(groups[key], key=str)
        rng.shuffle(members)
        for member in members:
            assigned[member] = position % folds
            position += 1
    return assigned


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


@dataclass
class _Photograph:
    """The records that show one photograph (usually one; a twin pair across the halves; a duplicate pair)."""

    seg: list[SegmentationRecord]
    cls: list[GradingRecord]

    @property
    def key(self) -> str:
        return (self.seg or self.cls)[0].key

    @property
    def official_split(self) -> str:
        return (self.seg or self.cls)[0].split

    @property
    def conflicting(self) -> bool:
        return len({(r.dr_grade, r.dme_risk) for r in self.cls}) > 1

    def entries(self, split: str, roots: list[Path], drop_conflicting: bool) -> list[tuple[dict[str, Any], int]]:
        """(entry, root index) pairs: one sample per photograph, both annotations on it when both halves have it.

        The segmentation file is the one kept for a twin: it is full size and its masks are drawn on it. Copies whose
        grades disagree cannot become one sample: they stay apart (in one split) or go with ``drop_conflicting``.
        """
        if self.conflicting:
            kept = [(_seg_entry(r, split, roots[r.root]), r.root) for r in self.seg]
            if not drop_conflicting:
                kept += [(_cls_entry(r, split, roots[r.root]), r.root) for r in self.cls]
            return kept
        if not self.seg:
            entry = _cls_entry(self.cls[0], split, roots[self.cls[0].root])
            if len(self.cls) > 1:
                entry["same_photograph"] = [r.key for r in self.cls[1:]]
            return [(entry, self.cls[0].root)]
        first = self.seg[0]
        entry = _seg_entry(first, split, roots[first.root])
        if self.cls:
            entry.update(task_vector=[1, 1], dr_grade=self.cls[0].dr_grade, dme_risk=self.cls[0].dme_risk,
                         same_photograph=[r.key for r in self.cls])
        # Two segmentation files of one photograph do not occur in IDRiD; if they did, both keep their own masks.
        return [(entry, first.root)] + [(_seg_entry(r, split, roots[r.root]), r.root) for r in self.seg[1:]]

    def describe(self, drop_conflicting: bool) -> dict[str, Any]:
        what = "kept apart in one split" if not drop_conflicting else "grading copies dropped (--drop-conflicting)"
        return {
            "ids": [r.key for r in self.seg + self.cls],
            "labels": {r.key: {"dr_grade": r.dr_grade, "dme_risk": r.dme_risk} for r in self.cls},
            "conflicting": self.conflicting,
            "outcome": what if self.conflicting else "one sample",
        }


def _photographs(index: IdridIndex, progress: bool) -> tuple[list[_Photograph], list[tuple]]:
    groups, pairs = photograph_groups(list(index.segmentation) + list(index.grading), progress)
    photographs = [_Photograph([r for r in g if isinstance(r, SegmentationRecord)],
                               [r for r in g if isinstance(r, GradingRecord)]) for g in groups]
    return photographs, pairs


def _assign_weights(entries: list[dict[str, Any]]) -> None:
    """Weights over the train split so that a WeightedRandomSampler draws each task's labels equally often and,
    within the graded samples, each DR grade equally often (in expectation). A sample with masks and grades is in
    both pools and carries both shares. They sum to 1."""
    train = [e for e in entries if e["split"] == "train"]
    segmented = [e for e in train if e["masks"] is not None]
    graded = [e for e in train if e["dr_grade"] is not None]
    pools = [pool for pool in (segmented, graded) if pool]
    if not pools:
        return
    share = 1.0 / len(pools)
    for entry in segmented:
        entry["weight"] += share / len(segmented)
    grades = Counter(e["dr_grade"] for e in graded)
    for entry in graded:
        entry["weight"] += share / (len(grades) * grades[entry["dr_grade"]])
    for entry in train:
        entry["weight"] = round(entry["weight"], 8)


def _summary(entries: list[dict[str, Any]], index: IdridIndex) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for split in SPLITS:
        members = [e for e in entries if e["split"] == split]
        seg = [e for e in members if e["masks"] is not None]
        cls = [e for e in members if e["dr_grade"] is not None]
        summary[split] = {
            "segmentation": len(seg),
            "classification": len(cls),
            "both": sum(1 for e in seg if e["dr_grade"] is not None),
            "masks": {code: sum(1 for e in seg if e["masks"][code] is not None) for code in LESIONS},
            "dr_grade": {str(g): sum(1 for e in cls if e["dr_grade"] == g) for g in range(NUM_DR_GRADES)},
            "dme_risk": {str(g): sum(1 for e in cls if e["dme_risk"] == g) for g in range(NUM_DME_RISKS)},
        }
    summary["labels_without_images"] = dict(index.labels_without_images)
    summary["skipped"] = [str(p) for p in index.problems]
    return summary


def build_metadata(index: IdridIndex, val_fraction: float = 0.2, seed: int = 0, drop_conflicting: bool = False,
                   progress: bool = False, folds: int = 0, fold: int = 0) -> dict[str, Any]:
    """The metadata document for ``index``: one sample per photograph, val carved from each official training half,
    seeded and stratified (soft-exudate presence, the rarest lesion, and grades or not for photographs with masks;
    DR grade for the others), a photograph and its copies always on one side."""
    photographs, pairs = _photographs(index, progress)
    kept = [p for p in photographs if not (drop_conflicting and p.conflicting and not p.seg)]
    train_seg = [p for p in kept if p.official_split == "train" and p.seg]
    train_cls = [p for p in kept if p.official_split == "train" and not p.seg]
    # Photographs with masks by soft-exudate presence and by whether they also carry grades, so that validation
    # holds segmentation-only photographs too and the gate is measured on every kind of sample.
    seg_strata = [(p.seg[0].masks["SE"] is not None, bool(p.cls)) for p in train_seg]
    if folds:  # grouped k-fold cross-validation: validation is fold ``fold``
        if not 0 <= fold < folds:
            raise DataError(f"fold {fold} does not exist: --fold must lie in 0..{folds - 1}")
        # Photographs with masks by soft-exudate presence alone, a property of their own files: each lands in the same
        # fold whether or not the grading half is read beside them, so lesion figures of a run on the segmentation half
        # and of one on both halves (the semi-supervised runs) are measured on the same photographs.
        assigned = stratified_folds([p.key for p in train_seg], [se for se, _ in seg_strata], folds, seed)
        assigned.update(stratified_folds([p.key for p in train_cls], [p.cls[0].dr_grade for p in train_cls], folds,
                                         seed))
        val_keys = {key for key, index in assigned.items() if index == fold}
    else:
        val_keys = stratified_split([p.key for p in train_seg], seg_strata, val_fraction, seed)
        graded = [(p.cls[0].dr_grade, p.key in val_keys) for p in train_seg if p.cls]
        decided = {g: (sum(v for h, v in graded if h == g), sum(h == g for h, _ in graded)) for g, _ in graded}
        val_keys |= stratified_split([p.key for p in train_cls], [p.cls[0].dr_grade for p in train_cls],
                                     val_fraction, seed, decided=decided)

    def split_of(photograph: _Photograph) -> str:
        if photograph.official_split == "test":
            return "test"
        return "val" if photograph.key in val_keys else "train"

    roots = index.roots
    placed = [pair for p in photographs for pair in p.entries(split_of(p), roots, drop_conflicting)]
    entries = [entry for entry, _ in placed]
    if len(roots) > 1:
        for entry, root in placed:
            entry["root"] = root
    _assign_weights(entries)
    summary = _summary(entries, index)
    summary["same_photograph"] = {
        "twins": sum(1 for a, b, _, _ in pairs if type(a) is not type(b)),
        "duplicates": [p.describe(drop_conflicting) for p in photographs if len(p.cls) > 1 or len(p.seg) > 1],
        "pairs": [{"a": a.key, "b": b.key, "how": how, "mse": mse} for a, b, how, mse in pairs],
    }
    return {
        "schema": SCHEMA,
        "root": str(roots[0].resolve()) if len(roots) == 1 else [str(r.resolve()) for r in roots],
        "lesions": list(LESIONS),
        "tasks": list(TASKS),
        "seed": seed,
        "val_fraction": val_fraction,
        **({"folds": folds, "fold": fold} if folds else {}),
        "drop_conflicting": drop_conflicting,
        "samples": entries,
        "summary": summary,
    }


def only_tasks(document: dict[str, Any], tasks: Sequence[str]) -> dict[str, Any]:
    """The document with the labels of ``tasks`` only: the same split, the other task's labels removed, samples left
    without any label dropped, training weights recomputed. How an expert is trained alone for comparison."""
    keep_masks, keep_grades = "segmentation" in tasks, "classification" in tasks
    entries = []
    for entry in document["samples"]:
        entry = dict(entry, weight=0.0)
        if not keep_masks and entry["masks"] is not None:
            entry.update(masks=None, task="classification", task_vector=[0, entry["task_vector"][1]])
        if not keep_grades and entry["dr_grade"] is not None:
            entry.update(dr_grade=None, dme_risk=None, task="segmentation", task_vector=[entry["task_vector"][0], 0])
        if any(entry["task_vector"]):
            entries.append(entry)
    _assign_weights(entries)
    return dict(document, samples=entries, tasks_trained=list(tasks))


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


def load_metadata(path: Path | str, check_files: bool = True, roots: Sequence[Path | str] | None = None) -> Metadata:
    """Read a metadata file; ``roots`` replaces the dataset root(s) it names (the same download in another place:
    paths inside are relative to the roots)."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"metadata file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"metadata file {path} is not readable JSON ({error})") from None
    if roots is not None and isinstance(document, dict):
        named = document.get("root")
        wanted = len(named) if isinstance(named, list) else 1
        if len(roots) != wanted:
            raise DataError(f"metadata file {path} names {wanted} dataset folder(s); {len(roots)} given instead")
        resolved = [str(Path(r).expanduser()) for r in roots]
        document["root"] = resolved if isinstance(named, list) else resolved[0]
    metadata = parse_metadata(document, where=f"metadata file {path}", check_files=check_files)
    metadata.path = path
    return metadata
