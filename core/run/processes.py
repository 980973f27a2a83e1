"""Whether the trainer a run's status names is alive: the pid is live, not a zombie, and runs ``python -m core train``.

A status file outlives its process (a kill, a reboot), and pids are reused, so a pid alone proves nothing.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

_children: dict[int, subprocess.Popen] = {}  # launched by this process: polled, so they never linger as zombies


def register_child(child: subprocess.Popen) -> None:
    """A trainer this process started: ``pid_alive`` polls it (reaping it) instead of signalling its pid."""
    _children[child.pid] = child


def pid_alive(pid: Any) -> bool:
    """Whether ``pid`` is a live process (a zombie, an exited child not yet reaped, counts as dead)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False
    except (OSError, IndexError):
        pass
    return True


def process_args(pid: int) -> list[str] | None:
    """The command line of ``pid``: /proc on Linux, ``ps`` elsewhere; None when it cannot be read."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    except OSError:
        pass
    try:
        out = subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.split() or None


def is_trainer(pid: Any) -> bool:
    """A live process running ``python -m core train`` (directly or as a torchrun worker)."""
    if not pid_alive(pid):
        return False
    args = process_args(pid)
    if not args:
        return False
    for index, arg in enumerate(args[:-1]):
        if arg == "core" and index > 0 and args[index - 1] == "-m" and "train" in args[index + 1:]:
            return True
    return False
