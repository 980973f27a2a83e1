"""Where a run's samples come from: the built-in synthetic IDRiD, a folder (or one per half), or a metadata file.

Every source ends as a ``Metadata``; the trainer saves it in the run folder so that evaluation, the gallery and a
resumed run all see the same split.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from core import project_root
from core.config import DataConfig, SynthConfig
from core.data.idrid import read_idrid
from core.data.metadata import Metadata, Sample, build_metadata, load_metadata, only_tasks, parse_metadata
from core.errors import DataError
from core.vocabulary import TASKS

PROJECT_ROOT = project_root()  # $IDRID_STUDIO_HOME, else this checkout, else the cwd (an installed package)
_MARKER = ".synthetic-complete.json"


def synthetic_root(config: SynthConfig) -> Path:
    """Relative paths are taken from the project folder, so the demo data lands in one place whatever the cwd."""
    out = Path(config.out).expanduser()
    return out if out.is_absolute() else PROJECT_ROOT / out


def _marker_content(config: SynthConfig) -> dict:
    from core.data.synth import GENERATOR_VERSION

    return asdict(config) | {"out": None, "generator": GENERATOR_VERSION}


def synthetic_ready(config: SynthConfig) -> bool:
    """Whether a complete dataset with these settings is already there (nothing to generate)."""
    marker = synthetic_root(config) / _MARKER
    try:
        return json.loads(marker.read_text()) == _marker_content(config)
    except (OSError, json.JSONDecodeError):
        return False


def ensure_synthetic(config: SynthConfig, progress: bool = True) -> Path:
    """Generate the synthetic dataset unless a complete one with the same settings is there.

    Generation writes into a temporary sibling folder that is renamed into place at the end, so a run killed
    half-way leaves no half dataset and two processes asking at once both end with a complete one.
    """
    from core.data.synth import generate_dataset  # heavy; only needed on a miss

    root = synthetic_root(config)
    if synthetic_ready(config):
        return root
    wanted = _marker_content(config)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        generate_dataset(staging, n_seg=config.n_seg, n_cls=config.n_cls, width=config.width, seed=config.seed,
                         progress=progress)
        (staging / _MARKER).write_text(json.dumps(wanted))
        if root.exists():
            shutil.rmtree(root, ignore_errors=True)
        try:
            staging.rename(root)
        except OSError:
            if not (root / _MARKER).exists():  # someone else won the race with a complete dataset, or not
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def resolve_metadata(config: DataConfig, progress: bool = True) -> Metadata:
    metadata = _resolve(config, progress)
    if set(config.tasks) >= {"segmentation", "classification"}:
        return metadata
    return parse_metadata(only_tasks(metadata.raw, config.tasks), where=f"{describe_source(config)} "
                          f"({' and '.join(config.tasks)} labels only)")


def unlabeled_samples(config: DataConfig, progress: bool = False) -> list[Sample]:
    """The training photographs of the source that have no masks, whatever ``config.tasks`` keeps: what the
    semi-supervised consistency loss learns from (core.train.consistency). The split is the source's own, so none of
    them is a validation or test photograph, nor a twin of one."""
    return [s for s in _resolve(config, progress).split("train") if s.masks is None]


def describe_source(config: DataConfig) -> str:
    if config.source == "metadata":
        return f"metadata file {config.metadata}"
    if config.source == "synthetic":
        return "the synthetic dataset"
    return f"dataset {', '.join(map(str, config.roots))}"


def _resolve(config: DataConfig, progress: bool) -> Metadata:
    if config.source == "metadata":
        return load_metadata(Path(config.metadata).expanduser())
    if config.source == "synthetic":
        roots = [ensure_synthetic(config.synthetic, progress)]
        strict = True
    else:
        roots = [Path(r).expanduser() for r in config.roots]
        strict = config.strict
    index = read_idrid(roots, strict=strict)
    document = build_metadata(index, val_fraction=config.val_fraction, seed=config.split_seed,
                              drop_conflicting=config.drop_conflicting, progress=progress,
                              folds=config.folds, fold=config.fold)
    return parse_metadata(document, where=f"dataset {', '.join(map(str, roots))}")


def describe(metadata: Metadata) -> str:
    """One line a user reads before training starts: what is there, and what will not be trained."""
    parts = []
    for split in ("train", "val", "test"):
        samples = metadata.split(split)
        seg = sum(s.masks is not None for s in samples)
        cls = sum(s.dr_grade is not None for s in samples)
        both = sum(all(s.task_vector) for s in samples)
        parts.append(f"{split} {seg} seg + {cls} cls" + (f" ({both} both)" if both else ""))
    line = "; ".join(parts)
    present = {task for s in metadata.split("train") for task, flag in zip(TASKS, s.task_vector) if flag}
    missing = {"segmentation", "classification"} - present
    if missing:
        line += f" — no {' or '.join(sorted(missing))} samples to train on: that head and the gate learn nothing from it"
    return line


def require_samples(metadata: Metadata, split: str) -> None:
    if not metadata.split(split):
        raise DataError(f"the {split} split is empty; the dataset has {len(metadata.samples)} samples in other splits")
