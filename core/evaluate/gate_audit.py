"""Does the gate decide on the photograph or on its file's history? The shortcut check of the real-data gate.

In IDRiD the grading copies were reduced 4x and re-encoded, the segmentation photographs were not, and every
photograph with masks comes from the segmentation half. A gate could therefore learn "full-size file" instead of
"which task". The check: put each full-size segmentation photograph through the grading copies' history (a 4x4
box average, JPEG quality 92) and ask the gate again. A gate that decides on content answers the same.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from core.data.imageio import read_image
from core.data.metadata import Sample
from core.infer.predictor import Predictor
from core.vocabulary import TASKS

GRADING_REDUCTION = 4
GRADING_JPEG_QUALITY = 92
# The check passes when no route flips and p(segmentation) moves by less than this on average.
MAX_MEAN_SHIFT = 0.1


def degrade_like_grading(rgb: np.ndarray, factor: int = GRADING_REDUCTION, quality: int = GRADING_JPEG_QUALITY) -> bytes:
    """JPEG bytes of ``rgb`` reduced ``factor`` times by box averaging (INTER_AREA is exactly that for an integer
    factor) and re-encoded at ``quality``, as the grading copies in ../shared/idrid-grading were made."""
    height, width = rgb.shape[:2]
    small = cv2.resize(rgb, (width // factor, height // factor), interpolation=cv2.INTER_AREA)
    buffer = io.BytesIO()
    Image.fromarray(small).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def audit_gate(predictor: Predictor, samples: Sequence[Sample], progress: bool = True) -> dict[str, Any]:
    """The gate on each photograph with masks, as it is and degraded like a grading copy."""
    rows = []
    for sample in tqdm([s for s in samples if s.masks is not None], desc="gate shortcut check",
                       disable=not progress, leave=False):
        rgb = read_image(sample.image)
        before = predictor.gate_probs(rgb, admit=False)  # dataset photographs: measured as they are
        after = predictor.gate_probs(degrade_like_grading(rgb), admit=False)
        rows.append({
            "id": sample.id, "task": "both" if all(sample.task_vector) else sample.task,
            "size": [int(rgb.shape[1]), int(rgb.shape[0])],
            "p_segmentation": round(float(before[0]), 4), "p_segmentation_degraded": round(float(after[0]), 4),
            "route": TASKS[int(np.argmax(before))], "route_degraded": TASKS[int(np.argmax(after))],
        })
    return summarise_audit(rows)


def summarise_audit(rows: list[dict[str, Any]]) -> dict[str, Any]:
    shifts = np.array([r["p_segmentation_degraded"] - r["p_segmentation"] for r in rows], dtype=np.float64)
    flips = sum(r["route"] != r["route_degraded"] for r in rows)
    mean_shift = float(np.abs(shifts).mean()) if len(rows) else None
    return {
        "n": len(rows),
        "route_flips": int(flips),
        "mean_abs_shift_p_segmentation": None if mean_shift is None else round(mean_shift, 4),
        "mean_shift_p_segmentation": None if not len(rows) else round(float(shifts.mean()), 4),
        "routed_segmentation": sum(r["route"] == "segmentation" for r in rows),
        "routed_segmentation_degraded": sum(r["route_degraded"] == "segmentation" for r in rows),
        "passed": bool(rows) and flips == 0 and mean_shift < MAX_MEAN_SHIFT,
        "rule": f"no route flips and mean |shift of p(segmentation)| < {MAX_MEAN_SHIFT}",
        "degradation": f"{GRADING_REDUCTION}x{GRADING_REDUCTION} box average, JPEG quality {GRADING_JPEG_QUALITY}",
        "samples": rows,
    }
