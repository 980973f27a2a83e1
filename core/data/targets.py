"""The gate's target (``model.gate_target``): which expert a photograph should go to.

``task`` is the seed's: the annotation a photograph came with (masks: segmentation; grades: classification; both:
either). On IDRiD that is a property of the dataset's history, not of the picture: with twins merged, about ten
photographs carry the segmentation-only target, and no gate can learn it from pixels (docs/training.md).

``referable`` asks what the photograph shows: segmentation when it shows more than mild diabetic retinopathy, the
screening endpoint (DR grade >= 2, or DME risk >= 1, or haemorrhages, hard or soft exudates in its masks), since an
eye that needs attention deserves the lesion map; classification when it shows none or only microaneurysms (grades
0-1, no exudates), since a healthy or mildly affected eye needs a grade. Every graded photograph has this target
through its grades, and every photograph with masks through its masks (a mask file exists only for a lesion the
photograph shows, in IDRiD as in the synthetic generator).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from core.data.metadata import Sample

GateTarget = Literal["task", "referable"]
GATE_TARGETS: tuple[str, ...] = ("task", "referable")
REFERABLE_LESIONS = ("HE", "EX", "SE")  # microaneurysms alone are mild DR; the optic disc is anatomy
SEGMENTATION, CLASSIFICATION = (1, 0), (0, 1)


def is_referable(sample: Sample) -> bool | None:
    """More than mild DR, by any of the sample's labels; None when it has neither grades nor masks."""
    if sample.dr_grade is not None and sample.dr_grade >= 2:
        return True
    if sample.dme_risk is not None and sample.dme_risk >= 1:
        return True
    if sample.masks is not None and any(sample.masks.get(code) is not None for code in REFERABLE_LESIONS):
        return True
    if sample.dr_grade is None and sample.masks is None:
        return None
    return False


def gate_vector(sample: Sample, target: str = "task") -> tuple[int, int]:
    """The gate's soft target over (segmentation, classification); (0, 0) where the sample says nothing."""
    if target == "task":
        return tuple(sample.task_vector)
    if target != "referable":
        raise ValueError(f"unknown gate target {target!r}; expected one of {', '.join(GATE_TARGETS)}")
    referable = is_referable(sample)
    if referable is None:
        return (0, 0)
    return SEGMENTATION if referable else CLASSIFICATION


def target_shares(samples: Iterable[Sample], target: str = "referable") -> dict[str, int]:
    """How many samples each gate target sends where: ``segmentation``, ``classification``, ``either``, ``none``."""
    counts = {"segmentation": 0, "classification": 0, "either": 0, "none": 0}
    for sample in samples:
        vector = gate_vector(sample, target)
        key = {SEGMENTATION: "segmentation", CLASSIFICATION: "classification", (1, 1): "either"}.get(vector, "none")
        counts[key] += 1
    return counts
