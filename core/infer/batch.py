"""Predicting a file or a folder of images to disk: one CSV row per image and, on request, its lesion masks.

The work is pipelined: worker threads decode and preprocess the next photographs and encode the masks of the last
ones while the model runs a batch (decoding, resizing and PNG encoding release the GIL), and the model sees
``batch_size`` photographs per forward pass. On 40 full-size IDRiD photographs with ``checkpoints/idrid`` on 2 cores
the one-at-a-time loop took 24.5 s, of which 14 s went to encoding 200 full-size 8-bit mask PNGs with
``optimize=True``; masks are now 1-bit PNGs (cv2's bilevel writer: 12 ms against 57-68 ms, a sixth of the bytes).
``masks="original"`` writes them at the photograph's size, ``"canvas"`` at the model's, ``"none"`` not at all.

A file that cannot be read gets a row with its error and the run goes on: one bad upload must not cost the rest.
The error names the file with the words the Predict page shows for the same bytes (``core.data.imageio``).
``<LESION>_area_fraction`` is the share of the photograph's field-of-view box (``Prediction.lesion_stats``), never
above 1; ``OD_count`` is 0 or 1 (the disc is its largest component).
"""

from __future__ import annotations

import csv
import io
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from tqdm import tqdm

from core.errors import DataError, StudioError
from core.fileio import atomic_write, atomic_write_bytes
from core.infer.predictor import Prediction, Predictor, Prepared
from core.run.folder import mask_file
from core.vocabulary import LESIONS

# One list for a folder, a single file and the Predict page's uploader: GIFs and BMPs are read like the rest (a GIF's
# palette and its first frame only are said in the warnings, core.data.imageio.conversion_notes).
INPUT_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif")
MaskSize = Literal["original", "canvas", "none"]
MASK_SIZES = ("original", "canvas", "none")
WORKERS = 2  # decoding ahead and encoding behind; the model's own threads run the forward pass


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
    """A boolean mask as a 1-bit PNG (0 and 255 when read back as greyscale)."""
    ok, encoded = cv2.imencode(".png", mask.astype(np.uint8) * 255, [cv2.IMWRITE_PNG_BILEVEL, 1])
    if not ok:
        raise StudioError("could not encode a mask as PNG")
    return encoded.tobytes()


def _mask(prediction: Prediction, channel: int, threshold: float, size: MaskSize) -> np.ndarray:
    if size == "canvas":
        return prediction.content_probs()[channel] >= threshold
    return prediction.mask_original(channel, threshold)


def write_masks(prediction: Prediction, path: Path, out: Path, threshold: float, size: MaskSize) -> None:
    for channel, code in enumerate(LESIONS):
        atomic_write_bytes(mask_file(out, path.stem, code), _png(_mask(prediction, channel, threshold, size)))


def prediction_row(path: Path | str, prediction: Prediction, threshold: float,
                   grades_from: str | None = None) -> dict[str, Any]:
    """One photograph's CSV row (the Predict page's CSV has the same columns): the grades with every grade's
    probability, since a grade alone hides a 0.41 against 0.39 call, and ``grades_from``, the part of the model
    that gave them (``Predictor.grades_source``: "lesion evidence" or "classification heads"; empty when the caller
    does not say)."""
    report = prediction.report(threshold)
    row: dict[str, Any] = {"image": str(path), "error": "", "route": prediction.task,
                           "gate_confidence": round(prediction.confidence, 4),
                           "experts_run": "+".join(prediction.ran),
                           "warnings": " | ".join(prediction.warnings), "seconds": round(prediction.seconds, 3)}
    if prediction.dr_probs is not None and prediction.dme_probs is not None:
        row["dr_grade"] = report["dr_grade"]["predicted"]
        row["dme_risk"] = report["dme_risk"]["predicted"]
        row["grades_from"] = prediction.grades_from or grades_from or ""
        row.update({f"dr_p{grade}": round(float(p), 4) for grade, p in enumerate(prediction.dr_probs)})
        row.update({f"dme_p{risk}": round(float(p), 4) for risk, p in enumerate(prediction.dme_probs)})
    if "referable_dr" in report:
        row["referable_p"] = report["referable_dr"]["probability"]
        row["refer"] = report["referable_dr"]["refer"]
        row["referable_from"] = report["referable_dr"]["source"]
    if prediction.seg_probs is not None:
        for code in LESIONS:
            row[f"{code}_count"] = report["lesions"][code]["count"]
            row[f"{code}_area_fraction"] = round(report["lesions"][code]["area_fraction"], 6)
        implied = report.get("implied_dme") or {}
        row["implied_dme"] = implied.get("risk")
    return row


def _prepare(predictor: Predictor, path: Path) -> tuple[Prepared | None, str, float]:
    """The file prepared, or its error in words; and the seconds it took (a row's share of the work)."""
    began = time.perf_counter()
    try:
        return predictor.prepare(path), "", time.perf_counter() - began
    except StudioError as error:
        return None, str(error), time.perf_counter() - began


def predict_paths(predictor: Predictor, source: Path, out: Path, both: bool = False, threshold: float = 0.5,
                  progress: bool = True, batch_size: int = 4, masks: MaskSize = "original") -> list[dict[str, Any]]:
    """One row per file of ``source``, in file order, written to ``out/predictions.csv``; with ``masks``, the
    lesion masks of each photograph under ``out/masks/``."""
    if masks not in MASK_SIZES:
        raise StudioError(f"masks must be one of {', '.join(MASK_SIZES)}, not {masks!r}")
    files = list_inputs(source)
    rows: dict[Path, dict[str, Any]] = {}
    writes: list[Future] = []
    with ThreadPoolExecutor(WORKERS, thread_name_prefix="predict") as pool, \
            tqdm(total=len(files), desc="predict", unit="img", disable=not progress) as bar:
        ahead: deque[tuple[Path, Future]] = deque()
        queue = iter(files)

        def refill() -> None:  # keep two batches decoding ahead of the model
            while len(ahead) < 2 * batch_size and (path := next(queue, None)) is not None:
                ahead.append((path, pool.submit(_prepare, predictor, path)))

        refill()
        while ahead:
            batch: list[tuple[Path, Prepared, float]] = []
            while ahead and len(batch) < batch_size:
                path, future = ahead.popleft()
                prepared, error, seconds = future.result()
                if prepared is None:
                    rows[path] = {"image": str(path), "error": error}
                    bar.update()
                else:
                    batch.append((path, prepared, seconds))
                refill()
            if not batch:
                continue
            shared = sum(seconds for _, _, seconds in batch) / len(batch)
            predictions = predictor.predict_prepared([item for _, item, _ in batch], both, shared)
            for (path, _, _), prediction in zip(batch, predictions, strict=True):
                rows[path] = prediction_row(path, prediction, threshold, predictor.grades_source)
                if masks != "none" and prediction.seg_probs is not None:
                    writes.append(pool.submit(write_masks, prediction, path, out, threshold, masks))
            bar.update(len(batch))
        for write in writes:
            write.result()  # a failed write (a full disk) is the run's error, not a silent gap
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
