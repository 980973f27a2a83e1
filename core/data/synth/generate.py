"""Generating a whole synthetic IDRiD: plan, render (optionally in worker processes), write, summarise.

Each image depends only on (seed, half, index), so the files are byte-identical whatever ``workers`` is.
A ``synth.json`` marker at the root records the parameters and the label distributions; it also tells a later run
that the folder holds a synthetic set it may replace (any other non-empty folder is refused).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import time
import types
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.data.synth import writer
from core.data.synth.plan import ImageSpec, plan, split_sizes
from core.data.synth.records import MASK_LESIONS, height_for
from core.errors import ConfigError, DataError

MARKER = "synth.json"
MIN_WIDTH = 64
MAX_WIDTH = 8192


@dataclass
class SynthSummary:
    """What was generated: counts per half and split, label and mask distributions, and how long it took."""

    out: Path
    width: int
    height: int
    seed: int
    segmentation: dict[str, int]
    grading: dict[str, int]
    dr_grade: dict[str, dict[int, int]]
    dme_risk: dict[str, dict[int, int]]
    seg_masks: dict[str, dict[str, int]]
    workers: int
    elapsed_s: float = 0.0
    n_images: int = field(init=False)

    def __post_init__(self) -> None:
        self.n_images = sum(self.segmentation.values()) + sum(self.grading.values())

    def to_dict(self) -> dict:
        data = asdict(self)
        data["out"] = str(self.out)
        return data


def validate(n_seg: int, n_cls: int, width: int, seed: int, workers: int | None) -> None:
    """One clear message per bad argument."""
    if not isinstance(n_seg, int) or n_seg < 1:
        raise ConfigError(f"n-seg must be a whole number >= 1 (the segmentation half always has images), got {n_seg}")
    if not isinstance(n_cls, int) or n_cls < 1:
        raise ConfigError(f"n-cls must be a whole number >= 1, got {n_cls}")
    if not isinstance(width, int) or not MIN_WIDTH <= width <= MAX_WIDTH:
        raise ConfigError(f"width must be between {MIN_WIDTH} and {MAX_WIDTH} pixels, got {width}")
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a whole number >= 0, got {seed}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"workers must be >= 1, got {workers}")


def prepare_out(out: Path) -> None:
    """Create ``out``, or clear a previous synthetic set in it; refuse a folder holding anything else."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise DataError(f"{out} is not empty and holds no synthetic dataset ({MARKER}); choose an empty or new folder")
        for name in (writer.SEG, writer.GRADING):
            shutil.rmtree(out / name, ignore_errors=True)
        (out / MARKER).unlink()
    out.mkdir(parents=True, exist_ok=True)


def _render_and_write(job: tuple[str, int, int, ImageSpec]) -> tuple[ImageSpec, int, int, tuple[str, ...]]:
    """Worker: render one image and write its files; returns (spec, grade, dme, lesion kinds with a mask)."""
    from core.data.synth.render import render

    root, seed, width, spec = job
    root_path = Path(root)
    sample = render(seed, spec.half, spec.index, width, spec.target)
    jpeg = writer.encode_jpeg(sample.image)
    if spec.half == "segmentation":
        writer.write_atomic(writer.seg_image_path(root_path, spec.split, spec.id), jpeg)
        for lesion, mask in sample.masks.items():
            writer.write_atomic(writer.mask_path(root_path, spec.split, spec.id, lesion), writer.encode_mask(mask))
    else:
        writer.write_atomic(writer.grading_image_path(root_path, spec.split, spec.id), jpeg)
    return spec, sample.dr_grade, sample.dme_risk, tuple(sorted(sample.masks))


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # the pool already uses the cores


@contextmanager
def _workers_without_main() -> Iterator[None]:
    """Spawn the pool's workers without re-running the caller's ``__main__`` first.

    ``multiprocessing`` spawn makes each worker import the parent's main script, and under ``streamlit run`` that is
    the app itself: on the app's first start each worker ran app.py in bare mode and printed 110 lines of warnings
    ("missing ScriptRunContext", "use streamlit run") to the console. The workers need nothing from it; a main
    module without a file tells spawn there is nothing to prepare. Only the pool's construction is covered: that is
    when the workers start and read it, so another thread's ``__main__`` is swapped for milliseconds at most.
    """
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None:
        yield  # run with -m: spawn imports the module by name, which is safe (python -m core synth)
        return
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _run(jobs: list, workers: int, progress: bool):
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="synth", unit="img", disable=not progress)
    try:
        if workers == 1:
            for job in jobs:
                yield _render_and_write(job)
                bar.update()
        else:
            # spawn, not fork: the caller may hold threads (torch, OpenCV) that a fork would copy mid-lock.
            with _workers_without_main():
                pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker)
            with pool:
                for result in pool.imap_unordered(_render_and_write, jobs):
                    yield result
                    bar.update()
    finally:
        bar.close()


def _write_marker(out: Path, params: dict, summary: SynthSummary | None) -> None:
    data = {"generator": "core.data.synth", "complete": summary is not None, "params": params}
    if summary is not None:
        data["summary"] = summary.to_dict()
    writer.write_atomic(out / MARKER, (json.dumps(data, indent=2) + "\n").encode())


def generate_dataset(
    out: Path,
    n_seg: int = 20,
    n_cls: int = 60,
    width: int = 1024,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> SynthSummary:
    """Write a complete synthetic IDRiD (both halves, train and test, images, masks, CSVs) under ``out``."""
    validate(n_seg, n_cls, width, seed, workers)
    start = time.perf_counter()
    out = Path(out)
    prepare_out(out)
    writer.make_folders(out)
    params = {"n_seg": n_seg, "n_cls": n_cls, "width": width, "seed": seed}
    _write_marker(out, params, None)

    specs = plan(n_seg, n_cls, seed)
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if len(specs) >= 8 else 1
    jobs = [(str(out), seed, width, spec) for spec in specs]
    labels: dict[str, list[tuple[str, int, int]]] = {"train": [], "test": []}
    masks: dict[str, Counter] = {"train": Counter(), "test": Counter()}
    for spec, grade, dme, kinds in _run(jobs, workers, progress):
        if spec.half == "grading":
            labels[spec.split].append((spec.id, grade, dme))
        else:
            masks[spec.split].update(kinds)
    for split, rows in labels.items():
        writer.write_atomic(writer.csv_path(out, split), writer.csv_bytes(rows))

    seg_train, seg_test = split_sizes(n_seg, 1 / 3)
    cls_train, cls_test = split_sizes(n_cls, 0.2)
    summary = SynthSummary(
        out=out,
        width=width,
        height=height_for(width),
        seed=seed,
        segmentation={"train": seg_train, "test": seg_test},
        grading={"train": cls_train, "test": cls_test},
        dr_grade={s: {g: sum(1 for r in rows if r[1] == g) for g in range(5)} for s, rows in labels.items()},
        dme_risk={s: {d: sum(1 for r in rows if r[2] == d) for d in range(3)} for s, rows in labels.items()},
        seg_masks={s: {k: masks[s][k] for k in MASK_LESIONS} for s in masks},
        workers=workers,
    )
    summary.elapsed_s = time.perf_counter() - start
    _write_marker(out, params, summary)
    return summary
