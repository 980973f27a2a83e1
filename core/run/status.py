"""``status.json``: the state a run is in, its trainer's pid and progress; rewritten whole (atomically) each time."""

from __future__ import annotations

import json
import time
from typing import Any

from core.fileio import atomic_write_text
from core.run.folder import RunDir

STATES = ("pending", "running", "finished", "failed", "stopped")
ACTIVE = ("pending", "running")


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
