"""The process supervisor: launching training detached, resuming it and stopping it.

Training is launched as a detached process (``python -m core train --config RUN/config.yaml --out RUN``, its own
session, output in ``RUN/launcher.log``), so it outlives a page reload, a closed tab and the app itself. The app
keeps no state about it: everything comes back from the run folder (``core.catalogue`` reads it). ``stop`` sends
SIGTERM, on which the trainer finishes its step, saves and marks itself stopped; it signals only a live process
whose command line is our trainer.

Nothing here imports streamlit, and torch only inside the functions that need it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from core import project_root
from core.catalogue import LAUNCHER_LOG, STOP_MARKER, RunInfo, run_info, runs_root
from core.config import Config, DataConfig, config_from_dict
from core.errors import ConfigError, DataError, StudioError
from core.fileio import atomic_write_text
from core.run.folder import RunDir
from core.run.processes import is_trainer, pid_alive, register_child
from core.run.status import write_status

PROJECT_ROOT = project_root()  # $IDRID_STUDIO_HOME, else this checkout, else the cwd (an installed package)


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
    register_child(child)
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
    run = info.run
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
