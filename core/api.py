"""The studio from Python: thin, documented functions over what the command line and the app use.

Every public function here is re-exported by ``core`` (``core.load_run`` is ``core.api.load_run``) and documented
with an example in ``docs/api.md``. They add no behaviour of their own beyond finding a run by name and keeping
the shipped runs read-only; the work is done by ``Predictor``, ``core.infer.batch``, ``core.evaluate.runner``,
``core.data.metadata``, ``core.train.trainer`` and ``core.figures``. Heavy modules (torch, the model) are imported
inside the functions, so importing this module stays cheap.

A run is named by a folder path or by the name of a folder under ``$IDRID_STUDIO_RUNS`` or the project's
``checkpoints/`` (the shipped ``"idrid"`` and ``"demo"``); ``core.project_root()`` says where the project is.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import project_root
from core.errors import ConfigError, DataError, StudioError

if TYPE_CHECKING:
    import numpy as np
    import plotly.graph_objects as go

    from core.config import Config
    from core.infer.predictor import ImageInput, Prediction, Predictor
    from core.run.summary import EvalSummary

    RunLike = str | os.PathLike[str] | Predictor

__all__ = [
    "build_metadata", "evaluate_run", "find_run", "grade_figures", "load_run", "overlay_figure", "overlay_image",
    "predict", "predict_folder", "report_figures", "save_predictions", "synthetic_photograph", "train_run",
]


# -- runs ------------------------------------------------------------------------------------------------------

def find_run(run: str | os.PathLike[str]) -> Path:
    """The folder of ``run``: a path to a run folder, or the name of one under ``$IDRID_STUDIO_RUNS`` or the
    project's ``checkpoints/`` (``"idrid"``, ``"demo"``). Raises ``ConfigError`` naming where it looked."""
    from core.catalogue import runs_root
    from core.run.folder import RunDir

    path = Path(run).expanduser()
    name = os.fspath(run)
    bare = path.name == name and name not in ("", ".", "..")  # "demo", not "./demo" or "checkpoints/demo"
    if path.is_dir() and (not bare or RunDir(path).config.exists()):
        return path
    looked = [str(path.resolve())]
    if bare:  # a folder of that name in the runs folders
        for root in dict.fromkeys([runs_root(), project_root() / "checkpoints"]):
            candidate = root / name
            if candidate.is_dir():
                return candidate
            looked.append(str(candidate))
        if path.is_dir():
            return path
    raise ConfigError(f"no run folder {name!r} (looked at {', '.join(looked)}); give a run folder's path, or set "
                      "IDRID_STUDIO_HOME to the project's checkout when core is installed outside it")


def load_run(run: RunLike = "idrid", weights: str = "best", device: str = "cpu") -> Predictor:
    """A ``Predictor`` for ``run`` (a name such as ``"idrid"`` or ``"demo"``, a folder, or a Predictor, returned
    as it is): its config, its safetensors weights (``"best"``, ``"last"`` or a file) and its lesion grader."""
    from core.infer.predictor import Predictor

    if isinstance(run, Predictor):
        return run
    return Predictor.from_run(find_run(run), weights=weights, device=device)


# -- prediction ------------------------------------------------------------------------------------------------

def predict(image: ImageInput, run: RunLike = "idrid", both: bool = False) -> Prediction:
    """Route one photograph with the gate and run the chosen expert (``both=True``: both experts).

    ``image`` is a file path, the file's bytes, a PIL image or a numpy array (H, W, 3) in RGB order (grey, RGBA and
    16-bit are converted). Returns the ``Prediction`` the app's Predict page shows: ``task`` and ``confidence`` (the
    gate), ``seg_probs`` (5 lesion maps on the model's canvas) or ``dr_probs`` / ``dme_probs``, ``report()``.
    ``run`` is loaded on every call unless it is a Predictor: pass ``load_run(...)`` when predicting many images.
    """
    return load_run(run).predict(image, both=both)


def predict_folder(folder: str | os.PathLike[str], run: RunLike = "idrid",
                   both: bool = False) -> dict[Path, Prediction]:
    """``predict`` for every image in ``folder`` and its subfolders (.jpg .jpeg .png .tif .tiff .bmp; a single file
    works too), in name order. A file that does not decode is left out with a warning; the others go on."""
    from core.infer.batch import list_inputs

    predictor = load_run(run)
    out: dict[Path, Prediction] = {}
    for path in list_inputs(Path(folder)):
        try:
            out[path] = predictor.predict(path, both=both)
        except StudioError as error:
            warnings.warn(f"{path}: {error}", stacklevel=2)
    return out


def save_predictions(source: str | os.PathLike[str], out: str | os.PathLike[str], run: RunLike = "idrid",
                     both: bool = False, threshold: float = 0.5, progress: bool = False) -> list[dict[str, Any]]:
    """What ``python -m core predict`` writes: ``out/masks/<image>_<LESION>.png`` at the original size and
    ``out/predictions.csv``, one row per image of ``source`` (a file or a folder); returns the rows. An unreadable
    file gets a row with its ``error``."""
    from core.infer.batch import predict_paths

    return predict_paths(load_run(run), Path(source), Path(out), both=both, threshold=threshold, progress=progress)


# -- evaluation ------------------------------------------------------------------------------------------------

_NOT_COPIED = ("eval", "state", "launcher.log", ".stop-requested")


def evaluate_run(run: str | os.PathLike[str] = "demo", split: str = "test",
                 data: str | os.PathLike[str] | None = None, out: str | os.PathLike[str] | None = None,
                 full_res: bool = False, weights: str = "best", progress: bool = False) -> EvalSummary:
    """Score ``run`` on ``split`` (``"test"``, ``"val"`` or ``"train"``) of its own data, or of the metadata file
    ``data``, as ``python -m core evaluate`` does; returns the summary (``core.run.summary.EvalSummary``: ``.gate``,
    ``.classification``, ``.segmentation``; ``.to_dict()`` is the saved summary.json).

    The results (summary.json, predictions.csv, masks/, curves.json) go to ``eval/<split>/`` of the run folder, or,
    with ``out``, of a copy of the run made in ``out`` (config, weights, logs and split; no earlier evaluation),
    which leaves the run itself untouched: use it for the shipped runs. ``full_res`` scores masks at the original
    image size.
    """
    from core.evaluate.runner import evaluate_run as run_evaluation

    folder = find_run(run)
    if out is not None:
        target = Path(out).expanduser()
        if folder.resolve() in target.resolve().parents:
            raise ConfigError(f"out {target} is inside the run folder {folder}: choose a folder outside it")
        if target.resolve() != folder.resolve():
            shutil.copytree(folder, target, ignore=shutil.ignore_patterns(*_NOT_COPIED), dirs_exist_ok=True)
        folder = target
    return run_evaluation(folder, split, Path(data).expanduser() if data is not None else None, full_res, weights,
                          progress=progress)


# -- data ------------------------------------------------------------------------------------------------------

def build_metadata(roots: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                   out: str | os.PathLike[str] | None = None, val_fraction: float = 0.2, seed: int = 0,
                   strict: bool = False, drop_conflicting: bool = False, verify: bool = False,
                   progress: bool = False) -> dict[str, Any]:
    """Read an IDRiD download (one root, or one per half) and build the balanced metadata, as
    ``python -m core metadata`` does; returns the document and writes it to ``out`` when given.

    ``document["summary"]`` counts each split's samples, masks and grades and lists skipped bad samples (``strict``
    stops at the first instead). The file is what ``evaluate_run(data=...)`` and a config's ``data.metadata`` take.
    """
    from core.data.idrid import read_idrid
    from core.data.metadata import build_metadata as build, write_metadata

    index = read_idrid(roots, strict=strict, verify=verify)
    document = build(index, val_fraction=val_fraction, seed=seed, drop_conflicting=drop_conflicting,
                     progress=progress)
    if out is not None:
        write_metadata(document, Path(out).expanduser())
    return document


def synthetic_photograph(seed: int = 0, index: int = 0, width: int = 1024,
                         grade: tuple[int, int] | None = None) -> np.ndarray:
    """One photograph of the built-in synthetic IDRiD as an RGB uint8 array (IDRiD's aspect, ``width`` wide): a
    lesion-rich one like the segmentation half, or with ``grade=(dr, dme)`` one drawn to that DR grade and DME
    risk like the grading half. The same arguments give the same pixels."""
    import numpy as np

    from core.data.synth.render import render

    half = "segmentation" if grade is None else "grading"
    sample = render(seed, half, index, width, None if grade is None else tuple(grade))
    return np.ascontiguousarray(sample.image[..., ::-1])  # rendered in OpenCV's BGR order


# -- training --------------------------------------------------------------------------------------------------

def train_run(config: str | os.PathLike[str] | Mapping[str, Any] | Config | None = None,
              out: str | os.PathLike[str] | None = None, overrides: Sequence[str] = (), resume: bool = False,
              overwrite: bool = False, progress: bool = True) -> Path:
    """Train a run, as ``python -m core train`` does, and return its folder.

    ``config`` is a YAML file, a dict of sections (``{"data": {...}, "train": {"epochs": 2}}``) or a ``Config``;
    ``overrides`` are ``"section.key=value"`` strings applied on top. ``out`` defaults to ``NAME`` (the config's
    ``name``) under ``$IDRID_STUDIO_RUNS`` or the project's ``checkpoints/``. ``resume=True`` continues the run in
    ``out`` from its saved state and config. A folder that already holds a trained run is refused unless
    ``overwrite``.
    """
    from core.config import Config, apply_overrides, config_from_dict, load_config
    from core.catalogue import runs_root
    from core.run.folder import RunDir
    from core.train.trainer import Trainer

    if resume:
        if out is None:
            raise ConfigError("resume needs out, the run folder to continue")
        saved = RunDir(Path(out)).config
        if not saved.exists():
            raise ConfigError(f"cannot resume {out}: it has no config.yaml")
        resolved = load_config(saved, list(overrides))
    elif config is None:
        raise ConfigError("no config given: a YAML file, a dict or a Config")
    elif isinstance(config, Config):
        resolved = config_from_dict(apply_overrides(config.to_dict(), list(overrides)))
    elif isinstance(config, Mapping):
        resolved = config_from_dict(apply_overrides(dict(config), list(overrides)))
    else:
        resolved = load_config(Path(config).expanduser(), list(overrides))
    folder = Path(out).expanduser() if out is not None else runs_root() / resolved.name
    Trainer(resolved, folder, resume=resume, overwrite=overwrite, progress_bar=progress).fit()
    return folder


# -- figures ---------------------------------------------------------------------------------------------------

def _display(image: ImageInput, max_side: int) -> np.ndarray:
    """The photograph as RGB at most ``max_side`` pixels on its long side, decoded as the Predict page does."""
    import cv2
    from PIL import Image

    from core.data.imageio import array_to_rgb, to_rgb_array
    from core.views.upload import display_image

    if isinstance(image, (str, os.PathLike)):
        try:
            image = Path(image).read_bytes()
        except OSError as error:
            raise DataError(f"cannot read {image} ({error})") from None
    if isinstance(image, bytes):
        return display_image(image, max_side)
    rgb = to_rgb_array(image) if isinstance(image, Image.Image) else array_to_rgb(image)
    scale = max_side / max(rgb.shape[:2])
    if scale < 1:
        rgb = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    return rgb


def _lesion_layers(prediction: Prediction, image: ImageInput | None, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    from core.views.upload import lesion_probs_at

    if prediction.seg_probs is None:
        raise ValueError("this prediction has no lesion maps: the gate sent the photograph to the classification "
                         "expert; predict with both=True to run the segmentation expert too")
    if image is None:
        return prediction.canvas, prediction.seg_probs
    display = _display(image, max_side)
    return display, lesion_probs_at(prediction, (display.shape[1], display.shape[0]))


def overlay_image(prediction: Prediction, image: ImageInput | None = None, lesions: Sequence[str] | None = None,
                  opacity: float = 0.5, threshold: float = 0.5, max_side: int = 1280) -> np.ndarray:
    """The predicted lesions blended in their colours (MA, HE, EX, SE, OD; ``lesions`` picks some) as an RGB uint8
    array: on the photograph ``image`` given to ``predict`` (shown at most ``max_side`` px, as on the Predict page),
    or, without it, on the preprocessed canvas the model saw. Raises ``ValueError`` when no lesion maps were made."""
    from core import figures

    base, probs = _lesion_layers(prediction, image, max_side)
    return figures.overlay(base, probs, opacity=opacity, lesions=lesions, threshold=threshold)


def overlay_figure(prediction: Prediction, image: ImageInput | None = None, lesions: Sequence[str] | None = None,
                   opacity: float = 0.5, threshold: float = 0.5, max_side: int = 1280,
                   title: str = "Predicted lesions") -> go.Figure:
    """``overlay_image`` as a zoomable plotly figure with a legend of the lesion colours
    (``core.figures.overlay_figure``)."""
    from core import figures

    base, probs = _lesion_layers(prediction, image, max_side)
    return figures.overlay_figure(base, probs, opacity=opacity, lesions=lesions, threshold=threshold, title=title)


def grade_figures(prediction: Prediction, truth: tuple[int | None, int | None] = (None, None)) -> dict[str, go.Figure]:
    """Bar charts of the DR grade and DME risk probabilities, the predicted grade highlighted, as on the Predict
    page: ``{"dr": Figure, "dme": Figure}``; ``truth=(dr, dme)`` marks the true grades. Raises ``ValueError`` when
    the classification expert did not run (predict with ``both=True``)."""
    from core import figures
    from core.vocabulary import DME_NAMES, DR_NAMES

    if prediction.dr_probs is None or prediction.dme_probs is None:
        raise ValueError("this prediction has no grades: the gate sent the photograph to the segmentation expert; "
                         "predict with both=True to run the classification expert too")
    return {"dr": figures.grade_bars(prediction.dr_probs.tolist(), list(DR_NAMES), truth[0], "DR grade"),
            "dme": figures.grade_bars(prediction.dme_probs.tolist(), list(DME_NAMES), truth[1], "DME risk")}


def report_figures(run: str | os.PathLike[str] = "demo", split: str = "test") -> dict[str, go.Figure]:
    """The Dashboard's figures of a run from its saved files: ``learning_curves`` and ``gate_accuracy`` (training),
    and from its evaluation of ``split``: ``dice``, ``iou``, ``pr_curves``, ``dr_confusion``, ``dme_confusion`` and
    ``gate_routing`` (each present when the split has what it shows). Raises ``DataError`` when the run has no
    evaluation of ``split`` (``evaluate_run`` makes one)."""
    from core import figures
    from core.run.folder import RunDir
    from core.run.logs import read_jsonl
    from core.views import evaluation as evaluation_views

    folder = find_run(run)
    evaluation = evaluation_views.load_evaluation(folder, split)
    if evaluation is None:
        raise DataError(f"run {folder} has no evaluation of its {split} split: evaluate_run({str(folder)!r}, "
                        f"{split!r}) makes one")
    name, history = folder.name, read_jsonl(RunDir(folder).history)
    out = {"learning_curves": figures.learning_curves({name: history}),
           "gate_accuracy": figures.gate_accuracy(read_jsonl(RunDir(folder).log), history)}
    lesions = evaluation_views.lesion_results(evaluation)
    if lesions:
        out["dice"] = figures.lesion_bars({name: lesions}, "dice")
        out["iou"] = figures.lesion_bars({name: lesions}, "iou")
        out["pr_curves"] = figures.pr_curves(evaluation.curves)
    for head, title in (("dr", "DR grade"), ("dme", "DME risk")):
        matrix = evaluation_views.confusion(evaluation, head)
        if matrix is not None:
            out[f"{head}_confusion"] = figures.confusion_heatmap(*matrix, title=f"{title}: {name} ({split})")
    routing = evaluation_views.routing(evaluation)
    if routing is not None:
        counts, rows, columns = routing
        out["gate_routing"] = figures.confusion_heatmap(counts, rows, title=f"Gate routing: {name} ({split})",
                                                        x_labels=columns)
    return out
