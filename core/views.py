"""What the app's pages show, computed from runs and predictions without streamlit.

The pages only lay these out: evaluation results read back from ``eval/<split>/``, the rows of the challenge-metric
and misrouted tables, gallery tiles as RGB images, the Predict page's display image, overlay, Grad-CAM picture and
downloads. Figures come from ``core.figures`` (``step_curves`` stays importable from here for the Train page).
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from core import figures
from core.config import Config, load_config
from core.data.preprocess import decode_for_canvas
from core.errors import DataError, StudioError
from core.figures import step_curves  # noqa: F401  (the Train page's chart, moved to core.figures)
from core.train.run_dir import RunDir
from core.vocabulary import DME_NAMES, DR_NAMES, LESION_NAMES, LESIONS

SYNTHETIC_NOTE = "trained on synthetic images only"


# -- runs and data ---------------------------------------------------------------------------------------------

def run_config(path: Path | str) -> Config:
    """The run's config.yaml; a clear ``ConfigError`` when it is missing or damaged."""
    run = RunDir(Path(path))
    if not run.path.is_dir():
        raise DataError(f"run folder {run.path} does not exist")
    return load_config(run.config)


def data_description(config: Config) -> str:
    data = config.data
    if data.source == "synthetic":
        return f"{SYNTHETIC_NOTE} (the built-in synthetic IDRiD, {data.synthetic.n_seg} segmentation + " \
               f"{data.synthetic.n_cls} grading images)"
    if data.source == "folder":
        return "IDRiD folder " + ", ".join(map(str, data.roots))
    return f"metadata file {data.metadata}"


def describe_dataset(data) -> dict[str, Any]:
    """Counts per split and task of a dataset config (reads file headers, never decodes images)."""
    from core.data.sources import describe, resolve_metadata

    metadata = resolve_metadata(data, progress=False)
    counts = {}
    for split in ("train", "val", "test"):
        samples = metadata.split(split)
        counts[split] = {"segmentation": sum(s.masks is not None for s in samples),
                         "classification": sum(s.dr_grade is not None for s in samples)}
    return {"line": describe(metadata), "counts": counts, "n": len(metadata.samples)}


def runs_table(runs: list) -> list[dict[str, Any]]:
    """One row per run for the Train page's list of past runs."""
    import datetime as dt

    rows = []
    for info in runs:
        progress = info.progress()
        started = info.status.get("started")
        rows.append({
            "run": info.name, "state": info.state,
            "progress": progress["text"],
            "data": "synthetic" if info.synthetic else (info.data_source or "?"),
            "best score": info.status.get("best"),
            "evaluated": ", ".join(info.evaluated) or "no",
            "started": dt.datetime.fromtimestamp(started).strftime("%Y-%m-%d %H:%M") if isinstance(
                started, (int, float)) else "",
            "note": info.error or "",
        })
    return rows


# -- evaluation ------------------------------------------------------------------------------------------------

@dataclass
class Evaluation:
    split: str
    summary: dict[str, Any]
    curves: dict[str, Any]
    predictions: list[dict[str, str]]

    @property
    def resolution(self) -> str:
        return self.summary.get("resolution", "?")

    @property
    def caption(self) -> str:
        s = self.summary
        return (f"{s.get('split', self.split)} split, {s.get('n', '?')} images ({s.get('n_segmentation', '?')} "
                f"segmentation, {s.get('n_classification', '?')} graded), {self.resolution}, {s.get('weights', '?')}"
                " weights")


def load_evaluation(path: Path | str, split: str) -> Evaluation | None:
    """``eval/<split>/`` of a run, or None when it was not evaluated on that split; a damaged file raises."""
    folder = RunDir(Path(path)).eval_dir(split)
    summary_path = folder / "summary.json"
    if not summary_path.exists():
        return None
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        curves_path = folder / "curves.json"
        curves = json.loads(curves_path.read_text(encoding="utf-8")) if curves_path.exists() else {}
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"evaluation files in {folder} are unreadable ({error}); evaluate the run again") from None
    from core.evaluate.gallery import read_predictions

    try:
        predictions = read_predictions(path, split)
    except DataError:
        predictions = []
    return Evaluation(split, summary, curves, predictions)


def _fmt(value: Any, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    if isinstance(value, (int, float)):
        return f"{value:.1%}" if percent else f"{value:.3f}"
    return str(value)


def challenge_rows(evaluation: Evaluation) -> list[dict[str, str]]:
    """The IDRiD challenge's own measures (AUPR per lesion; DR and DME accuracy, joint accuracy) and the gate."""
    s = evaluation.summary
    cls, seg, gate = s.get("classification", {}), s.get("segmentation", {}), s.get("gate", {})
    rows = [{"measure": "Gate accuracy", "value": _fmt(gate.get("accuracy"), True),
             "what": f"{gate.get('misrouted', 'n/a')} of {gate.get('n', 'n/a')} images misrouted"}]
    if gate.get("trained") is False:
        rows = [{"measure": "Gate", "value": "not trained", "what": gate.get("note", "")}]
    for code in LESIONS:
        lesion = (seg.get("lesions") or {}).get(code)
        if lesion:
            rows.append({"measure": f"AUPR {code}", "value": _fmt(lesion.get("aupr")),
                         "what": f"sub-challenge 1: pixel precision-recall, {LESION_NAMES[code]}"})
    dr, dme = cls.get("dr") or {}, cls.get("dme") or {}
    if dr.get("n"):
        rows += [
            {"measure": "DR grade accuracy", "value": _fmt(dr.get("accuracy"), True),
             "what": f"sub-challenge 2, {dr.get('n')} graded images"},
            {"measure": "DR quadratic kappa", "value": _fmt(dr.get("kappa_quadratic")), "what": "agreement on grade"},
            {"measure": "DME risk accuracy", "value": _fmt(dme.get("accuracy"), True), "what": "sub-challenge 2"},
            {"measure": "Joint DR + DME accuracy", "value": _fmt(cls.get("joint_accuracy"), True),
             "what": "sub-challenge 3: both right"},
        ]
    return rows


def routing(evaluation: Evaluation) -> tuple[list[list[int]], list[str], list[str]] | None:
    """The gate's routing matrix: true task (segmentation, classification, both) x route chosen."""
    gate = evaluation.summary.get("gate") or {}
    if not gate.get("n") or not gate.get("confusion_matrix"):
        return None
    return gate["confusion_matrix"], list(gate["row_labels"]), list(gate["column_labels"])


def gate_rows(evaluation: Evaluation) -> list[dict[str, str]]:
    """What the gate decides, in rows: per true task, per DR grade of graded-only photographs, the shortcut check."""
    gate = evaluation.summary.get("gate") or {}
    rows = []
    matrix = dict(zip(gate.get("row_labels", []), gate.get("confusion_matrix", []), strict=False))
    for task, value in (gate.get("accuracy_by_task") or {}).items():
        if value is not None:
            what = "either route is right" if task == "both" else f"routed to {task}"
            rows.append({"samples": f"{task} ({sum(matrix.get(task, []))})", "gate accuracy": _fmt(value, True),
                         "about": what})
    for grade, value in (gate.get("accuracy_by_dr_grade") or {}).items():
        rows.append({"samples": f"graded only, DR {DR_NAMES[int(grade)]} ({value['n']})",
                     "gate accuracy": _fmt(value["accuracy"], True), "about": "routed to classification"})
    check = gate.get("shortcut_check")
    if check:
        rows.append({"samples": f"photographs with masks, reduced and re-encoded ({check['n']})",
                     "gate accuracy": "passed" if check["passed"] else "FAILED",
                     "about": f"shortcut check: {check['route_flips']} route flips, mean |change of p(segmentation)| "
                              f"{_fmt(check['mean_abs_shift_p_segmentation'])} ({check['degradation']})"})
    return rows


def lesion_results(evaluation: Evaluation) -> dict[str, Any]:
    return (evaluation.summary.get("segmentation") or {}).get("lesions") or {}


def misrouted_rows(evaluation: Evaluation) -> list[dict[str, Any]]:
    return [{"sample": r.get("id"), "true task": r.get("task"), "sent to": r.get("route"),
             "gate confidence": r.get("confidence")}
            for r in (evaluation.summary.get("gate") or {}).get("misrouted_samples") or []]


def confusion(evaluation: Evaluation, head: str) -> tuple[list[list[int]], list[str]] | None:
    report = (evaluation.summary.get("classification") or {}).get(head) or {}
    if not report.get("n"):
        return None
    names = list(DR_NAMES if head == "dr" else DME_NAMES)
    return report["confusion_matrix"], names


# -- gallery ---------------------------------------------------------------------------------------------------

@dataclass
class TileView:
    id: str
    image: np.ndarray  # the rendered tile: raw photograph | what the model saw with its prediction, framed
    task: str
    route: str
    misrouted: bool
    confidence: float
    label: str
    caption: str


def _thumbnail(path: Path | None, height: int) -> np.ndarray:
    if path is None:
        blank = np.full((height, height * 3 // 2, 3), 235, np.uint8)
        cv2.putText(blank, "image not on this machine", (8, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (90, 90, 90), 1, cv2.LINE_AA)
        return blank
    rgb, _ = decode_for_canvas(path, (height * 2, height))
    width = max(1, round(rgb.shape[1] * height / rgb.shape[0]))
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


def _predicted(masks: dict[str, Path], size: int) -> np.ndarray | None:
    planes = []
    for code in LESIONS:
        path = masks.get(code)
        if path is None or not path.exists():
            return None
        plane = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0
        if plane.shape != (size, size):
            plane = cv2.resize(plane, (size, size), interpolation=cv2.INTER_LINEAR)
        planes.append(plane)
    return np.stack(planes)


def _run_samples(run: RunDir, config: Config, roots: list[str] | None):
    """The run's samples with their images, or a ``DataError`` naming the folders they were read from."""
    from core.data.metadata import load_metadata
    from core.evaluate.runner import run_metadata

    if roots:
        return load_metadata(run.metadata, roots=roots)
    return run_metadata(run, config.data, None, progress=False)


def missing_images(path: Path | str, roots: list[str] | None = None) -> str | None:
    """None when the run's photographs are on this machine, else what the gallery needs, in words."""
    run = RunDir(Path(path))
    config = run_config(run.path)
    try:
        _run_samples(run, config, roots)
        return None
    except StudioError as error:
        if config.data.source == "synthetic":
            return f"the synthetic dataset of run {run.path.name} could not be read ({error})"
        named = ", ".join(config.data.roots) if config.data.source == "folder" else str(config.data.metadata)
        where = "the given folders" if roots else "this machine"
        return (f"The photographs of run {run.path.name} are not on {where}: it was trained on {named} "
                f"(IDRiD as downloaded, one folder per half or one for both). Give the folder(s) below, in that "
                f"order, to see them. ({error})")


def gallery_views(path: Path | str, split: str = "test", n: int = 20, seed: int = 0,
                  misrouted_only: bool = False, tile_height: int = 200,
                  roots: list[str] | None = None) -> list[TileView]:
    """``n`` evaluated samples drawn by ``seed``, each rendered as [raw photograph | model input with prediction].

    Samples with masks get the predicted lesions filled and the ground truth outlined; graded samples routed to
    segmentation get the (wrongly requested) prediction; graded samples routed correctly show the model's input.
    """
    from core.data.cache import PreprocessCache, default_cache_dir
    from core.data.preprocess import PreprocessConfig
    from core.evaluate.gallery import gallery

    run = RunDir(Path(path))
    config = run_config(run.path)
    try:
        metadata = _run_samples(run, config, roots)
    except StudioError:
        metadata = None  # images elsewhere: tiles show predictions only
    tiles = gallery(run.path, split, n=n, seed=seed, metadata=metadata, misrouted_only=misrouted_only)
    samples = {s.id: s for s in metadata.samples} if metadata is not None else {}
    size = config.data.image_size
    preprocess = PreprocessConfig(size, size, clahe=config.data.clahe)
    cache = PreprocessCache(Path(config.data.cache_dir).expanduser() if config.data.cache_dir else default_cache_dir())
    views = []
    for tile in tiles:
        sample = samples.get(tile.id)
        raw = _thumbnail(tile.image, tile_height)
        predicted = _predicted(tile.masks, size)
        if tile.image is not None and sample is not None:
            item = cache.get(sample.image, sample.masks, preprocess)
            canvas, truth = item.image, item.masks
        else:
            canvas, truth = np.zeros((size, size, 3), np.uint8), None
        if predicted is not None and (truth is not None or tile.route == "segmentation"):
            right = figures.overlay(canvas, predicted, truth=truth, opacity=0.5)
        else:
            right = canvas
        right = cv2.resize(right, (tile_height, tile_height), interpolation=cv2.INTER_AREA)
        panel = np.concatenate([raw, np.full((tile_height, 4, 3), 255, np.uint8), right], axis=1)
        short = tile.id.split("/")[-1]
        title = f"{short}: {tile.task} -> {tile.route} {tile.confidence:.0%}"
        image = figures.gallery_tile(panel, title, tile.label, tile.misrouted, both=tile.both, width=panel.shape[1])
        arrow = "both experts" if tile.both else f"**{tile.route}** ({tile.confidence:.0%})"
        caption = f"**{short}** · {tile.task} → {arrow}"
        views.append(TileView(tile.id, image, tile.task, tile.route, tile.misrouted, tile.confidence, tile.label,
                              caption))
    return views


# -- prediction ------------------------------------------------------------------------------------------------

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
