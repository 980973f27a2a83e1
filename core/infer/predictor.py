"""The Predictor: a trained run applied to any image, with exactly the training preprocessing. The one inference path.

``Predictor.from_run(dir)`` reads the run's config and safetensors weights; ``predict(image)`` takes a path, bytes,
a PIL image or an array in any mode and returns the gate's decision, the routed expert's output and, on request,
both experts; ``predict_many`` does the same for several images in batches. ``infer(images)`` is the step under
both, for canvases already preprocessed (evaluation and the grader fit read them from the preprocessing cache): the
gate, the experts, the run's test-time flips and the lesion grader are applied there and nowhere else, so that
evaluation scores, and the grader is fitted on, exactly what a user's prediction gives.

Each file is decoded once, at the largest canvas the run needs (a crop-trained run's windows read a canvas
``crop_scale`` times the training size; its whole canvas is made from the same pixels). One Predictor may serve
several threads (the app's sessions): forward passes are serialised by a lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from core.config import Config, load_config
from core.data.cache import PreprocessCache, default_cache_dir
from core.data.dataset import IdridDataset, collate, normalize
from core.data.metadata import Sample
from core.data.preprocess import Geometry, PreprocessConfig, canvas_preprocess, decode_for_canvas, preprocess_image
from core.errors import ConfigError
from core.infer.admission import check_fundus_shape, shape_warnings
from core.infer.clinical import (ImpliedDme, LesionStats, graded_not_referable, implied_dme, lesion_stats,
                                 referable_from_grades)
from core.infer.evidence import EvidenceGrader, lesion_evidence
from core.infer.tiling import sliding_window
from core.infer.tta import segment_probs
from core.model.coarse import lesion_summary
from core.model.factory import build_model, model_signature
from core.model.gated import GatedMultiTaskModel, pool
from core.run.folder import RunDir
from core.run.weights import load_weights
from core.vocabulary import GRADES_FROM_HEADS, GRADES_FROM_LESIONS, LESIONS, PREDICTION_SOURCES, TASKS

ImageInput = str | Path | bytes | Image.Image | np.ndarray


@dataclass
class Decoded:
    """A file decoded once: RGB pixels (maybe a reduced JPEG decode) and the original (width, height)."""

    rgb: np.ndarray
    original: tuple[int, int]
    notes: list[str] = field(default_factory=list)  # conversions on the way to 8-bit RGB, for the warnings


@dataclass
class Prepared:
    """One image ready for the model: the normalised tensor, the canvas it shows, its geometry and warnings."""

    decoded: Decoded
    tensor: torch.Tensor  # (1, 3, H, W) on the predictor's device
    canvas: np.ndarray
    geometry: Geometry
    warnings: list[str]


@dataclass
class CanvasOutput:
    """What ``Predictor.infer`` gives for a batch of canvases; a row is None where its expert did not run."""

    gate_probs: np.ndarray  # (B, 2) segmentation, classification
    route: np.ndarray  # (B, 2) bool: the experts each image went to
    seg_probs: list[np.ndarray | None]  # (5, H, W) float32 lesion probabilities, test-time flips averaged in
    dr_probs: list[np.ndarray | None]  # (5,) from the lesion grader when the run has one, else the DR head
    dme_probs: list[np.ndarray | None]  # (3,)
    # the classification expert's own grades, where it ran (with a lesion grader dr_probs are the grader's)
    head_dr_probs: list[np.ndarray | None] = field(default_factory=list)
    head_dme_probs: list[np.ndarray | None] = field(default_factory=list)
    grades_from: list[str | None] = field(default_factory=list)  # GRADES_FROM_LESIONS, GRADES_FROM_HEADS or None

    def stacked(self, name: str) -> np.ndarray:
        """One field as an array over the batch (every row must be present: route="both")."""
        rows = getattr(self, name)
        if any(row is None for row in rows):
            raise ValueError(f"{name} is missing for some images: infer with route='both' to stack it")
        return np.stack(rows)


@dataclass
class Prediction:
    """Everything one image produced; masks are kept at canvas resolution and mapped back on demand."""

    original_size: tuple[int, int]
    geometry: Geometry
    canvas: np.ndarray  # the preprocessed image the model saw (H, W, 3) uint8
    gate_probs: np.ndarray  # (2,) segmentation, classification
    ran: tuple[str, ...]  # experts that ran: "segmentation" and/or "classification"
    seg_probs: np.ndarray | None = None  # (5, h, w) float32 on the canvas
    dr_probs: np.ndarray | None = None  # (5,)
    dme_probs: np.ndarray | None = None  # (3,)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    only_task: str | None = None  # the run learned this task alone: its gate was not trained and did not route
    grades_from: str | None = None  # GRADES_FROM_LESIONS or GRADES_FROM_HEADS; None when no grade was made
    gate_threshold: float = 0.5  # the run's operating point on p(segmentation)
    gate_target: str = "task"  # what the gate learned to decide (core.data.targets)
    served_both: bool = False  # both experts ran because the run says so (infer.route: both), not on request
    glance_size: int | None = None  # px of the canvas's copy a glance gate read (model.gate_input: glance), else None

    @property
    def referable_probability(self) -> float | None:
        """p(more than mild DR) from the gate of a referable run (its p(segmentation)), else None."""
        return float(self.gate_probs[0]) if self.gate_target == "referable" and self.only_task is None else None

    @property
    def task(self) -> str:
        """The gate's choice at the run's operating point, or the one task the run learned."""
        if self.only_task:
            return self.only_task
        return TASKS[0] if float(self.gate_probs[0]) >= self.gate_threshold else TASKS[1]

    @property
    def confidence(self) -> float:
        """The gate's probability of the task it chose."""
        if self.only_task is not None:
            return float(np.max(self.gate_probs))
        return float(self.gate_probs[TASKS.index(self.task)])

    def content_probs(self) -> np.ndarray | None:
        """Lesion probabilities on the image part of the canvas (padding cut off)."""
        if self.seg_probs is None:
            return None
        ox, oy = self.geometry.offset
        cw, ch = self.geometry.content
        return self.seg_probs[:, oy : oy + ch, ox : ox + cw]

    def masks(self, threshold: float = 0.5) -> np.ndarray | None:
        """(5, h, w) bool on the canvas."""
        return None if self.seg_probs is None else self.seg_probs >= threshold

    def probs_original(self, channel: int) -> np.ndarray:
        """One lesion's probability map at the original size, uint8 0-255 (a float map of 4288x2848 x 5 would
        take 240 MB)."""
        assert self.seg_probs is not None
        as_byte = np.clip(self.seg_probs[channel] * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return self.geometry.canvas_to_original(as_byte, interpolation=cv2.INTER_LINEAR)

    def mask_original(self, channel: int, threshold: float = 0.5) -> np.ndarray:
        return self.probs_original(channel) >= int(round(threshold * 255))

    def lesion_stats(self, threshold: float = 0.5) -> dict[str, LesionStats] | None:
        """Counts and areas on the image part of the canvas: the padding is not photograph, and over the square
        canvas a 4000x20 strip's areas came out at 64 times its own size.

        ``area_fraction`` is the share of the field-of-view box (``geometry.crop``), the part of the photograph the
        model saw: the black surround cropped off holds no retina, so no lesion can lie there. An all-lesion map
        gives exactly 1; without a dark border the box is the whole photograph."""
        probs = self.content_probs()
        if probs is None:
            return None
        x0, y0, x1, y1 = self.geometry.crop
        pixel_area = ((x1 - x0) / self.geometry.content[0]) * ((y1 - y0) / self.geometry.content[1])
        return lesion_stats(probs >= threshold, pixel_area)

    def implied_dme(self, threshold: float = 0.5) -> ImpliedDme | None:
        masks = self.masks(threshold)
        return None if masks is None else implied_dme(masks)

    def report(self, threshold: float = 0.5) -> dict[str, Any]:
        """A JSON-serialisable summary: the gate, each expert that ran, lesion read-outs, warnings."""
        out: dict[str, Any] = {
            "size": list(self.original_size),
            "gate": {"task": self.task, "confidence": round(self.confidence, 4), "trained": self.only_task is None,
                     "probabilities": dict(zip(TASKS, map(float, self.gate_probs), strict=True)),
                     "threshold": self.gate_threshold, "target": self.gate_target,
                     "reads": f"lesion maps of a {self.glance_size}-px copy" if self.glance_size else None},
            "experts_run": list(self.ran),
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
        }
        if self.dr_probs is not None:
            out["dr_grade"] = {"predicted": int(np.argmax(self.dr_probs)), "probabilities": self.dr_probs.tolist()}
            out["dme_risk"] = {"predicted": int(np.argmax(self.dme_probs)), "probabilities": self.dme_probs.tolist()}
            out["grades_from"] = self.grades_from
        if self.referable_probability is not None:
            referable = self.referable_probability
            out["referable_dr"] = {"probability": round(referable, 4), "refer": referable >= self.gate_threshold,
                                   "source": "gate", "operating_point": self.gate_threshold,
                                   "rule": "more than mild DR, by the gate's p(segmentation) at the run's operating "
                                           "point"}
        elif self.dr_probs is not None:
            referable = float(referable_from_grades(self.dr_probs, self.dme_probs))
            out["referable_dr"] = {"probability": round(referable, 4), "refer": referable >= 0.5,
                                   "source": "grades", "operating_point": 0.5,
                                   "rule": "DR grade >= 2 or DME risk >= 1, from the grades; operating point 0.5"}
        stats = self.lesion_stats(threshold)
        if stats is not None:
            out["lesions"] = {code: vars(value) for code, value in stats.items()}
            implied = self.implied_dme(threshold)
            out["implied_dme"] = self._in_original_pixels(implied) if implied else None
            if implied is not None and implied.risk is not None and self.dme_probs is not None:
                out["dme_disagreement"] = implied.risk != int(np.argmax(self.dme_probs))
        return out


    def _in_original_pixels(self, implied: ImpliedDme) -> dict[str, Any]:
        """Disc, fovea and diameter converted from canvas to original-image pixels for the report."""
        out = implied.to_dict()
        for key in ("disc_centre", "fovea"):
            if out[key] is not None:
                out[key] = [round(v, 1) for v in self.geometry.point_to_original(*out[key])]
        if out["disc_diameter"] is not None:
            out["disc_diameter"] = round(out["disc_diameter"] * (self.geometry.crop[2] - self.geometry.crop[0])
                                         / self.geometry.content[0], 1)
        return out


def _combine(whole: np.ndarray, windows: np.ndarray, source: str) -> np.ndarray:
    """One channel from the whole-canvas and the windowed prediction, as ``PREDICTION_SOURCES`` says."""
    if source == "whole":
        return whole
    if source == "windows":
        return windows
    return (whole + windows) / 2


class Predictor:
    """A model ready to predict, with its run's preprocessing."""

    def __init__(self, model: GatedMultiTaskModel, config: Config, device: torch.device | str = "cpu",
                 name: str = "model", grader: EvidenceGrader | None = None,
                 tasks: tuple[str, ...] = TASKS) -> None:
        # channels_last as in training: oneDNN's convolutions run 1.6x faster in it on a CPU (0.183 -> 0.114 s a
        # photograph for checkpoints/idrid's two experts at 512 px, 2 cores); outputs agree to float rounding
        self.model = model.to(device).to(memory_format=torch.channels_last).eval()
        self.grader = grader  # grades from lesion evidence (core.infer.evidence) instead of the classification heads
        self.tasks = tuple(tasks)  # what the run learned; one task means an untrained gate (trained_tasks)
        self.config = config
        self.device = torch.device(device)
        self.name = name
        self.preprocess = canvas_preprocess(config.data)
        self.mean, self.std = model.normalization
        self._lock = threading.Lock()

    @classmethod
    def from_run(cls, run_dir: RunDir | Path | str, weights: str = "best", device: str = "cpu",
                 use_grader: bool = True) -> Predictor:
        run = RunDir.of(run_dir)
        if not run.path.is_dir():
            raise ConfigError(f"run folder {run.path} does not exist")
        if not run.config.exists():
            raise ConfigError(f"run folder {run.path} has no config.yaml: it is not a run, or it was never started")
        config = load_config(run.config)
        model = build_model(config.model, load_pretrained=False)
        load_weights(model, run.resolve_weights(weights), model_signature(config.model))
        grader = EvidenceGrader.load(run.grader) if use_grader and run.grader.exists() else None
        return cls(model, config, device, name=run.name, grader=grader, tasks=run.trained_tasks())

    @property
    def cache(self) -> PreprocessCache:
        """The preprocessing cache of the run's config: the canvases training read, keyed by the preprocessing."""
        folder = self.config.data.cache_dir
        return PreprocessCache(Path(folder).expanduser() if folder else default_cache_dir())

    def canvas_batches(self, samples: Sequence[Sample], batch_size: int = 4, progress: bool = True,
                       desc: str = "predict") -> Iterator[dict[str, Any]]:
        """Batches of the samples' canvases (``image``, ``mask``, ``index`` ...) through the preprocessing cache:
        the pixels ``prepare`` gives the same file, without decoding it again when training already did."""
        dataset = IdridDataset(list(samples), self.preprocess, self.mean, self.std, self.cache, None)
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=0)
        yield from tqdm(loader, desc=desc, disable=not progress, leave=False)

    @property
    def grades_source(self) -> str:
        """Where grades come from when the segmentation expert ran; elsewhere the classification expert gives them."""
        return GRADES_FROM_LESIONS if self.grader is not None else GRADES_FROM_HEADS

    @property
    def gate_threshold(self) -> float:
        """The run's operating point on p(segmentation) (``infer.gate_threshold``; 0.5 when unset)."""
        threshold = self.config.infer.gate_threshold
        return 0.5 if threshold is None else float(threshold)

    def grades_from_lesions(self, seg_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """DR and DME probabilities from (5, H, W) canvas probabilities, by the run's lesion grader."""
        assert self.grader is not None
        return self.grader.predict_proba(lesion_evidence(seg_probs))

    @property
    def only_task(self) -> str | None:
        """The one task a one-task run learned (its gate was never trained), else None."""
        return self.tasks[0] if len(self.tasks) == 1 else None

    def decode(self, image: ImageInput | Decoded, name: str | None = None) -> Decoded:
        """Decode once, at the largest canvas this run reads: its windows' canvas when it tiles lesions."""
        if isinstance(image, Decoded):
            return image
        size = self._tiled_config().size if self.tiles_lesions else self.preprocess.size
        notes: list[str] = []
        rgb, original = decode_for_canvas(image, size, name=name, notes=notes)
        return Decoded(rgb, original, notes)

    def prepare(self, image: ImageInput | Decoded, name: str | None = None, admit: bool = True) -> Prepared:
        """Decode and preprocess exactly as in training; a shape no fundus photograph has is refused
        (``core.infer.admission``) unless ``admit=False`` (a measurement on photographs of a dataset, such as the
        gate's shortcut check on reduced copies). ``name`` names bytes in messages (an upload's file name)."""
        decoded = self.decode(image, name)
        original = decoded.original
        if admit:
            check_fundus_shape(original, name or (str(image) if isinstance(image, (str, Path)) else "(uploaded image)"))
        canvas, geometry = preprocess_image(decoded.rgb, original, self.preprocess)
        found_field = geometry.crop != (0, 0, original[0], original[1])
        warnings = [*decoded.notes, *shape_warnings(original, found_field)]
        tensor = normalize(canvas, self.mean, self.std)[None].to(self.device)
        return Prepared(decoded, tensor, canvas, geometry, warnings)

    @torch.no_grad()
    def gate_probs(self, image: ImageInput, admit: bool = True) -> np.ndarray:
        """(2,) the gate's probabilities alone (segmentation, classification): no expert runs."""
        return self.gate_batch(self.prepare(image, admit=admit).tensor)[0]

    @torch.no_grad()
    def gate_batch(self, images: torch.Tensor) -> np.ndarray:
        """(B, 2) the gate's probabilities for normalised canvases: no expert runs."""
        with self._lock:
            logits = self.model.gate_logits_of(images.to(self.device))
        return logits.float().softmax(1).cpu().numpy()

    def served_head_grades(self, dr: np.ndarray, dme: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The classification expert's grades as served for a photograph the gate sent to it alone: a referable
        gate judged it not referable, so it is graded among DR 0-1 and DME 0 (``graded_not_referable``)."""
        if self.config.model.gate_target == "referable" and self.only_task is None:
            return graded_not_referable(dr, dme)
        return dr, dme

    def default_route(self, both: bool = False) -> str:
        """``both`` when asked or when the run says so (``infer.route: both``), ``oracle`` to the one expert of a
        one-task run (its gate never learned), else the gate's choice at the run's operating point: a photograph it
        sends to classification never enters the decoder, and its grades come from the classification expert."""
        if both:
            return "both"
        if self.only_task is not None:
            return "oracle"
        return "both" if self.config.infer.route == "both" else "gate"

    @torch.no_grad()
    def infer(self, images: torch.Tensor, route: str = "both", grades: bool = True) -> CanvasOutput:
        """The model on (B, 3, H, W) normalised canvases: gate, routed experts, test-time flips, lesion grader.

        ``grades=False`` leaves the classification heads' grades even when the run has a lesion grader (the grader
        fit needs the maps before there is a grader).
        """
        images = images.to(self.device)
        task = None
        if route == "oracle":
            task = torch.full((images.shape[0],), TASKS.index(self.only_task or TASKS[0]), dtype=torch.long)
        threshold = self.config.infer.gate_threshold if route == "gate" else None
        with self._lock:
            output = self.model(images, route=route, task=task, gate_threshold=threshold)
            seg = None if output.seg_logits is None else self.lesion_probs(images[output.seg_index],
                                                                            output.seg_logits)
        batch = images.shape[0]
        seg_rows: list[np.ndarray | None] = [None] * batch
        dr_rows: list[np.ndarray | None] = [None] * batch
        dme_rows: list[np.ndarray | None] = [None] * batch
        source: list[str | None] = [None] * batch
        if seg is not None:
            for row, index in zip(seg.cpu().numpy(), output.seg_index.tolist(), strict=True):
                seg_rows[index] = row
        if output.dr_logits is not None:
            dr = output.dr_logits.float().softmax(1).cpu().numpy()
            dme = output.dme_logits.float().softmax(1).cpu().numpy()
            for row, index in enumerate(output.cls_index.tolist()):
                dr_rows[index], dme_rows[index], source[index] = dr[row], dme[row], GRADES_FROM_HEADS
        head_dr, head_dme = list(dr_rows), list(dme_rows)
        if route == "gate" and output.dr_logits is not None:  # the gate sent these to classification alone
            for index in output.cls_index.tolist():
                dr_rows[index], dme_rows[index] = self.served_head_grades(dr_rows[index], dme_rows[index])
        if grades and self.grader is not None:  # grades read from the lesions the segmentation expert found
            for index, probs in enumerate(seg_rows):
                if probs is not None:
                    dr_rows[index], dme_rows[index] = self.grades_from_lesions(probs)
                    source[index] = GRADES_FROM_LESIONS
        return CanvasOutput(output.gate_probs.cpu().numpy(), output.route.cpu().numpy(), seg_rows, dr_rows, dme_rows,
                            head_dr, head_dme, source)

    @torch.no_grad()
    def predict(self, image: ImageInput, both: bool = False) -> Prediction:
        """Gate, then the chosen expert (``both=True``: both experts)."""
        return self.predict_many([image], both=both)[0]

    @torch.no_grad()
    def predict_many(self, images: Sequence[ImageInput], both: bool = False, batch_size: int = 4) -> list[Prediction]:
        """``predict`` for several images, their forward passes in batches of ``batch_size``; an image that cannot
        be read raises its ``StudioError`` (``core.infer.batch`` prepares each file itself to keep going instead)."""
        out: list[Prediction] = []
        for start in range(0, len(images), batch_size):
            began = time.perf_counter()
            prepared = [self.prepare(image) for image in images[start : start + batch_size]]
            seconds = (time.perf_counter() - began) / len(prepared)
            out += self.predict_prepared(prepared, both, seconds)
        return out

    @torch.no_grad()
    def predict_prepared(self, prepared: Sequence[Prepared], both: bool = False,
                         prepare_seconds: float = 0.0) -> list[Prediction]:
        """Predictions of images ``prepare`` made, in one forward pass; ``seconds`` of each is its share of the
        pass plus its own tiling and ``prepare_seconds``."""
        began = time.perf_counter()
        result = self.infer(torch.cat([p.tensor for p in prepared]), route=self.default_route(both))
        shared = prepare_seconds + (time.perf_counter() - began) / len(prepared)
        out = []
        for row, item in enumerate(prepared):
            began = time.perf_counter()
            prediction = self._prediction(item, result, row)
            prediction.seconds = shared + time.perf_counter() - began
            out.append(prediction)
        return out

    def _prediction(self, item: Prepared, result: CanvasOutput, row: int) -> Prediction:
        prediction = Prediction(
            original_size=item.geometry.original, geometry=item.geometry, canvas=item.canvas,
            only_task=self.only_task, gate_probs=result.gate_probs[row],
            ran=tuple(t for t, r in zip(TASKS, result.route[row].tolist(), strict=True) if r),
            warnings=item.warnings, seg_probs=result.seg_probs[row], dr_probs=result.dr_probs[row],
            dme_probs=result.dme_probs[row], grades_from=result.grades_from[row] if result.grades_from else None,
            gate_threshold=self.gate_threshold, gate_target=self.config.model.gate_target,
            served_both=self.config.infer.route == "both" and self.only_task is None,
            glance_size=self.config.model.glance_size if self.config.model.gate_input == "glance" else None,
        )
        if prediction.seg_probs is not None and self.tiles_lesions:
            prediction.seg_probs = self._tiled_on_canvas(item.decoded, prediction.seg_probs)
        return prediction

    def lesion_probs(self, images: torch.Tensor, seg_logits: torch.Tensor) -> torch.Tensor:
        """(B, 5, H, W) lesion probabilities of ``images`` whose plain forward pass gave ``seg_logits``, with the
        run's test-time flips (``infer.tta``) averaged in."""
        identity = torch.sigmoid(seg_logits.float())
        if self.config.infer.tta == "none":
            return identity
        return segment_probs(self.model, images, self.config.infer.tta, identity=identity)

    def _tiled_on_canvas(self, decoded: Decoded, whole_probs: np.ndarray) -> np.ndarray:
        """The channels ``PREDICTION_SOURCES`` takes from the windows over the high-resolution canvas, brought down to
        the whole canvas by the maximum over each cell, so that a microaneurysm found at 1536 px still shows on a
        512-px overlay (a mean would dilute it below any threshold)."""
        tiled, _ = self.segment_tiled(decoded, scale=self.config.data.crop_scale)
        height, width = whole_probs.shape[1:]
        reduced = torch.nn.functional.adaptive_max_pool2d(torch.from_numpy(tiled)[None], (height, width))[0].numpy()
        return np.stack([_combine(whole_probs[c], reduced[c], PREDICTION_SOURCES[code])
                         for c, code in enumerate(LESIONS)])

    def _tiled_config(self, scale: float | None = None) -> PreprocessConfig:
        side = int(self.preprocess.width * (self.config.data.crop_scale if scale is None else scale))
        return canvas_preprocess(self.config.data, side)

    @torch.no_grad()
    def segment_tiled(self, image: ImageInput | Decoded, scale: float = 2.0, overlap: float = 0.25,
                      batch_size: int = 4) -> tuple[np.ndarray, Geometry]:
        """Lesion probabilities on a canvas ``scale`` times the training size, by sliding windows of the training
        size: the full-resolution path (pair it with a model trained on crops at that scale)."""
        big = self._tiled_config(scale)
        decoded = image if isinstance(image, Decoded) else Decoded(*decode_for_canvas(image, big.size))
        canvas, geometry = preprocess_image(decoded.rgb, decoded.original, big)
        tensor = normalize(canvas, self.mean, self.std).to(self.device)
        with self._lock:
            probs = sliding_window(self.model.segment, tensor, window=self.preprocess.width, overlap=overlap,
                                   batch_size=batch_size, channels=len(LESIONS))
        return probs.cpu().numpy(), geometry

    @property
    def tiles_lesions(self) -> bool:
        """Whether this run learned lesions on high-resolution crops, so that they are predicted by windows."""
        return self.config.data.crop_scale >= 1

    def segment_original(self, image: ImageInput | Decoded, whole_probs: np.ndarray, geometry: Geometry,
                         overlap: float = 0.25) -> np.ndarray:
        """(5, H, W) probabilities on the original pixels, given the whole-canvas probabilities of ``image``.

        A run trained on crops also slides windows over its high-resolution canvas (the scale lesions were learned
        at) and takes each channel from the whole canvas, the windows or their mean, as ``PREDICTION_SOURCES``
        says: the optic disc, a sixth of the image wide, from the whole canvas. Other runs map the whole-canvas
        prediction back as it is.
        """
        channels = [geometry.canvas_to_original(whole_probs[c]) for c in range(len(LESIONS))]
        if self.tiles_lesions:
            tiled, big = self.segment_tiled(image, scale=self.config.data.crop_scale, overlap=overlap)
            channels = [_combine(whole, big.canvas_to_original(tiled[c]), PREDICTION_SOURCES[code])
                        for c, (code, whole) in enumerate(zip(LESIONS, channels, strict=True))]
        return np.stack(channels)

    def _glance_grades_with_features(self, tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(the glance's stride-16 features, DR logits, DME logits), the gradient kept from the grades back to those
        features through the glance's decoder (the served glance runs without one: it only reads)."""
        model = self.model
        features, logits = model.glance(tensor, grad=True)
        features[-2].retain_grad()
        summary = model.evidence_norm(lesion_summary(logits, model.coarse_summary))
        dr, dme = model.classifier(pool(features, model.pooling), summary)
        return features[-2], dr, dme

    def gradcam(self, image: ImageInput, head: str = "dr", target: int | None = None) -> np.ndarray:
        """Grad-CAM of a grade head, as a (h, w) map in [0, 1] on the canvas.

        It shows where the evidence for the predicted (or ``target``) grade lies. On the deepest feature map for
        heads that read the pooled features (with multiscale pooling they also read shallower stages, which this map
        does not show). Heads that read the coarse lesion summary (``model.gate_input: lesions``, both shipped runs)
        are explained on the stride-16 map the coarse head draws from, their gradient passing through that head: on
        the deepest map, with the summary detached as in training, the map was empty.
        """
        if head not in ("dr", "dme"):
            raise ValueError(f"head must be 'dr' or 'dme', not {head!r}")
        tensor = self.prepare(image).tensor
        with self._lock, torch.enable_grad():
            if self.model.gate_input == "glance":
                deepest, dr, dme = self._glance_grades_with_features(tensor)
            else:
                features = self.model.backbone(tensor)
                deepest = features[-2] if self.model.coarse is not None else features[-1]
                deepest.retain_grad()
                dr, dme = self.model.classify(features, detach=False)
            logits = dr if head == "dr" else dme
            index = int(logits[0].argmax()) if target is None else int(target)
            self.model.zero_grad(set_to_none=True)
            logits[0, index].backward()
            weights = deepest.grad.mean(dim=(2, 3), keepdim=True)
            cam = torch.relu((weights * deepest).sum(dim=1))[0].detach()
        cam = torch.nn.functional.interpolate(cam[None, None], size=tensor.shape[2:], mode="bilinear",
                                              align_corners=False)[0, 0]
        peak = float(cam.max())
        return (cam / peak).cpu().numpy() if peak > 0 else cam.cpu().numpy()
