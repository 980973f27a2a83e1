"""Gallery tiles: evaluated samples drawn by a seed, each rendered as [raw photograph | model input with prediction]
as an RGB image, with what the gate decided."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from core import figures
from core.config import Config
from core.data.preprocess import decode_for_canvas
from core.errors import StudioError
from core.run.folder import RunDir
from core.views.runs import run_config
from core.vocabulary import LESIONS


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
    routing: str = ""  # markdown: whether the gate sent it to the right expert
    grading: str = ""  # markdown: whether its grades are right; empty for a photograph without grades
    grades_wrong: bool = False


def routing_verdict(task: str, misrouted: bool, kind: str = "") -> str:
    """The route against the truth, in markdown; a photograph with masks and grades is right on either route.
    ``kind`` says which error: missed (it needed the lesion map), the dangerous one, or wasted (segmented for
    nothing)."""
    if misrouted and task != "both":
        said = {"missed": ": missed, needed the lesion map", "wasted": ": wasted, segmented for nothing"}.get(kind, "")
        return f":red-background[:red[**MISROUTED{said}**]]"
    return ":green[✓ routed right]"


def grading_verdict(dr_right: bool | None, dme_right: bool | None) -> str:
    """The grades against the truth, in markdown, apart from the route: a photograph routed right can still be
    graded wrong, and a tick beside it read as if the grade were right too."""
    if dr_right is None and dme_right is None:
        return ""
    wrong = [name for name, right in (("DR grade", dr_right), ("DME risk", dme_right)) if right is False]
    if not wrong:
        return ":green[✓ grades right]"
    return f":red[✗ {' and '.join(wrong)} wrong]"


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
        where = "in the folders you gave" if roots else "on this machine"
        return (f"The photographs of run {run.path.name} are not {where}: it was trained on {named} "
                f"(IDRiD as downloaded, one folder per half or one for both). Give the folder(s) below, in that "
                f"order, to see them. ({error})")


def gallery_views(path: Path | str, split: str = "test", n: int = 20, seed: int = 0,
                  misrouted_only: bool = False, tile_height: int = 200,
                  roots: list[str] | None = None, kind: str | None = None) -> list[TileView]:
    """``n`` evaluated samples drawn by ``seed``, each rendered as [raw photograph | model input with prediction].

    Samples with masks get the predicted lesions filled and the ground truth outlined; graded samples routed to
    segmentation get the (wrongly requested) prediction; graded samples routed correctly show the model's input.
    """
    from core.data.cache import PreprocessCache, default_cache_dir
    from core.data.preprocess import canvas_preprocess
    from core.evaluate.gallery import gallery

    run = RunDir(Path(path))
    config = run_config(run.path)
    try:
        metadata = _run_samples(run, config, roots)
    except StudioError:
        metadata = None  # images elsewhere: tiles show predictions only
    tiles = gallery(run.path, split, n=n, seed=seed, metadata=metadata, misrouted_only=misrouted_only, kind=kind)
    samples = {s.id: s for s in metadata.samples} if metadata is not None else {}
    size = config.data.image_size
    preprocess = canvas_preprocess(config.data)
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
                              caption, routing_verdict(tile.task, tile.misrouted, tile.misrouted_kind),
                              grading_verdict(tile.dr_right, tile.dme_right),
                              grades_wrong=False in (tile.dr_right, tile.dme_right)))
    return views
