"""Gallery selection: a seeded random draw of evaluated samples with what the gallery page shows for each."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.data.metadata import Metadata
from core.errors import DataError
from core.run.folder import RunDir, mask_file
from core.vocabulary import DME_NAMES, DR_NAMES, LESIONS


@dataclass
class Tile:
    id: str
    image: Path | None  # None when the dataset's images are not on this machine
    task: str  # true task: segmentation, classification or both
    route: str  # the gate's choice
    misrouted: bool
    confidence: float
    label: str  # prediction against truth, in words
    masks: dict[str, Path] = field(default_factory=dict)  # predicted probability PNGs
    misrouted_kind: str = ""  # "missed", "wasted" or "" (right, or an evaluation older than the kinds)
    dr_right: bool | None = None  # the DR grade against the truth; None for a photograph without grades
    dme_right: bool | None = None

    @property
    def both(self) -> bool:
        return self.task == "both"


def read_predictions(run_dir: RunDir | Path | str, split: str) -> list[dict[str, str]]:
    run = RunDir.of(run_dir)
    path = run.predictions(split)
    if not path.exists():
        raise DataError(f"run {run.name} has no evaluation of the {split} split yet "
                        f"(python -m core evaluate --run {run.path} --split {split})")
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _label(row: dict[str, str]) -> str:
    """Prediction against truth in words: Dice for masks, grades for grades, both for a photograph with both."""
    parts = []
    if row["task"] in ("segmentation", "both"):
        dice = [f"{code} {float(row[f'dice_{code}']):.2f}" for code in LESIONS if row.get(f"dice_{code}")]
        parts.append("Dice " + ", ".join(dice) if dice else "no lesion in truth or prediction")
    if row["task"] in ("classification", "both"):
        dr = f"DR {DR_NAMES[int(row['dr_pred'])]} (true {DR_NAMES[int(row['dr_true'])]})"
        dme = f"DME {DME_NAMES[int(row['dme_pred'])]} (true {DME_NAMES[int(row['dme_true'])]})"
        parts.append(f"{dr}; {dme}")
    return "; ".join(parts)


def _grade_right(row: dict[str, str], task: str) -> bool | None:
    """Whether the ``task`` ("dr" or "dme") grade equals the truth; None where the photograph has no grade (a
    correct route says nothing about the grade, so the gallery says both)."""
    true, predicted = row.get(f"{task}_true"), row.get(f"{task}_pred")
    if row["task"] not in ("classification", "both") or not true or not predicted:
        return None
    return int(true) == int(predicted)


MISROUTING_KINDS = ("missed", "wasted")  # core.evaluate.runner.misrouting_kind


def gallery(run_dir: Path | str, split: str = "test", n: int = 20, seed: int = 0, metadata: Metadata | None = None,
            misrouted_only: bool = False, kind: str | None = None) -> list[Tile]:
    """``n`` samples drawn without replacement by ``seed`` (so a draw can be shared and redrawn); with
    ``misrouted_only`` the misrouted ones, or with ``kind`` only the ``missed`` (needed the lesion map, went to
    classification) or the ``wasted`` (segmented for nothing). Evaluations older than the kinds have none."""
    if kind is not None and kind not in MISROUTING_KINDS:
        raise ValueError(f"kind must be one of {', '.join(MISROUTING_KINDS)}, not {kind!r}")
    rows = read_predictions(run_dir, split)
    if misrouted_only or kind is not None:
        rows = [r for r in rows if r["misrouted"] == "True" and kind in (None, r.get("misrouted_kind"))]
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(rows), size=min(n, len(rows)), replace=False).tolist()) if rows else []
    images = {s.id: s.image for s in metadata.samples} if metadata is not None else {}
    folder = RunDir(Path(run_dir)).eval_dir(split)
    tiles = []
    for index in chosen:
        row = rows[index]
        image = images.get(row["id"])
        tiles.append(Tile(
            id=row["id"], image=image if image is not None and image.exists() else None, task=row["task"],
            route=row["route"], misrouted=row["misrouted"] == "True", confidence=float(row["gate_confidence"]),
            label=_label(row), masks={code: mask_file(folder, row["id"], code) for code in LESIONS},
            dr_right=_grade_right(row, "dr"), dme_right=_grade_right(row, "dme"),
            misrouted_kind=row.get("misrouted_kind") or "",
        ))
    return tiles
