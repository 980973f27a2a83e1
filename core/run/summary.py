"""The evaluation summary (``eval/<split>/summary.json``) as typed dataclasses.

``evaluate`` builds an ``EvalSummary`` and saves it; the dashboards, the CLI and the API load it back. Reading goes
through ``EvalSummary.from_dict``, so a key this version does not know, or a section of the wrong shape, is one
clear error instead of a ``KeyError`` somewhere in a page; ``to_dict`` writes the keys in the order they always had,
so the file of an unchanged run stays byte-identical.

Fields marked ``OPTIONAL`` are left out of the file when they are None (a section that was not computed).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import DataError
from core.fileio import atomic_write_text

OPTIONAL = {"omit_if_none": True}


@dataclass
class ClassScores:
    """One grade head (``core.evaluate.metrics.classification_report``)."""

    n: int
    num_classes: int
    labels: list[int]
    accuracy: float | None = None
    precision_macro: float | None = None
    recall_macro: float | None = None
    f1_macro: float | None = None
    precision_per_class: list[float] | None = None
    recall_per_class: list[float] | None = None
    f1_per_class: list[float] | None = None
    confusion_matrix: list[list[int]] | None = None
    support: list[int] | None = None
    kappa_quadratic: float | None = None


@dataclass
class LesionScores:
    """One lesion over a split (``core.evaluate.metrics.SegmentationAccumulator.summary``); the precision-recall
    curve itself goes to ``curves.json``."""

    dice: float | None
    iou: float | None
    dice_mean: float | None
    iou_mean: float | None
    images: int
    positive_pixels: int
    pixels: int
    aupr: float | None


@dataclass
class GateSummary:
    """How the gate routed the split; an untrained gate (a one-task run) carries ``trained=False`` and a note."""

    n: int
    accuracy: float | None = field(default=None, metadata=OPTIONAL)
    trained: bool | None = field(default=None, metadata=OPTIONAL)
    misrouted: int = 0
    accuracy_by_task: dict[str, float | None] | None = field(default=None, metadata=OPTIONAL)
    confusion_matrix: list[list[int]] | None = field(default=None, metadata=OPTIONAL)
    row_labels: list[str] | None = field(default=None, metadata=OPTIONAL)
    column_labels: list[str] | None = field(default=None, metadata=OPTIONAL)
    misrouted_samples: list[dict[str, Any]] = field(default_factory=list)
    accuracy_by_dr_grade: dict[str, dict[str, Any]] | None = field(default=None, metadata=OPTIONAL)
    shortcut_check: dict[str, Any] | None = field(default=None, metadata=OPTIONAL)  # core.evaluate.gate_audit
    note: str | None = field(default=None, metadata=OPTIONAL)
    target: str | None = field(default=None, metadata=OPTIONAL)  # model.gate_target when not "task"
    missed: int | None = field(default=None, metadata=OPTIONAL)  # needed the lesion map, sent to classification
    wasted: int | None = field(default=None, metadata=OPTIONAL)  # needed a grade only, segmented for nothing


@dataclass
class ClassificationSummary:
    dr: ClassScores
    dme: ClassScores
    joint_accuracy: float | None
    dr_labels: list[str]
    dme_labels: list[str]
    # "classification heads" or "lesion evidence": which part of the model gave the grades (files written before it
    # was recorded lack it: their grades came from the heads, see ``grades_source``)
    source: str | None = field(default=None, metadata=OPTIONAL)

    @property
    def grades_source(self) -> str:
        return self.source or "classification heads"


@dataclass
class SegmentationSummary:
    resolution: str
    lesions: dict[str, LesionScores] = field(default_factory=dict)


@dataclass
class EvalSummary:
    run: str
    split: str
    weights: str
    n: int
    n_segmentation: int
    n_classification: int
    resolution: str
    gate: GateSummary
    classification: ClassificationSummary
    segmentation: SegmentationSummary
    # more than mild DR told by the gate and by the grades (core.evaluate.runner._referable)
    referable: dict[str, Any] | None = field(default=None, metadata=OPTIONAL)
    # routing for real (core.evaluate.runner._routing): the operating point, the share sent to the decoder, the
    # graded-only photographs spared it, and the grades had every photograph gone to both experts
    routing: dict[str, Any] | None = field(default=None, metadata=OPTIONAL)
    seconds: float | None = field(default=None, metadata=OPTIONAL)

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "summary") -> EvalSummary:
        try:
            return _from_dict(cls, data)
        except (TypeError, ValueError, KeyError, AttributeError) as error:
            raise DataError(f"{source} does not hold an evaluation summary of this version ({error}); evaluate the "
                            "run again") from None

    def save(self, path: Path) -> Path:
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> EvalSummary:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DataError(f"evaluation summary {path} is unreadable ({error}); evaluate the run again") from None
        return cls.from_dict(data, source=str(path))


def _to_dict(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _to_dict(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not (f.metadata.get("omit_if_none") and getattr(value, f.name) is None)}
    if isinstance(value, dict):
        return {key: _to_dict(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_to_dict(item) for item in value]
    return value


def _from_dict(cls: type, data: Any) -> Any:
    """``cls`` from its dict, its dataclass fields (and dicts of them) built recursively; unknown keys refused."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__} must be an object, not {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__} has no field {', '.join(unknown)}")
    values = {}
    for name, value in data.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            value = _from_dict(kind, value)
        elif typing.get_origin(kind) is dict and dataclasses.is_dataclass(typing.get_args(kind)[1]):
            if not isinstance(value, dict):
                raise TypeError(f"{cls.__name__}.{name} must be an object")
            value = {key: _from_dict(typing.get_args(kind)[1], item) for key, item in value.items()}
        values[name] = value
    return cls(**values)
