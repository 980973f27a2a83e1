"""The run's JSON-lines logs (``log.jsonl`` per step, ``history.jsonl`` per epoch).

They grow by appending one complete line per write, so a reader may at worst see a last line cut by a kill;
``read_jsonl`` skips it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.fileio import atomic_write_text


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


def truncate_jsonl(path: Path, keep: Callable[[dict[str, Any]], bool]) -> None:
    """Drop records a resumed run will write again (those after the step it resumes from)."""
    records = [r for r in read_jsonl(path) if keep(r)]
    atomic_write_text(path, "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
