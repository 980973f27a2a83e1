"""Predicting a file or a folder of images to disk: mask PNGs at the original size and one CSV row per image.

A file that cannot be read gets a row with its error and the run goes on: one bad upload must not cost the rest.
The error names the file with the words the Predict page shows for the same bytes (``core.data.imageio``).
``<LESION>_area_fraction`` is the share of the photograph's field-of-view box (``Prediction.lesion_stats``), never
above 1; ``OD_count`` is 0 or 1 (the disc is its largest component).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from core.errors import DataError, StudioError
from core.fileio import atomic_write, atomic_write_bytes
from core.infer.predictor import Prediction, Predictor, Prepared
from core.run.folder import mask_file
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


def _row(path: Path, prediction: Prediction, out: Path, threshold: float) -> dict[str, Any]:
    report = prediction.report(threshold)
    row: dict[str, Any] = {"image": str(path), "error": "", "route": prediction.task,
                           "gate_confidence": round(prediction.confidence, 4),
                           "warnings": " | ".join(prediction.warnings), "seconds": round(prediction.seconds, 3)}
    if prediction.dr_probs is not None:
        row["dr_grade"] = report["dr_grade"]["predicted"]
        row["dme_risk"] = report["dme_risk"]["predicted"]
    if prediction.seg_probs is not None:
        for channel, code in enumerate(LESIONS):
            atomic_write_bytes(mask_file(out, path.stem, code), _png(prediction.mask_original(channel, threshold)))
            row[f"{code}_count"] = report["lesions"][code]["count"]
            row[f"{code}_area_fraction"] = round(report["lesions"][code]["area_fraction"], 6)
        implied = report.get("implied_dme") or {}
        row["implied_dme"] = implied.get("risk")
    return row


def predict_paths(predictor: Predictor, source: Path, out: Path, both: bool = False, threshold: float = 0.5,
                  progress: bool = True, batch_size: int = 4) -> list[dict[str, Any]]:
    """One row per file of ``source``, in file order; the readable files go through the model ``batch_size`` at a
    time (``Predictor.predict_prepared``)."""
    files = list_inputs(source)
    rows: dict[Path, dict[str, Any]] = {}
    pending: list[tuple[Path, Prepared, float]] = []

    def flush() -> None:
        shared = sum(seconds for _, _, seconds in pending) / max(1, len(pending))
        predictions = predictor.predict_prepared([item for _, item, _ in pending], both, shared)
        for (path, _, _), prediction in zip(pending, predictions, strict=True):
            rows[path] = _row(path, prediction, out, threshold)
        pending.clear()

    for path in tqdm(files, desc="predict", unit="img", disable=not progress):
        began = time.perf_counter()
        try:
            pending.append((path, predictor.prepare(path), time.perf_counter() - began))
        except StudioError as error:
            rows[path] = {"image": str(path), "error": str(error)}
        if len(pending) == batch_size:
            flush()
    if pending:
        flush()
    ordered = [rows[path] for path in files]
    _write_csv(ordered, out / "predictions.csv")
    return ordered


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
