"""``evaluate_run``: score a run on a split and save everything the dashboards and the gallery show.

Writes ``eval/<split>/`` in the run folder: ``summary.json`` (metrics), ``predictions.csv`` (one row per sample),
``masks/<sample>_<LESION>.png`` (predicted probabilities at the model's canvas, 0-255, so the gallery needs no model)
and ``curves.json`` (precision-recall curves). Every expert runs on every sample (``route="both"``): each is scored
on the samples of its own task and the gate on all, so one pass gives the expert quality and the routing quality.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.data.imageio import read_mask
from core.data.metadata import Metadata, load_metadata
from core.data.sources import resolve_metadata
from core.data.targets import gate_vector, is_referable
from core.errors import DataError
from core.evaluate.gate_audit import audit_gate
from core.evaluate.metrics import (
    SegmentationAccumulator,
    accuracy_by_group,
    binary_report,
    classification_report,
    dice_iou,
    joint_accuracy,
    routing_report,
)
from core.fileio import atomic_write, atomic_write_text
from core.infer.clinical import referable_from_grades
from core.infer.predictor import Predictor
from core.run.folder import RunDir, mask_file
from core.run.summary import (
    ClassificationSummary,
    ClassScores,
    EvalSummary,
    GateSummary,
    LesionScores,
    SegmentationSummary,
)
from core.vocabulary import DME_NAMES, DR_NAMES, GRADES_FROM_HEADS, LESIONS, NUM_DME_RISKS, NUM_DR_GRADES, TASKS


def run_metadata(run: RunDir, config_data: Any, data: Path | None, progress: bool,
                 all_labels: bool | None = None) -> Metadata:
    """The samples to evaluate: ``data`` if given, else the split the run trained with, else the run's data
    source resolved again (the synthetic demo data is regenerated, deterministically, when missing).

    ``all_labels`` (default: when the run has a lesion grader or a gate fitted after training) gives a run trained on one task's labels
    (``data.tasks``) the other task's labels of its source too, on the same split: a segmentation-only run with a
    grader grades photographs, and its grades are fitted and scored on the graded ones.
    """
    if data is not None:
        return load_metadata(data)
    metadata = _trained_metadata(run, config_data, progress)
    if all_labels is None:
        all_labels = run.grader.exists() or run.gate_report.exists()
    trained = metadata.raw.get("tasks_trained")
    if not all_labels or trained is None or set(trained) >= set(TASKS):
        return metadata
    return _with_all_labels(metadata, replace(config_data, tasks=list(TASKS)), progress)


def _with_all_labels(metadata: Metadata, config_data: Any, progress: bool) -> Metadata:
    full = resolve_metadata(config_data, progress=progress)
    splits = {s.id: s.split for s in full.samples}
    moved = [s.id for s in metadata.samples if splits.get(s.id) != s.split]
    if moved:
        raise DataError(f"the source of this run no longer splits its photographs as the run did ({len(moved)} "
                        f"differ, e.g. {moved[0]}): its other task's labels cannot be added")
    return full


def _trained_metadata(run: RunDir, config_data: Any, progress: bool) -> Metadata:
    if run.metadata.exists():
        attempts = [None]
        if config_data.source == "folder" and config_data.roots:
            attempts.append(config_data.roots)  # the same download under the config's (relative) folders
        for roots in attempts:
            try:
                return load_metadata(run.metadata, roots=roots)
            except DataError:
                pass  # the files moved (a fresh clone): try the next place, then the config's source
    return resolve_metadata(config_data, progress=progress)


def _png(probs: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.clip(probs * 255.0 + 0.5, 0, 255).astype(np.uint8)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _full_res_truth(sample, geometry) -> np.ndarray:
    truth = np.zeros((len(LESIONS), geometry.original[1], geometry.original[0]), dtype=bool)
    for channel, code in enumerate(LESIONS):
        path = (sample.masks or {}).get(code)
        if path is not None:
            truth[channel] = read_mask(path)
    return truth


def misrouting_kind(wanted: tuple[int, int], chosen: int) -> str:
    """``missed``: the photograph needed the lesion map (its target is segmentation only) and went to
    classification, the dangerous error; ``wasted``: it needed a grade only and was segmented for nothing; "" when
    routed to a target of its own, or when it has no target."""
    if not any(wanted) or wanted[chosen]:
        return ""
    return "missed" if chosen == TASKS.index("classification") else "wasted"


class _Rows:
    """Per-sample rows of predictions.csv, plus the label lists the classification metrics need."""

    def __init__(self, only_task: str | None = None, gate_target: str = "task", threshold: float = 0.5) -> None:
        self.rows: list[dict[str, Any]] = []
        self.only_task = only_task  # a one-task run routes everything to its expert, whatever its untrained gate says
        self.gate_target = gate_target  # what routing is judged against (core.data.targets)
        self.threshold = threshold  # the run's operating point on p(segmentation)
        self.both_dr: list[np.ndarray] = []  # the grades had the photograph gone to both experts
        self.both_dme: list[np.ndarray] = []

    def chosen(self, gate: np.ndarray) -> int:
        if self.only_task:
            return TASKS.index(self.only_task)
        return 0 if float(gate[0]) >= self.threshold else 1

    def add(self, sample, gate: np.ndarray, served: tuple[np.ndarray, np.ndarray, str],
            both: tuple[np.ndarray, np.ndarray], dice: dict[str, float | None]) -> None:
        """``served``: the grades the routed expert gives (and which part gave them); ``both``: the grades with
        both experts run."""
        dr, dme, grades_from = served
        self.both_dr.append(both[0])
        self.both_dme.append(both[1])
        vector = np.array(sample.task_vector)
        wanted = gate_vector(sample, self.gate_target)
        chosen = self.chosen(gate)
        both = bool(vector.all())
        kind = misrouting_kind(wanted, chosen)
        row: dict[str, Any] = {
            "id": sample.id, "task": "both" if both else sample.task, "gate_p_segmentation": round(float(gate[0]), 5),
            "gate_p_classification": round(float(gate[1]), 5), "route": TASKS[chosen],
            "misrouted": bool(kind), "gate_confidence": round(float(gate[chosen]), 5),
            "dr_true": sample.dr_grade, "dr_pred": int(np.argmax(dr)), "dme_true": sample.dme_risk,
            "dme_pred": int(np.argmax(dme)),
        }
        row.update({f"dr_p{k}": round(float(p), 5) for k, p in enumerate(dr)})
        row.update({f"dme_p{k}": round(float(p), 5) for k, p in enumerate(dme)})
        row.update({f"dice_{code}": (None if dice.get(code) is None else round(dice[code], 5)) for code in LESIONS})
        row["gate_target"] = {(1, 0): "segmentation", (0, 1): "classification", (1, 1): "either"}.get(wanted, "none")
        row["misrouted_kind"] = kind
        row["grades_from"] = grades_from
        self.rows.append(row)

    def write(self, path: Path) -> None:
        def write(stream) -> None:
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=list(self.rows[0]))
            writer.writeheader()
            writer.writerows(self.rows)
            stream.write(text.getvalue().encode())

        atomic_write(path, write)


def _image_dice(probs: np.ndarray, truth: np.ndarray) -> dict[str, float | None]:
    """Per lesion, the Dice of one image for predictions.csv (None where the lesion is absent from both)."""
    return {code: dice_iou(probs[channel] >= 0.5, truth[channel])[0] for channel, code in enumerate(LESIONS)}


def evaluate_run(run_dir: RunDir | Path | str, split: str = "test", data: Path | None = None, full_res: bool = False,
                 weights: str = "best", progress: bool = True, batch_size: int = 4,
                 gate_audit: bool = False) -> EvalSummary:
    """Score ``run_dir`` on ``split`` and write ``eval/<split>/``; returns the summary.

    ``gate_audit`` adds the shortcut check (``core.evaluate.gate_audit``) as ``summary.gate.shortcut_check``.
    """
    started = time.time()
    run = RunDir.of(run_dir)
    predictor = Predictor.from_run(run, weights=weights)
    config = predictor.config
    metadata = run_metadata(run, config.data, data, progress)
    samples = metadata.split(split)
    if not samples:
        counts = {s: len(metadata.split(s)) for s in ("train", "val", "test")}
        raise DataError(f"the {split} split of this dataset is empty ({counts}); choose another with --split")
    out = run.eval_dir(split)
    accumulator = SegmentationAccumulator(LESIONS)
    rows = _Rows(predictor.only_task, config.model.gate_target, predictor.gate_threshold)
    serves_both = predictor.default_route() == "both"  # infer.route: both: every photograph gets both experts
    masks: dict[Path, bytes] = {}
    resolution = "original image size" if full_res else f"model canvas {config.data.image_size} px"
    if full_res and predictor.tiles_lesions:
        side = round(config.data.image_size * config.data.crop_scale)
        resolution += f" (lesions by {config.data.image_size}-px windows over a {side}-px canvas, optic disc whole)"
    if config.infer.tta != "none":
        resolution += f", lesion maps averaged over test-time flips ({config.infer.tta})"
    for batch in predictor.canvas_batches(samples, batch_size, progress, desc=f"evaluate {split}"):
        result = predictor.infer(batch["image"], route="both")  # every expert on every sample, scored as routed
        seg, dr, dme = (result.stacked(name) for name in ("seg_probs", "dr_probs", "dme_probs"))
        head_dr, head_dme = result.stacked("head_dr_probs"), result.stacked("head_dme_probs")
        for row, index in enumerate(batch["index"].tolist()):
            sample = samples[index]
            dice: dict[str, float | None] = {}
            if sample.masks is not None:
                if full_res:
                    geometry = predictor.cache.get(sample.image, sample.masks, predictor.preprocess).geometry  # a hit
                    probs = predictor.segment_original(sample.image, seg[row], geometry)
                    truth = _full_res_truth(sample, geometry)
                else:
                    probs, truth = seg[row], batch["mask"][row].numpy() > 0
                accumulator.add(probs, truth)
                dice = _image_dice(probs, truth)
            for channel, code in enumerate(LESIONS):
                masks[mask_file(out, sample.id, code)] = _png(seg[row][channel])
            # the grades the product serves: lesion evidence where the gate sends the photograph to the decoder
            # (when the run has a lesion grader), the classification expert where it sends it there
            segmented = serves_both or rows.chosen(result.gate_probs[row]) == 0
            served = ((dr[row], dme[row], result.grades_from[row]) if segmented
                      else (*predictor.served_head_grades(head_dr[row], head_dme[row]), GRADES_FROM_HEADS))
            rows.add(sample, result.gate_probs[row], served, (dr[row], dme[row]), dice)
    lesions = accumulator.summary() if any(s.masks is not None for s in samples) else {}
    summary = _summarise(rows.rows, lesions, samples, split, resolution, run, weights, _served_source(rows.rows),
                         config.model.gate_target, rows.threshold)
    summary.routing = _routing(rows, samples, predictor)
    if gate_audit:
        summary.gate.shortcut_check = audit_gate(predictor, samples, progress)
    summary.seconds = round(time.time() - started, 2)
    if rows.only_task:  # accuracy figures of an untrained gate would read as a failure of routing
        summary.gate = GateSummary(n=len(rows.rows), trained=False, misrouted=0, misrouted_samples=[],
                                   note=f"the run learned {rows.only_task} only: its gate was not trained and every "
                                        f"image went to the {rows.only_task} expert")
    for path, data_bytes in masks.items():
        atomic_write(path, lambda stream, b=data_bytes: stream.write(b))
    rows.write(run.predictions(split))
    curves = {code: {**value["pr_curve"], "aupr": value["aupr"]} for code, value in lesions.items()}
    atomic_write_text(run.curves(split), json.dumps(curves) + "\n")
    summary.save(run.summary(split))
    return summary


def _summarise(rows: list[dict[str, Any]], lesions: dict[str, dict[str, Any]], samples, split: str,
               resolution: str, run: RunDir, weights: str, grades_source: str,
               gate_target: str = "task", threshold: float = 0.5) -> EvalSummary:
    graded = [r for r in rows if r["dr_true"] is not None]
    graded_only = [r for r in graded if r["task"] == "classification"]  # is a severe grade sent to segmentation?
    targeted = [(s, r) for s, r in zip(samples, rows, strict=True) if any(gate_vector(s, gate_target))]
    vectors = np.array([gate_vector(s, gate_target) for s, _ in targeted]).reshape(-1, len(TASKS))
    gate = np.array([[r["gate_p_segmentation"], r["gate_p_classification"]] for _, r in targeted]).reshape(-1, 2)
    misrouted = sorted(({"id": r["id"], "task": r["task"], "route": r["route"], "confidence": r["gate_confidence"]}
                        for r in rows if r["misrouted"]), key=lambda r: -r["confidence"])
    dr_true, dr_pred = [r["dr_true"] for r in graded], [r["dr_pred"] for r in graded]
    dme_true, dme_pred = [r["dme_true"] for r in graded], [r["dme_pred"] for r in graded]
    return EvalSummary(
        run=run.name, split=split, weights=weights, n=len(rows),
        n_segmentation=sum(s.masks is not None for s in samples), n_classification=len(graded),
        resolution=resolution,
        gate=GateSummary(**routing_report(vectors, gate, threshold), misrouted_samples=misrouted,
                         accuracy_by_dr_grade=accuracy_by_group([not r["misrouted"] for r in graded_only],
                                                                [r["dr_true"] for r in graded_only]),
                         target=None if gate_target == "task" else gate_target,
                         missed=sum(r["misrouted_kind"] == "missed" for r in rows),
                         wasted=sum(r["misrouted_kind"] == "wasted" for r in rows)),
        classification=ClassificationSummary(
            dr=ClassScores(**classification_report(dr_true, dr_pred, NUM_DR_GRADES)),
            dme=ClassScores(**classification_report(dme_true, dme_pred, NUM_DME_RISKS)),
            joint_accuracy=joint_accuracy(dr_true, dr_pred, dme_true, dme_pred),
            dr_labels=list(DR_NAMES), dme_labels=list(DME_NAMES), source=grades_source,
        ),
        segmentation=SegmentationSummary(resolution, {
            code: LesionScores(**{k: v for k, v in value.items() if k != "pr_curve"}) for code, value in lesions.items()
        }),
        referable=_referable(samples, rows, threshold),
    )


def _served_source(rows: list[dict[str, Any]]) -> str:
    """One source when every graded photograph's grades came from one part, else both named."""
    sources = sorted({r["grades_from"] for r in rows if r["dr_true"] is not None and r["grades_from"]})
    return " / ".join(sources) if sources else GRADES_FROM_HEADS


def _routing(rows: _Rows, samples, predictor: Predictor) -> dict[str, Any] | None:
    """Routing for real: where the operating point sends the split's photographs, and what grading loses or gains
    against running both experts on every photograph (the evidence grader's grades everywhere)."""
    if rows.only_task:
        return None
    table = rows.rows
    serves_both = predictor.default_route() == "both"
    to_decoder = [serves_both or r["route"] == "segmentation" for r in table]
    graded_only = [r for r in table if r["task"] == "classification"]
    spared = [not serves_both and r["route"] == "classification" for r in graded_only]
    out: dict[str, Any] = {
        "route": "both" if serves_both else "gate",
        "threshold": rows.threshold, "n": len(table), "to_decoder": int(sum(to_decoder)),
        "share_to_decoder": float(np.mean(to_decoder)) if table else None,
        "graded_only": len(graded_only), "graded_only_spared": int(sum(spared)),
        "share_graded_only_spared": float(np.mean(spared)) if graded_only else None,
    }
    graded = [i for i, r in enumerate(table) if r["dr_true"] is not None]
    if graded and predictor.grader is not None:
        dr_true = [table[i]["dr_true"] for i in graded]
        dme_true = [table[i]["dme_true"] for i in graded]
        dr_pred = [int(np.argmax(rows.both_dr[i])) for i in graded]
        dme_pred = [int(np.argmax(rows.both_dme[i])) for i in graded]
        out["grades_if_both"] = {
            "source": predictor.grades_source,
            "dr": classification_report(dr_true, dr_pred, NUM_DR_GRADES),
            "dme": classification_report(dme_true, dme_pred, NUM_DME_RISKS),
            "joint_accuracy": joint_accuracy(dr_true, dr_pred, dme_true, dme_pred),
        }
    return out


def _referable(samples, rows: list[dict[str, Any]], threshold: float = 0.5) -> dict[str, Any] | None:
    """More than mild DR (core.data.targets) told by the gate's p(segmentation) and by the grades, on the samples
    whose labels say whether they are referable; None when none do."""
    known = [(referable, row) for s, row in zip(samples, rows, strict=True)
             if (referable := is_referable(s)) is not None]
    if not known:
        return None
    truth = [referable for referable, _ in known]
    dr = np.array([[row[f"dr_p{k}"] for k in range(NUM_DR_GRADES)] for _, row in known])
    dme = np.array([[row[f"dme_p{k}"] for k in range(NUM_DME_RISKS)] for _, row in known])
    graded = [(referable, p) for (referable, row), p in zip(known, referable_from_grades(dr, dme), strict=True)
              if row["dr_true"] is not None]
    return {
        "rule": "DR grade >= 2, or DME risk >= 1, or haemorrhages, hard or soft exudates in the masks",
        "gate": binary_report(truth, [row["gate_p_segmentation"] for _, row in known], threshold),
        "grades": binary_report([t for t, _ in graded], [p for _, p in graded]) if graded else None,
    }
