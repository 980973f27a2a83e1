"""The first start: make the shipped demo run complete on a fresh clone.

``first_start`` generates the synthetic data the demo was trained on (about 15 s) and evaluates the demo on its test
split (10-20 s) when ``eval/test`` is missing. Several app sessions may start at once: one lock serialises the work,
and each step checks again, under the lock, whether another session already did it.

Nothing here imports streamlit, and torch only inside the functions that need it.
"""

from __future__ import annotations

import threading
from pathlib import Path

from core.catalogue import demo_dir
from core.config import load_config
from core.errors import StudioError
from core.run.folder import RunDir
from core.run.summary import EvalSummary

_first_start_lock = threading.Lock()


def run_data_ready(path: Path | str) -> bool:
    """False only for a run trained on the synthetic dataset whose images are not generated (yet)."""
    try:
        config = load_config(RunDir(Path(path)).config)
    except StudioError:
        return True
    from core.data import sources

    return config.data.source != "synthetic" or sources.synthetic_ready(config.data.synthetic)


def first_start_steps(path: Path | str | None = None, split: str = "test") -> list[str]:
    """What ``first_start`` still has to do for this run: "data" and/or "evaluate" (empty: nothing)."""
    run = RunDir(Path(path) if path is not None else demo_dir())
    if not run.config.exists():
        return []
    steps = [] if run_data_ready(run.path) else ["data"]
    if run.has_weights and not run.summary(split).exists():
        steps.append("evaluate")
    return steps


def ensure_run_data(path: Path | str) -> Path | None:
    """Generate the synthetic dataset a run was trained on, if missing (about 15 s for the demo)."""
    config = load_config(RunDir(Path(path)).config)
    if config.data.source != "synthetic":
        return None
    from core.data.sources import ensure_synthetic

    with _first_start_lock:
        return ensure_synthetic(config.data.synthetic, progress=False)


def ensure_evaluated(path: Path | str, split: str = "test") -> EvalSummary | None:
    """Evaluate the run on ``split`` unless ``eval/<split>/summary.json`` exists; returns the new summary."""
    run = RunDir(Path(path))
    if run.summary(split).exists():
        return None
    from core.evaluate.runner import evaluate_run

    with _first_start_lock:
        if run.summary(split).exists():  # another session did it while we waited
            return None
        return evaluate_run(run.path, split, progress=False)


def first_start(path: Path | str | None = None, split: str = "test") -> list[str]:
    """Make the demo run (or ``path``) show real content: its synthetic data, then its evaluation; returns the
    steps done."""
    folder = Path(path) if path is not None else demo_dir()
    steps = first_start_steps(folder, split)
    if "data" in steps:
        ensure_run_data(folder)
    if "evaluate" in steps:
        ensure_evaluated(folder, split)
    return steps
