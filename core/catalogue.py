"""The run catalogue: the run folders under ``checkpoints/`` as the app lists them, and what state each is really in.

The app keeps no state about a run: everything comes back from the run folder. ``status.json`` records the
trainer's pid; a run whose status says pending or running but whose pid is gone (or now belongs to another program)
is shown as ``interrupted``, or ``stopped`` when the app asked it to stop. The trainer's console output is in
``RUN/launcher.log`` (``core.runs`` launches it), whose last error line says why an interrupted run ended.

Nothing here imports streamlit, and torch only inside the functions that need it, so listing runs stays instant.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import project_root
from core.config import load_config
from core.errors import ConfigError, StudioError
from core.run.folder import RunDir
from core.run.processes import is_trainer
from core.run.status import ACTIVE, STATES, read_status

PROJECT_ROOT = project_root()  # $IDRID_STUDIO_HOME, else this checkout, else the cwd (an installed package)
DEMO_NAME = "demo"
REAL_NAME = "idrid"  # the shipped run trained on real IDRiD photographs (configs/idrid-full-cpu.yaml)
SHIPPED = (DEMO_NAME, REAL_NAME)
LAUNCHER_LOG = "launcher.log"  # the trainer process's stdout and stderr (train.log is the trainer's own log)
STOP_MARKER = ".stop-requested"


def runs_root() -> Path:
    """``$IDRID_STUDIO_RUNS`` or the project's ``checkpoints/`` folder."""
    env = os.environ.get("IDRID_STUDIO_RUNS")
    return Path(env).expanduser() if env else PROJECT_ROOT / "checkpoints"


def demo_dir(root: Path | None = None) -> Path:
    return Path(root or runs_root()) / DEMO_NAME


# -- listing ---------------------------------------------------------------------------------------------------

@dataclass
class RunInfo:
    """One run folder as the app lists it."""

    name: str
    path: Path
    state: str  # pending, running, finished, failed, stopped, interrupted, or "no status" (a half-written folder)
    status: dict[str, Any] = field(default_factory=dict)
    alive: bool = False  # its trainer process is running now
    has_config: bool = False
    has_weights: bool = False
    evaluated: tuple[str, ...] = ()  # splits with a saved evaluation (RunDir.evaluated_splits)
    data_source: str | None = None  # synthetic, folder or metadata (from the run's config), None if unreadable
    error: str | None = None

    @property
    def run(self) -> RunDir:
        """The run folder, for the name of each file in it."""
        return RunDir(self.path)

    @property
    def is_demo(self) -> bool:
        return self.name == DEMO_NAME

    @property
    def is_shipped(self) -> bool:
        """The demo or the real-data run that come with the repository, not one of the user's own."""
        return self.name in SHIPPED

    @property
    def active(self) -> bool:
        return self.alive and self.state in ACTIVE

    @property
    def synthetic(self) -> bool:
        return self.data_source == "synthetic"

    @property
    def updated(self) -> float:
        value = self.status.get("updated") or self.status.get("started")
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return self.path.stat().st_mtime
        except OSError:
            return 0.0

    def progress(self) -> dict[str, Any]:
        """Fraction done and a one-line description: epoch, step and ETA."""
        status = self.status
        step, steps = _count(status.get("step")) or 0, _count(status.get("steps"))
        epoch, epochs = _count(status.get("epoch")) or 0, _count(status.get("epochs"))
        fraction = min(1.0, step / steps) if isinstance(steps, int) and steps > 0 else 0.0
        if self.state == "finished":
            fraction = 1.0
        shown_epoch = min(epoch + 1, epochs) if self.state in ACTIVE and epochs else epoch
        parts = [f"epoch {shown_epoch}/{epochs if epochs else '?'}", f"step {step}/{steps if steps else '?'}"]
        eta = status.get("eta_s")
        if self.active and isinstance(eta, (int, float)):
            parts.append(f"ETA {format_seconds(eta)}")
        elif self.active and self.state == "pending":
            parts.append("preparing data and model")
        return {"fraction": fraction, "text": " · ".join(parts), "step": step, "steps": steps, "epoch": epoch,
                "epochs": epochs, "eta_s": eta}


def _count(value: Any) -> int | None:
    """A non-negative integer from status.json, None for anything else (a damaged file must not break a page)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
        return None
    return int(value)


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _data_source(run: RunDir) -> tuple[str | None, str | None]:
    try:
        return load_config(run.config).data.source, None
    except StudioError as error:
        return None, str(error)


def run_info(path: Path | str) -> RunInfo:
    """What a run folder holds and what state it is really in; never raises for a damaged folder."""
    run = RunDir(Path(path))
    try:
        status = read_status(run) or {}
    except (OSError, ValueError):  # unreadable or not text
        status = {}
    if not isinstance(status, dict):
        status = {}
    has_config = run.config.exists()
    source, error = _data_source(run) if has_config else (None, None)
    state = status.get("state") if status.get("state") in STATES else "no status"
    alive = False
    if state in ACTIVE:
        alive = is_trainer(status.get("pid"))
        if not alive:
            state = "stopped" if (run.path / STOP_MARKER).exists() else "interrupted"
    if state == "failed" and status.get("error"):
        error = status["error"]
    elif state == "interrupted":
        error = launcher_error(run.path) or "its process ended without saying why (killed, or the machine restarted)"
    elif state == "no status" and not error:
        error = f"no {run.status.name}: the run was never started, or its folder is incomplete"
    return RunInfo(run.path.name, run.path, state, status, alive, has_config, run.has_weights,
                   run.evaluated_splits(), source, error)


def is_run_folder(path: Path) -> bool:
    run = RunDir(Path(path))
    return run.path.is_dir() and (run.config.exists() or run.status.exists())


def list_runs(root: Path | str | None = None) -> list[RunInfo]:
    """Every run folder under ``root`` (default ``runs_root()``), newest first, the demo last."""
    root = Path(root) if root is not None else runs_root()
    if not root.is_dir():
        return []
    try:
        folders = [p for p in root.iterdir() if not p.name.startswith(".") and is_run_folder(p)]
    except OSError:
        return []
    runs = [run_info(p) for p in folders]
    return sorted(runs, key=lambda r: (r.is_shipped, -r.updated, r.name))


def open_run(path: Path | str) -> RunInfo:
    """A run folder a user typed in: a clear error when it is missing or not a run."""
    folder = Path(str(path).strip()).expanduser()
    if not str(path).strip():
        raise ConfigError("no run folder given")
    if not folder.exists():
        raise ConfigError(f"run folder {folder} does not exist")
    if not folder.is_dir():
        raise ConfigError(f"{folder} is a file, not a run folder")
    if not is_run_folder(folder):
        run = RunDir(folder)
        raise ConfigError(f"{folder} is not a run folder (it has neither {run.config.name} nor {run.status.name})")
    return run_info(folder)


def launcher_error(path: Path) -> str | None:
    """The last meaningful line of the launcher log (an ``error: ...`` line or a traceback's last line)."""
    lines = [line.strip() for line in read_tail(Path(path) / LAUNCHER_LOG, 40).splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error:") or re.match(r"^[A-Za-z_.]+(Error|Exception|Interrupt)\b", line):
            return line
    return None


def read_tail(path: Path, lines: int = 40, max_bytes: int = 64_000) -> str:
    """The last ``lines`` lines of a text file (progress-bar carriage returns resolved), "" if missing."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    rows = [row.rsplit("\r", 1)[-1] for row in text.split("\n")]
    return "\n".join(row for row in rows[-lines - 1:] if row.strip())


def log_tail(path: Path | str, lines: int = 40) -> str:
    """The trainer's log (train.log), or its console output when the trainer never got to write one."""
    path = Path(path)
    text = read_tail(RunDir(path).console, lines)
    return text or read_tail(path / LAUNCHER_LOG, lines)
