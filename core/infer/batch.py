"""Predicting a file or a folder of images to disk: mask PNGs at the original size and one CSV row per image.

A file that cannot be read gets a row with its error and the run goes on: one bad upload must not cost the rest.
The error names the file with the words the Predict page shows for the same bytes (``core.data.imageio``).
``<LESION>_area_fraction`` is the share of the photograph's field-of-view box (``Prediction.lesion_stats``), never
above 1; ``OD_count`` is 0 or 1 (the disc is its largest component).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from core.errors import DataError, StudioError
from core.fileio import atomic_write, atomic_write_bytes
from core.infer.predictor import Predictor
from core.vocabulary import LESIONS

INPUT_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


def list_inputs(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in INPUT_SUFFIXES)
        if not files:
            raise DataError(f"no images ({', '.join(INPUT_SUFFIXES)}) in {source}")
        return files
    raise DataError(f"input {source} does not exist")


def _png(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _row(path: Path, predictor: Predictor, out: Path, both: bool, threshold: float) -> dict[str, Any]:
    prediction = predictor.predict(path, both=both)
    report = prediction.report(threshold)
    row: dict[str, Any] = {"image": str(path), "error": "", "route": prediction.task,
                           "gate_confidence": round(prediction.confidence, 4),
                           "warnings": " | ".join(prediction.warnings), "seconds": round(prediction.seconds, 3)}
    if prediction.dr_probs is not None:
        row["dr_grade"] = report["dr_grade"]["predicted"]
        row["dme_risk"] = report["dme_risk"]["predicted"]
    if prediction.seg_probs is not None:
        for channel, code in enumerate(LESIONS):
            atomic_write_bytes(out / "masks" / f"{path.stem}_{code}.png",
                               _png(prediction.mask_original(channel, threshold)))
            row[f"{code}_count"] = report["lesions"][code]["count"]
            row[f"{code}_area_fraction"] = round(report["lesions"][code]["area_fraction"], 6)
        implied = report.get("implied_dme") or {}
        row["implied_dme"] = implied.get("risk")
    return row


def predict_paths(predictor: Predictor, source: Path, out: Path, both: bool = False, threshold: float = 0.5,
                  progress: bool = True) -> list[dict[str, Any]]:
    files = list_inputs(source)
    rows = []
    for path in tqdm(files, desc="predict", unit="img", disable=not progress):
        try:
            rows.append(_row(path, predictor, out, both, threshold))
        except StudioError as error:
            rows.append({"image": str(path), "error": str(error)})
    _write_csv(rows, out / "predictions.csv")
    return rows


def _columns(rows: list[dict[str, Any]]) -> Iterator[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return iter(seen)


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    def write(stream) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(_columns(rows)))
        writer.writeheader()
        writer.writerows(rows)
        stream.write(text.getvalue().encode())

    atomic_write(path, write)
