"""Runs as the app sees them: listing the folders under ``checkpoints/``, launching and stopping training, first start.

Training is launched as a detached process (``python -m core train --config RUN/config.yaml --out RUN``, its own
session, output in ``RUN/launcher.log``), so it outlives a page reload, a closed tab and the app itself. The app
keeps no state about it: everything comes back from the run folder. ``status.json`` records the trainer's pid; a
run whose status says pending or running but whose pid is gone (or now belongs to another program) is shown as
``interrupted``, or ``stopped`` when the app asked it to stop. ``stop`` sends SIGTERM, on which the trainer
finishes its step, saves and marks itself stopped; it signals only a live process whose command line is our trainer.

``first_start`` makes the shipped demo run complete on a fresh clone: it generates the synthetic data the demo was
trained on (about 15 s) and evaluates the demo on its test split (10-20 s) when ``eval/test`` is missing.

Nothing here imports streamlit, and torch only inside the functions that need it, so listing runs stays instant.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import project_root
from core.config import Config, DataConfig, SynthConfig, config_from_dict, load_config
from core.errors import ConfigError, DataError, StudioError
from core.fileio import atomic_write_text
from core.train.run_dir import RunDir, read_status, write_status

PROJECT_ROOT = project_root()  # $IDRID_STUDIO_HOME, else this checkout, else the cwd (an installed package)
DEMO_NAME = "demo"
REAL_NAME = "idrid"  # the shipped run trained on real IDRiD photographs (configs/idrid-full-cpu.yaml)
SHIPPED = (DEMO_NAME, REAL_NAME)
LAUNCHER_LOG = "launcher.log"  # the trainer process's stdout and stderr (train.log is the trainer's own log)
STOP_MARKER = ".stop-requested"
ACTIVE = ("pending", "running")


def runs_root() -> Path:
    """``$IDRID_STUDIO_RUNS`` or the project's ``checkpoints/`` folder."""
    env = os.environ.get("IDRID_STUDIO_RUNS")
    return Path(env).expanduser() if env else PROJECT_ROOT / "checkpoints"


def demo_dir(root: Path | None = None) -> Path:
    return Path(root or runs_root()) / DEMO_NAME


# -- processes -------------------------------------------------------------------------------------------------

_children: dict[int, subprocess.Popen] = {}  # launched by this process: polled, so they never linger as zombies


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
    evaluated: tuple[str, ...] = ()  # splits with eval/<split>/summary.json
    data_source: str | None = None  # synthetic, folder or metadata (from config.yaml), None if unreadable
    error: str | None = None

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
    state = status.get("state") if status.get("state") in ("pending", "running", "finished", "failed",
                                                              "stopped") else "no status"
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
        error = "no status.json: the run was never started, or its folder is incomplete"
    weights = run.weights
    has_weights = weights.is_dir() and any(weights.glob("*.safetensors"))
    evaluated = tuple(s for s in ("test", "val", "train") if (run.eval_dir(s) / "summary.json").exists())
    return RunInfo(run.path.name, run.path, state, status, alive, has_config, has_weights, evaluated, source, error)


def is_run_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "config.yaml").exists() or (path / "status.json").exists())


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
        raise ConfigError(f"{folder} is not a run folder (it has neither config.yaml nor status.json)")
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


# -- launching and stopping ------------------------------------------------------------------------------------

def slug(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip("-._")
    return cleaned[:60] or "run"


def check_data(data: DataConfig) -> DataConfig:
    """Paths made absolute (the trainer runs in the project folder) and checked to exist before a launch."""
    data = dataclasses.replace(data)
    if data.source == "folder":
        if not data.roots:
            raise DataError("no dataset folder given: enter the IDRiD root (one per line for one root per half)")
        roots = []
        for root in data.roots:
            path = Path(str(root).strip()).expanduser()
            if not path.is_absolute():
                path = (PROJECT_ROOT / path).resolve()
            if not path.exists():
                raise DataError(f"dataset folder {path} does not exist")
            if not path.is_dir():
                raise DataError(f"dataset path {path} is a file, not a folder")
            roots.append(str(path))
        data.roots = roots
    elif data.source == "metadata":
        if not data.metadata:
            raise DataError("no metadata file given (a balanced_idrid_metadata.json)")
        path = Path(data.metadata.strip()).expanduser()
        if not path.is_absolute():
            path = (PROJECT_ROOT / path).resolve()
        if not path.is_file():
            raise DataError(f"metadata file {path} does not exist")
        data.metadata = str(path)
    return data


def _claim_folder(root: Path, name: str) -> Path:
    """A new, empty run folder named ``name`` (or ``name-2``, ``name-3``...); mkdir is the atomic claim."""
    root.mkdir(parents=True, exist_ok=True)
    base = slug(name)
    for index in range(1, 1000):
        folder = root / (base if index == 1 else f"{base}-{index}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise ConfigError(f"too many runs named {base!r} in {root}")


def _popen(args: list[str], folder: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1", TQDM_MININTERVAL="5")
    with open(folder / LAUNCHER_LOG, "ab") as log:
        child = subprocess.Popen(
            args, cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
        )
    _children[child.pid] = child
    return child


def launch(config: Config, root: Path | str | None = None, name: str | None = None) -> RunInfo:
    """Write ``RUN/config.yaml`` and a pending status, then start the trainer detached; returns the new run.

    The config is validated and its data paths checked first, so a bad value or a missing folder is a
    ``StudioError`` here and no folder is created.
    """
    config = config_from_dict(config.to_dict())  # validates ranges as the CLI would
    config.data = check_data(config.data)
    folder = _claim_folder(Path(root) if root is not None else runs_root(), name or config.name)
    config.name = folder.name
    run = RunDir(folder)
    atomic_write_text(run.config, config.to_yaml())
    write_status(run, state="pending", pid=None, epoch=0, epochs=config.train.epochs, step=0, steps=None,
                 eta_s=None, started=time.time(), error=None, launched_by="app")
    args = [sys.executable, "-m", "core", "train", "--config", str(run.config), "--out", str(folder)]
    try:
        child = _popen(args, folder)
    except OSError as error:
        write_status(run, state="failed", error=f"could not start the trainer: {error}")
        raise StudioError(f"could not start the trainer: {error}") from None
    write_status(run, pid=child.pid)
    return run_info(folder)


def resume(path: Path | str) -> RunInfo:
    """Continue a stopped or interrupted run from its saved state (``python -m core train --resume``)."""
    info = run_info(path)
    run = RunDir(info.path)
    if info.active:
        raise StudioError(f"run {info.name} is still running")
    if not run.state.exists():
        raise StudioError(f"run {info.name} has no saved state to resume from ({run.state} is missing)")
    (info.path / STOP_MARKER).unlink(missing_ok=True)
    write_status(run, state="pending", pid=None, error=None)
    child = _popen([sys.executable, "-m", "core", "train", "--resume", "--out", str(info.path)], info.path)
    write_status(run, pid=child.pid)
    return run_info(info.path)


def stop(path: Path | str, wait: float = 0.0) -> RunInfo:
    """Ask a running trainer to stop (SIGTERM: it finishes the step, saves and marks itself stopped).

    Only a live process whose command line is ``python -m core train`` is signalled; ``wait`` seconds are spent
    waiting for it to exit.
    """
    info = run_info(path)
    pid = info.status.get("pid")
    if not info.active:
        raise StudioError(f"run {info.name} is not running (state: {info.state}); there is nothing to stop")
    if not is_trainer(pid):
        raise StudioError(f"process {pid} recorded for run {info.name} is not its trainer; not signalling it")
    atomic_write_text(info.path / STOP_MARKER, json.dumps({"requested": time.time(), "pid": pid}) + "\n")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.time() + wait
    while wait and time.time() < deadline and pid_alive(pid):
        time.sleep(0.2)
    return run_info(info.path)


# -- first start -----------------------------------------------------------------------------------------------

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
    has_weights = run.weights.is_dir() and any(run.weights.glob("*.safetensors"))
    if has_weights and not (run.eval_dir(split) / "summary.json").exists():
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


def ensure_evaluated(path: Path | str, split: str = "test") -> dict[str, Any] | None:
    """Evaluate the run on ``split`` unless ``eval/<split>/summary.json`` exists; returns the new summary."""
    run = RunDir(Path(path))
    if (run.eval_dir(split) / "summary.json").exists():
        return None
    from core.evaluate.runner import evaluate_run

    with _first_start_lock:
        if (run.eval_dir(split) / "summary.json").exists():  # another session did it while we waited
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
