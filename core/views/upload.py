"""The Predict page's read-outs: of one uploaded photograph (upload checks, the display image, the lesion overlay
on it, the Grad-CAM picture, the gate's sentence, the DME read-outs, the lesion table, the masks zip and JSON
report), and of all the session's uploads (the results table, its CSV and one zip of every photograph's masks).

Every read-out of a grade says which part of the model gave it (``Predictor.grades_source``): with a lesion grader
the grades are read from the lesion maps, and the classification heads' Grad-CAM does not explain them."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from core import figures
from core.errors import DataError, StudioError
from core.vocabulary import DME_NAMES, DR_NAMES, LESION_NAMES, LESIONS

if TYPE_CHECKING:
    from core.data.preprocess import Geometry
    from core.infer.predictor import Prediction

UPLOAD_TYPES = ["jpg", "jpeg", "png", "tif", "tiff", "bmp", "gif"]  # core.infer.batch.INPUT_SUFFIXES, as the uploader takes them
LESION_GRADER = "lesion evidence"  # Predictor.grades_source of a run whose lesion grader gives the grades


def check_upload(name: str, data: bytes) -> None:
    """Refuse, by the upload's file name, what would not decode (empty, not an image, too large, truncated) or is
    no fundus photograph's shape (``core.infer.admission``), before the prediction decodes the bytes, which it does
    without the name; the words are those ``python -m core predict`` writes for the same file."""
    from core.data.imageio import check_decodes, open_image, oriented_size
    from core.infer.admission import check_fundus_shape

    check_decodes(data, "image", name=name)
    with open_image(data, "image", name) as image:
        check_fundus_shape(oriented_size(image), name)

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


def cam_on_photograph(cam: np.ndarray, geometry: Geometry) -> np.ndarray:
    """``Predictor.gradcam``'s map zeroed on the canvas padding, then scaled to a peak of 1 on the photograph.

    The padding is not photograph: heat there explains nothing a clinician can look at, and a peak there (the
    deepest features see the canvas edge) would scale the photograph's own evidence down to blue."""
    width, height = geometry.canvas
    if cam.shape != (height, width):
        cam = cv2.resize(np.ascontiguousarray(cam, dtype=np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    (ox, oy), (cw, ch) = geometry.offset, geometry.content
    out = np.zeros((height, width), np.float32)
    out[oy : oy + ch, ox : ox + cw] = np.maximum(cam[oy : oy + ch, ox : ox + cw], 0)
    peak = float(out.max())
    return out / peak if peak > 0 else out


def gradcam_picture(prediction: Prediction, cam: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """The Grad-CAM heat map over the image the model saw, on the photograph only (``cam_on_photograph``)."""
    return gradcam_image(prediction.canvas, cam_on_photograph(cam, prediction.geometry), opacity)


def grades_from_words(grades_from: str) -> str:
    """The part of the model that gave the grades (``Predictor.grades_source``), in the page's words."""
    return "lesion grader" if grades_from == LESION_GRADER else "classification heads"


def grade_title(task: str, grades_from: str) -> str:
    """A grade chart's title that names where its probabilities came from."""
    return f"{'DR grade' if task == 'dr' else 'DME risk'} ({grades_from_words(grades_from)})"


def gradcam_caption(head: str, grades_from: str) -> str:
    """What the Grad-CAM picture explains: always the classification expert's head, which gave the grade shown
    only when the run has no lesion grader."""
    name = "DR grade" if head == "dr" else "DME risk"
    if grades_from == LESION_GRADER:
        return (f"Grad-CAM of the classification expert's {name} head: that head's own evidence for its own grade, "
                f"not for the {name} shown above, which the lesion grader read from the lesion maps. On the "
                "photograph only (the canvas padding left out).")
    return f"Grad-CAM of the {name} head on the image the model saw, photograph only (the canvas padding left out)"


@dataclass
class Readout:
    """One ``st.metric``: its label, value, a tooltip, and a sentence said beside it (a disagreement)."""

    label: str
    value: str
    help: str | None = None
    note: str = ""


def dme_readouts(prediction: Prediction, grades_from: str, threshold: float) -> tuple[Readout, Readout]:
    """DME from the masks (the exudate rule) and the model's DME risk, each saying so when the other disagrees
    (``Prediction.report()["dme_disagreement"]``): a reader who sees one of them must not miss the conflict."""
    implied = prediction.implied_dme(threshold)
    from_masks = "unknown" if implied is None or implied.risk is None else DME_NAMES[implied.risk]
    who = "lesion grader" if grades_from == LESION_GRADER else "classification head"
    masks = Readout("DME from the masks", from_masks)
    if prediction.dme_probs is None:
        return masks, Readout(f"DME risk ({who})", "not run", help="Turn on 'Run both heads' to compare.")
    model_help = ("Read by the run's lesion grader from the lesion maps, not by the classification expert's DME "
                  "head." if grades_from == LESION_GRADER else "The classification expert's DME head.")
    model = Readout(f"DME risk ({who})", DME_NAMES[int(np.argmax(prediction.dme_probs))], help=model_help)
    if prediction.report(threshold).get("dme_disagreement"):
        masks.note = f"Disagrees with the {who}, which says {model.value}."
        model.note = f"Disagrees with DME from the masks, which says {from_masks}."
    return masks, model


def gate_sentence(prediction) -> str:
    """What routed the photograph: the gate with its confidence and operating point, or, for a run that learned one
    task, its expert; and whether the lesion decoder ran."""
    ran = ", ".join(prediction.ran)
    if prediction.only_task:
        return (f"This run learned **{prediction.only_task}** only, so its gate was not trained: the "
                f"{prediction.only_task} expert serves every photograph; experts run: {ran}.")
    point = (f"; segmentation at {prediction.gate_threshold:.0%} and above" if prediction.gate_threshold != 0.5
             else "")
    skipped = "" if "segmentation" in prediction.ran else " The lesion decoder did not run."
    if skipped and prediction.glance_size:
        skipped = (f" The lesion decoder did not run on the canvas: the gate read the lesion maps of a "
                   f"{prediction.glance_size}-px copy.")
    if prediction.served_both:
        skipped = (" This run serves both experts to every photograph (infer.route: both): its gate is not good "
                   "enough to decide.")
    return (f"Gate: **{prediction.task}** with confidence **{prediction.confidence:.1%}** (segmentation "
            f"{prediction.gate_probs[0]:.1%}, classification {prediction.gate_probs[1]:.1%}{point}); experts run: "
            f"{ran}.{skipped}")


def referable_sentence(prediction) -> str | None:
    """Refer or not, for more than mild DR (DR grade >= 2 or DME risk >= 1), from the grades shown, with the
    probability and the operating point; None where no grades were computed."""
    referable = prediction.report().get("referable_dr")
    if referable is None:
        return None
    verdict = "**refer**: more than mild DR likely" if referable["refer"] else "**no referable DR**"
    if referable.get("source") == "gate":
        return (f"Referable DR: {verdict} (probability {referable['probability']:.0%} from the gate; refer at "
                f"{referable['operating_point']:.0%} and above, the run's operating point chosen for sensitivity; "
                "more than mild DR: DR grade >= 2, DME risk >= 1, haemorrhages or exudates).")
    return (f"Referable DR: {verdict} (probability {referable['probability']:.0%} from the grades; refer at 50% "
            "and above; DR grade >= 2 or DME risk >= 1).")


def lesion_rows(prediction, threshold: float) -> list[dict[str, Any]]:
    stats = prediction.lesion_stats(threshold) or {}
    return [{"lesion": f"{code} {LESION_NAMES[code]}", "count": s.count,
             "% of field of view": round(100 * s.area_fraction, 3)} for code, s in stats.items()]


def _mask_png(mask: np.ndarray) -> bytes:
    """A boolean mask as the 1-bit PNG ``python -m core predict`` writes (0 and 255 when read as greyscale)."""
    ok, encoded = cv2.imencode(".png", mask.astype(np.uint8) * 255, [cv2.IMWRITE_PNG_BILEVEL, 1])
    if not ok:
        raise StudioError("could not encode a mask as PNG")
    return encoded.tobytes()


def _add_masks(archive: zipfile.ZipFile, prediction: Prediction, stem: str, threshold: float) -> None:
    for channel, code in enumerate(LESIONS):
        archive.writestr(f"{stem}_{code}.png", _mask_png(prediction.mask_original(channel, threshold)))


def masks_zip(prediction: Prediction, stem: str, threshold: float) -> bytes:
    """Each lesion's mask at the original size as a 1-bit PNG, zipped."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        _add_masks(archive, prediction, stem, threshold)
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


# -- all the session's uploads ---------------------------------------------------------------------------------

@dataclass
class UploadResult:
    """One upload of the page: its prediction, or the error that stopped it, in the words the page showed."""

    name: str
    prediction: Prediction | None = None
    error: str = ""

    def fail(self, error: BaseException) -> None:
        """Note what stopped the prediction; an error after it (drawing, Grad-CAM) leaves the row's prediction."""
        if self.prediction is None:
            self.error = error_words(error)


def error_words(error: BaseException) -> str:
    """An error as the page's ``guard`` says it: a user's mistake as its one line, anything else with its type."""
    if isinstance(error, StudioError):
        return str(error)
    return f"prediction failed: {type(error).__name__}: {error}"


def csv_rows(results: list[UploadResult], threshold: float, grades_from: str) -> list[dict[str, Any]]:
    """The rows of ``python -m core predict``'s predictions.csv (``core.infer.batch.prediction_row``), one per
    upload, so that a CSV from the page and one from the command line can be read by the same script."""
    from core.infer.batch import prediction_row

    rows = []
    for result in results:
        if result.prediction is None:
            rows.append({"image": result.name, "error": result.error or "not predicted"})
        else:
            rows.append(prediction_row(result.name, result.prediction, threshold,
                                       result.prediction.grades_from or grades_from))
    return rows


def results_csv(results: list[UploadResult], threshold: float, grades_from: str) -> bytes:
    """``csv_rows`` as CSV text; the columns are every row's keys in first-seen order (an error row has two)."""
    rows = csv_rows(results, threshold, grades_from)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode()


def _percent(probs: np.ndarray) -> float:
    return round(100 * float(np.max(probs)), 1)


def results_table(results: list[UploadResult], threshold: float, grades_from: str) -> list[dict[str, Any]]:
    """One row per upload for the page's table across photographs: route, grades with their probability and where
    they came from, each lesion's count and area (% of the field of view), warnings, or the error."""
    rows = []
    for result in results:
        row: dict[str, Any] = {"file": result.name}
        prediction = result.prediction
        if prediction is None:
            rows.append({**row, "error": result.error or "not predicted"})
            continue
        row["route"] = prediction.task
        if prediction.dr_probs is not None and prediction.dme_probs is not None:
            row.update({"DR grade": DR_NAMES[int(np.argmax(prediction.dr_probs))],
                        "DR grade %": _percent(prediction.dr_probs),
                        "DME risk": DME_NAMES[int(np.argmax(prediction.dme_probs))],
                        "DME risk %": _percent(prediction.dme_probs),
                        "grades from": grades_from_words(prediction.grades_from or grades_from)})
        for code, stats in (prediction.lesion_stats(threshold) or {}).items():
            row[f"{code} count"] = stats.count
            row[f"{code} % of FOV"] = round(100 * stats.area_fraction, 3)
        row["warnings"] = " | ".join(prediction.warnings)
        row["error"] = ""
        rows.append(row)
    return rows


def _stems(names: list[str]) -> list[str]:
    """File stems made unique (``eye.jpg`` and ``eye.png`` would write the same mask names)."""
    taken: set[str] = set()
    out = []
    for name in names:
        stem = base = Path(name).stem or "image"
        copy = 1
        while stem in taken:
            copy += 1
            stem = f"{base}-{copy}"
        taken.add(stem)
        out.append(stem)
    return out


def all_masks_zip(results: list[UploadResult], threshold: float) -> bytes:
    """Every predicted photograph's lesion masks (original size, 1-bit PNGs named ``<stem>_<lesion>.png``) in one
    zip; photographs the gate sent to grading only, or that failed, have none."""
    shown = [r for r in results if r.prediction is not None and r.prediction.seg_probs is not None]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for result, stem in zip(shown, _stems([r.name for r in shown]), strict=True):
            _add_masks(archive, result.prediction, stem, threshold)
    return buffer.getvalue()
