"""Runs and data as the pages describe them: a run's config, what it was trained on, a dataset's counts per split,
the Train page's list of past runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.config import Config, load_config
from core.errors import DataError
from core.run.folder import RunDir

SYNTHETIC_NOTE = "trained on synthetic images only"


def run_config(path: Path | str) -> Config:
    """The run's config.yaml; a clear ``ConfigError`` when it is missing or damaged."""
    run = RunDir(Path(path))
    if not run.path.is_dir():
        raise DataError(f"run folder {run.path} does not exist")
    return load_config(run.config)


def data_description(config: Config, run: RunDir | None = None) -> str:
    """What a run learned from, in words a reader of the page can use: the dataset and its size, not the folders
    of the machine it was trained on (those stay in its config.yaml)."""
    data = config.data
    if data.source == "synthetic":
        return f"{SYNTHETIC_NOTE} (the built-in synthetic IDRiD, {data.synthetic.n_seg} segmentation + " \
               f"{data.synthetic.n_cls} grading images)"
    counts = _split_counts(run) if run is not None else None
    if counts is None:
        return "real IDRiD photographs" if data.source == "folder" else "photographs listed in a metadata file"
    (seg, graded), (seg_train, graded_train) = counts
    return (f"real IDRiD photographs: {seg} with lesion masks and {graded} graded, of which {seg_train} and "
            f"{graded_train} in its training split")


def data_summary(config: Config, run: RunDir | None = None) -> str:
    """The shortest form, for a caption or a report field: "synthetic images only" or "real IDRiD photographs"."""
    return "synthetic images only" if config.data.source == "synthetic" else data_description(config, run)


def _split_counts(run: RunDir) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """(photographs with masks, graded) over all splits and in the train split, from the split the run saved."""
    import json

    try:
        summary = json.loads(run.metadata.read_text(encoding="utf-8"))["summary"]
        splits = {name: summary[name] for name in ("train", "val", "test")}
        seg = sum(int(s["segmentation"]) for s in splits.values())
        graded = sum(int(s["classification"]) for s in splits.values())
        return (seg, graded), (int(splits["train"]["segmentation"]), int(splits["train"]["classification"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


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
