"""``RunDir``: a run folder and the name of every file in it, so that no other module spells a file name.

A run is passed around as a ``RunDir``; ``RunDir.of`` accepts the path a user typed as well.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigError
from core.vocabulary import TASKS

GRADER_FILE = "grader.safetensors"
EVAL_FILES = ("summary.json", "predictions.csv", "curves.json", "masks")
SPLITS = ("test", "val", "train")



@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def of(cls, run: RunDir | Path | str | os.PathLike[str]) -> RunDir:
        """``run`` as a RunDir (a path is taken as it is: no check that it holds a run)."""
        return run if isinstance(run, RunDir) else cls(Path(run))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def status(self) -> Path:
        return self.path / "status.json"

    @property
    def log(self) -> Path:
        return self.path / "log.jsonl"

    @property
    def history(self) -> Path:
        return self.path / "history.jsonl"

    @property
    def console(self) -> Path:
        return self.path / "train.log"

    @property
    def metadata(self) -> Path:
        return self.path / "metadata.json"

    @property
    def weights(self) -> Path:
        return self.path / "weights"

    def weights_file(self, which: str = "best") -> Path:
        return self.weights / f"{which}.safetensors"

    @property
    def grader(self) -> Path:
        """The lesion grader fitted after training (``core.infer.evidence``)."""
        return self.weights / GRADER_FILE

    @property
    def gate_report(self) -> Path:
        """What ``python -m core fit-gate`` fitted onto the run (core.train.posthoc), when it did."""
        return self.weights / "fit-gate.json"

    @property
    def grader_report(self) -> Path:
        return self.weights / "grader.json"

    @property
    def operating_point(self) -> Path:
        """How ``infer.gate_threshold`` was chosen (core.train.operating_point)."""
        return self.weights / "operating_point.json"

    @property
    def has_weights(self) -> bool:
        return self.weights.is_dir() and any(self.weights.glob("*.safetensors"))

    def resolve_weights(self, which: str = "best") -> Path:
        """The weights file ``which`` names: ``best``/``last`` (each falls back on the other) or a file path."""
        if which.endswith(".safetensors") or "/" in which:
            return Path(which)
        path = self.weights_file(which)
        if path.exists():
            return path
        fallback = self.weights_file("last" if which == "best" else "best")
        if fallback.exists():
            return fallback
        found = sorted(self.weights.glob("*")) if self.weights.exists() else []
        if found:
            raise ConfigError(f"run {self.path} holds {', '.join(p.name for p in found)} but no .safetensors "
                              "weights; only safetensors weights are loaded")
        raise ConfigError(f"run {self.path} has no weights yet (weights/best.safetensors): has it finished an epoch?")

    @property
    def state(self) -> Path:
        return self.path / "state" / "last.pt"

    def eval_dir(self, split: str) -> Path:
        return self.path / "eval" / split

    def summary(self, split: str) -> Path:
        return self.eval_dir(split) / "summary.json"

    def predictions(self, split: str) -> Path:
        return self.eval_dir(split) / "predictions.csv"

    def curves(self, split: str) -> Path:
        return self.eval_dir(split) / "curves.json"

    def evaluated_splits(self) -> tuple[str, ...]:
        """The splits with a saved evaluation, test first."""
        return tuple(s for s in SPLITS if self.summary(s).exists())

    def trained_tasks(self) -> tuple[str, ...]:
        """The tasks the run's train split held labels for, read from the split it saved (metadata.json).

        A run trained on one task never trained its gate (its target was constant), so whoever predicts with it
        must route to that expert instead of asking the gate. Both tasks when the run has no readable split.
        """
        try:
            document = json.loads(self.metadata.read_text(encoding="utf-8"))
            vectors = [s["task_vector"] for s in document["samples"] if s.get("split") == "train"]
        except (OSError, ValueError, KeyError, TypeError):
            return TASKS
        found = tuple(task for index, task in enumerate(TASKS) if any(v[index] for v in vectors))
        return found or TASKS


def mask_file(folder: Path, sample_id: str, lesion: str) -> Path:
    """Where an evaluation or a folder prediction keeps one lesion's probability map of one image."""
    return Path(folder) / "masks" / f"{sample_id.replace('/', '__')}_{lesion}.png"
