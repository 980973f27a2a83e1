"""``python -m core``: every command answers --help; user errors print one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from builders import make_idrid
from core.cli import COMMAND_MODULES

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_top_level_help_lists_every_command() -> None:
    result = _run("--help")
    assert result.returncode == 0
    for name in COMMAND_MODULES:
        assert name.replace("_", "-") in result.stdout  # a module fit_grader is the command fit-grader


@pytest.mark.parametrize("command", COMMAND_MODULES)
def test_each_command_has_help(command: str) -> None:
    command = command.replace("_", "-")
    result = _run(command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: python -m core " + command in result.stdout


def test_metadata_command_writes_and_summarises(tmp_path: Path) -> None:
    root = make_idrid(tmp_path / "data")
    out = tmp_path / "meta.json"
    result = _run("metadata", "--root", str(root), "--out", str(out), "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert "train" in result.stdout and f"wrote {out}" in result.stdout
    document = json.loads(out.read_text())
    assert document["seed"] == 3 and len(document["samples"]) == 24


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["metadata", "--root", "/definitely/not/here"], "dataset root /definitely/not/here does not exist"),
        (["metadata", "--root", "."], "is not an IDRiD folder"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = _run(*args)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_strict_stops_where_lenient_skips(tmp_path: Path) -> None:
    root = make_idrid(tmp_path / "data")
    image = root / "A. Segmentation" / "1. Original Images" / "a. Training Set" / "IDRiD_02.jpg"
    image.write_bytes(b"garbage")
    strict = _run("metadata", "--root", str(root), "--out", str(tmp_path / "s.json"), "--strict")
    assert strict.returncode == 2 and "IDRiD_02.jpg" in strict.stderr
    assert not (tmp_path / "s.json").exists()
    lenient = _run("metadata", "--root", str(root), "--out", str(tmp_path / "l.json"))
    assert lenient.returncode == 0 and "skipped 1 bad sample" in lenient.stdout and "IDRiD_02.jpg" in lenient.stdout
