"""The Predictor: a trained run applied to any image, with exactly the training preprocessing.

``Predictor.from_run(dir)`` reads the run's config and safetensors weights; ``predict(image)`` takes a path, bytes,
a PIL image or an array in any mode and returns the gate's decision, the routed expert's output and, on request,
both experts. One Predictor may serve several threads (the app's sessions): forward passes are serialised by a lock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from core.config import Config, load_config
from core.data.dataset import normalize
from core.data.preprocess import Geometry, PreprocessConfig, decode_for_canvas, preprocess_image
from core.errors import ConfigError
from core.infer.clinical import ImpliedDme, LesionStats, implied_dme, lesion_stats
from core.infer.tiling import sliding_window
from core.infer.tta import segment_probs
from core.model.evidence import GRADER_FILE, EvidenceGrader, lesion_evidence
from core.model.factory import build_model, model_signature
from core.model.gated import GatedMultiTaskModel
from core.train.checkpoint import load_weights
from core.train.run_dir import RunDir, trained_tasks
from core.vocabulary import LESIONS, PREDICTION_SOURCES, TASKS

ImageInput = str | Path | bytes | Image.Image | np.ndarray
SMALL_IMAGE = 256  # below this short side a photograph holds too little detail for lesions


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

    @property
    def task(self) -> str:
        """The gate's choice, or the one task the run learned."""
        return self.only_task or TASKS[int(np.argmax(self.gate_probs))]

    @property
    def confidence(self) -> float:
        return float(np.max(self.gate_probs))

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
                     "probabilities": dict(zip(TASKS, map(float, self.gate_probs), strict=True))},
            "experts_run": list(self.ran),
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
        }
        if self.dr_probs is not None:
            out["dr_grade"] = {"predicted": int(np.argmax(self.dr_probs)), "probabilities": self.dr_probs.tolist()}
            out["dme_risk"] = {"predicted": int(np.argmax(self.dme_probs)), "probabilities": self.dme_probs.tolist()}
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


def _weights_path(run: RunDir, which: str) -> Path:
    path = run.weights_file(which)
    if path.exists():
        return path
    fallback = run.weights_file("last" if which == "best" else "best")
    if fallback.exists():
        return fallback
    found = sorted(run.weights.glob("*")) if run.weights.exists() else []
    if found:
        raise ConfigError(f"run {run.path} holds {', '.join(p.name for p in found)} but no .safetensors weights; "
                          "only safetensors weights are loaded")
    raise ConfigError(f"run {run.path} has no weights yet (weights/best.safetensors): has it finished an epoch?")


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
        self.model = model.to(device).eval()
        self.grader = grader  # grades from lesion evidence (core.model.evidence) instead of the classification heads
        self.tasks = tuple(tasks)  # what the run learned; one task means an untrained gate (trained_tasks)
        self.config = config
        self.device = torch.device(device)
        self.name = name
        self.preprocess = PreprocessConfig(config.data.image_size, config.data.image_size, clahe=config.data.clahe)
        self.mean, self.std = model.normalization
        self._lock = threading.Lock()

    @classmethod
    def from_run(cls, run_dir: Path | str, weights: str = "best", device: str = "cpu",
                 use_grader: bool = True) -> Predictor:
        run = RunDir(Path(run_dir))
        if not run.path.is_dir():
            raise ConfigError(f"run folder {run.path} does not exist")
        if not run.config.exists():
            raise ConfigError(f"run folder {run.path} has no config.yaml: it is not a run, or it was never started")
        config = load_config(run.config)
        path = Path(weights) if weights.endswith(".safetensors") or "/" in weights else _weights_path(run, weights)
        model = build_model(config.model, load_pretrained=False)
        load_weights(model, path, model_signature(config.model))
        grader_path = run.weights / GRADER_FILE
        grader = EvidenceGrader.load(grader_path) if use_grader and grader_path.exists() else None
        return cls(model, config, device, name=run.path.name, grader=grader, tasks=trained_tasks(run))

    @property
    def grades_source(self) -> str:
        return "lesion evidence" if self.grader is not None else "classification heads"

    def grades_from_lesions(self, seg_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """DR and DME probabilities from (5, H, W) canvas probabilities, by the run's lesion grader."""
        assert self.grader is not None
        return self.grader.predict_proba(lesion_evidence(seg_probs))

    def prepare(self, image: ImageInput) -> tuple[torch.Tensor, np.ndarray, Geometry, list[str]]:
        """Decode and preprocess exactly as in training; returns the normalised (1, 3, H, W) tensor too."""
        rgb, original = decode_for_canvas(image, self.preprocess.size)
        warnings = []
        if min(original) < SMALL_IMAGE:
            warnings.append(f"the image is only {original[0]}x{original[1]} pixels: too small for lesions to be "
                            "visible; treat the prediction with caution")
        canvas, geometry = preprocess_image(rgb, original, self.preprocess)
        if geometry.crop == (0, 0, original[0], original[1]) and min(original) >= SMALL_IMAGE:
            warnings.append("no dark border around a field of view was found: is this a fundus photograph?")
        tensor = normalize(canvas, self.mean, self.std)[None].to(self.device)
        return tensor, canvas, geometry, warnings

    @torch.no_grad()
    def gate_probs(self, image: ImageInput) -> np.ndarray:
        """(2,) the gate's probabilities alone (segmentation, classification): no expert runs."""
        tensor, _, _, _ = self.prepare(image)
        with self._lock:
            pooled = self.model.pooled_features(self.model.backbone(tensor))
            return self.model.gate(pooled)[0].float().softmax(0).cpu().numpy()

    @torch.no_grad()
    def predict(self, image: ImageInput, both: bool = False) -> Prediction:
        """Gate, then the chosen expert (``both=True``: both experts)."""
        started = time.perf_counter()
        tensor, canvas, geometry, warnings = self.prepare(image)
        only_task = self.tasks[0] if len(self.tasks) == 1 else None
        with self._lock:
            if both or self.grader is not None:  # grades read from lesions need the segmentation expert everywhere
                output = self.model(tensor, route="both")
            elif only_task is not None:  # the gate of a one-task run was never trained: its expert serves all
                output = self.model(tensor, route="oracle", task=torch.tensor([TASKS.index(only_task)]))
            else:
                output = self.model(tensor, route="gate")
            seg = None if output.seg_logits is None else self.lesion_probs(tensor, output.seg_logits)[0]
        ran = tuple(t for t, r in zip(TASKS, output.route[0].tolist(), strict=True) if r)
        prediction = Prediction(
            original_size=geometry.original, geometry=geometry, canvas=canvas, only_task=only_task,
            gate_probs=output.gate_probs[0].cpu().numpy(), ran=ran, warnings=warnings,
            seg_probs=None if seg is None else seg.cpu().numpy(),
            dr_probs=None if output.dr_logits is None else output.dr_logits[0].float().softmax(0).cpu().numpy(),
            dme_probs=None if output.dme_logits is None else output.dme_logits[0].float().softmax(0).cpu().numpy(),
        )
        if self.grader is not None and prediction.seg_probs is not None:
            prediction.dr_probs, prediction.dme_probs = self.grades_from_lesions(prediction.seg_probs)
        if prediction.seg_probs is not None and self.tiles_lesions:
            prediction.seg_probs = self._tiled_on_canvas(image, prediction.seg_probs)
        prediction.seconds = time.perf_counter() - started
        return prediction

    def lesion_probs(self, images: torch.Tensor, seg_logits: torch.Tensor) -> torch.Tensor:
        """(B, 5, H, W) lesion probabilities of ``images`` whose plain forward pass gave ``seg_logits``, with the
        run's test-time flips (``infer.tta``) averaged in."""
        identity = torch.sigmoid(seg_logits.float())
        if self.config.infer.tta == "none":
            return identity
        return segment_probs(self.model, images, self.config.infer.tta, identity=identity)

    def _tiled_on_canvas(self, image: ImageInput, whole_probs: np.ndarray) -> np.ndarray:
        """The channels ``PREDICTION_SOURCES`` takes from the windows over the high-resolution canvas, brought down to
        the whole canvas by the maximum over each cell, so that a microaneurysm found at 1536 px still shows on a
        512-px overlay (a mean would dilute it below any threshold)."""
        tiled, _ = self.segment_tiled(image, scale=self.config.data.crop_scale)
        height, width = whole_probs.shape[1:]
        reduced = torch.nn.functional.adaptive_max_pool2d(torch.from_numpy(tiled)[None], (height, width))[0].numpy()
        return np.stack([_combine(whole_probs[c], reduced[c], PREDICTION_SOURCES[code])
                         for c, code in enumerate(LESIONS)])

    @torch.no_grad()
    def segment_tiled(self, image: ImageInput, scale: float = 2.0, overlap: float = 0.25,
                      batch_size: int = 4) -> tuple[np.ndarray, Geometry]:
        """Lesion probabilities on a canvas ``scale`` times the training size, by sliding windows of the training
        size: the full-resolution path (pair it with a model trained on crops at that scale)."""
        size = self.preprocess.width
        big = PreprocessConfig(int(size * scale), int(size * scale), clahe=self.preprocess.clahe)
        rgb, original = decode_for_canvas(image, big.size)
        canvas, geometry = preprocess_image(rgb, original, big)
        tensor = normalize(canvas, self.mean, self.std).to(self.device)
        with self._lock:
            probs = sliding_window(self.model.segment, tensor, window=size, overlap=overlap, batch_size=batch_size,
                                   channels=len(LESIONS))
        return probs.cpu().numpy(), geometry

    @property
    def tiles_lesions(self) -> bool:
        """Whether this run learned lesions on high-resolution crops, so that they are predicted by windows."""
        return self.config.data.crop_scale >= 1

    def segment_original(self, image: ImageInput, whole_probs: np.ndarray, geometry: Geometry,
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

    def gradcam(self, image: ImageInput, head: str = "dr", target: int | None = None) -> np.ndarray:
        """Grad-CAM of a grade head on the deepest feature map, as a (h, w) map in [0, 1] on the canvas.

        It shows where the evidence for the predicted (or ``target``) grade lies; with multiscale pooling the heads
        also read shallower stages, which this map does not show.
        """
        if head not in ("dr", "dme"):
            raise ValueError(f"head must be 'dr' or 'dme', not {head!r}")
        tensor, _, _, _ = self.prepare(image)
        with self._lock, torch.enable_grad():
            features = self.model.backbone(tensor)
            deepest = features[-1]
            deepest.retain_grad()
            dr, dme = self.model.classifier(self.model.pooled_features(features))
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
