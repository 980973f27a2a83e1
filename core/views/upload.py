"""The Predict page's read-outs of one uploaded photograph: upload checks, the display image, the lesion overlay on
it, the Grad-CAM picture, the gate's sentence, the lesion table and the downloads (masks zip, JSON report)."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import cv2
import numpy as np
from PIL import Image

from core import figures
from core.errors import DataError
from core.vocabulary import LESION_NAMES, LESIONS


def check_upload(name: str, data: bytes) -> None:
    """Refuse, by the upload's file name, what would not decode (empty, not an image, too large, truncated) before
    the prediction decodes the bytes, which it does without the name; the words are those ``python -m core
    predict`` writes for the same file (``core.data.imageio``)."""
    from core.data.imageio import check_decodes

    check_decodes(data, "image", name=name)


def display_image(data: bytes, max_side: int = 1280, name: str | None = None) -> np.ndarray:
    """The uploaded photograph as RGB, at most ``max_side`` pixels on its long side (for display only).

    JPEGs are decoded at a reduced DCT scale when that still leaves ``max_side`` pixels (a 4288x2848 IDRiD photograph
    at half size), several times faster than a full decode."""
    from core.data.imageio import open_image, source_name, to_rgb_array

    name = source_name(data, name)
    image = open_image(data, "image", name)
    try:
        with image:
            if image.format == "JPEG":
                image.draft("RGB", (max_side, max_side))
            image.load()
            rgb = to_rgb_array(image)
    except (OSError, ValueError, SyntaxError) as error:
        raise DataError(f"image {name} does not decode ({error.__class__.__name__}: {error})") from None
    scale = max_side / max(rgb.shape[:2])
    if scale < 1:
        rgb = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    return rgb


def lesion_probs_at(prediction, size: tuple[int, int]) -> np.ndarray:
    """(5, h, w) lesion probabilities on the photograph shown at ``size`` (w, h): the canvas's image part is resized
    straight onto the field-of-view box at that size (no detour through the 12-megapixel original)."""
    width, height = size
    geometry = prediction.geometry
    scale_x, scale_y = width / geometry.original[0], height / geometry.original[1]
    x0, y0, x1, y1 = geometry.crop
    left, top = min(width - 1, round(x0 * scale_x)), min(height - 1, round(y0 * scale_y))
    right, bottom = max(left + 1, min(width, round(x1 * scale_x))), max(top + 1, min(height, round(y1 * scale_y)))
    content = prediction.content_probs()
    out = np.zeros((len(LESIONS), height, width), np.float32)
    for channel in range(len(LESIONS)):
        out[channel, top:bottom, left:right] = cv2.resize(np.ascontiguousarray(content[channel], dtype=np.float32),
                                                         (right - left, bottom - top), interpolation=cv2.INTER_LINEAR)
    return out


def prediction_overlay(prediction, display: np.ndarray, lesions: list[str], opacity: float,
                       threshold: float) -> np.ndarray:
    probs = lesion_probs_at(prediction, (display.shape[1], display.shape[0]))
    return figures.overlay(display, probs, opacity=opacity, lesions=lesions, threshold=threshold)


def gradcam_image(canvas: np.ndarray, cam: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """The Grad-CAM map (0-1 on the canvas) as a heat map blended over the image the model saw."""
    heat = cv2.applyColorMap(np.clip(cam * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    if heat.shape[:2] != canvas.shape[:2]:
        heat = cv2.resize(heat, (canvas.shape[1], canvas.shape[0]))
    return np.clip(canvas * (1 - opacity) + heat * opacity, 0, 255).astype(np.uint8)


def gate_sentence(prediction) -> str:
    """What routed the photograph: the gate with its confidence, or, for a run that learned one task, its expert."""
    ran = ", ".join(prediction.ran)
    if prediction.only_task:
        return (f"This run learned **{prediction.only_task}** only, so its gate was not trained: the "
                f"{prediction.only_task} expert serves every photograph; experts run: {ran}.")
    return (f"Gate: **{prediction.task}** with confidence **{prediction.confidence:.1%}** (segmentation "
            f"{prediction.gate_probs[0]:.1%}, classification {prediction.gate_probs[1]:.1%}); experts run: {ran}.")


def lesion_rows(prediction, threshold: float) -> list[dict[str, Any]]:
    stats = prediction.lesion_stats(threshold) or {}
    return [{"lesion": f"{code} {LESION_NAMES[code]}", "count": s.count,
             "% of field of view": round(100 * s.area_fraction, 3)} for code, s in stats.items()]


def masks_zip(prediction, stem: str, threshold: float) -> bytes:
    """Each lesion's mask at the original size as a 0/255 PNG, zipped."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for channel, code in enumerate(LESIONS):
            png = io.BytesIO()
            Image.fromarray(prediction.mask_original(channel, threshold).astype(np.uint8) * 255).save(
                png, format="PNG", optimize=False, compress_level=6)
            archive.writestr(f"{stem}_{code}.png", png.getvalue())
    return buffer.getvalue()


def report_json(prediction, file_name: str, run_name: str, run_data: str, threshold: float) -> bytes:
    report = {"file": file_name, "run": run_name, "run_trained_on": run_data, "threshold": threshold,
              **prediction.report(threshold)}
    return (json.dumps(report, indent=1, default=_jsonable) + "\n").encode()


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
