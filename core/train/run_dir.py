"""A run folder (``checkpoints/NAME``) and the files in it: ``RunDir`` names every one (config, status, logs, weights).

Whole files (config, status, weights, state) are written atomically. The two JSON-lines logs grow by appending
one complete line per write, so a reader may at worst see a last line cut by a kill; ``read_jsonl`` skips it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.fileio import atomic_write_text
from core.vocabulary import TASKS

STATES = ("pending", "running", "finished", "failed", "stopped")


@dataclass(frozen=True)
class RunDir:
    path: Path

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
    def state(self) -> Path:
        return self.path / "state" / "last.pt"

    def eval_dir(self, split: str) -> Path:
        return self.path / "eval" / split


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """One ``write`` of one whole line with O_APPEND: concurrent readers never see half a line except after a kill."""
    line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All complete records; a missing file is an empty log, a torn last line is dropped."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_jsonl(path: Path, keep: callable) -> None:
    """Drop records a resumed run will write again (those after the step it resumes from)."""
    records = [r for r in read_jsonl(path) if keep(r)]
    atomic_write_text(path, "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))


def write_status(run: RunDir, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into status.json; ``updated`` is stamped on every write."""
    status = read_status(run) or {}
    status.update(fields)
    status["updated"] = time.time()
    atomic_write_text(run.status, json.dumps(status, indent=1) + "\n")
    return status


def read_status(run: RunDir) -> dict[str, Any] | None:
    try:
        return json.loads(run.status.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def trained_tasks(run: RunDir) -> tuple[str, ...]:
    """The tasks the run's train split held labels for, read from the split it saved (metadata.json).

    A run trained on one task never trained its gate (its target was constant), so whoever predicts with it must
    route to that expert instead of asking the gate. Both tasks when the run has no readable split.
    """
    both = TASKS
    try:
        document = json.loads(run.metadata.read_text(encoding="utf-8"))
        vectors = [s["task_vector"] for s in document["samples"] if s.get("split") == "train"]
    except (OSError, ValueError, KeyError, TypeError):
        return both
    found = tuple(task for index, task in enumerate(both) if any(v[index] for v in vectors))
    return found or both
