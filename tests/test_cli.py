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
    """A new interpreter: only for what needs one (the entry point itself, ``--help`` of every command)."""
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def _main(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """``python -m core`` in this process: exit code, stdout, stderr."""
    from core.__main__ import main

    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


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


def test_metadata_command_writes_and_summarises(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_idrid(tmp_path / "data")
    out = tmp_path / "meta.json"
    code, stdout, stderr = _main(capsys, "metadata", "--root", str(root), "--out", str(out), "--seed", "3")
    assert code == 0, stderr
    assert "train" in stdout and f"wrote {out}" in stdout
    document = json.loads(out.read_text())
    assert document["seed"] == 3 and len(document["samples"]) == 24


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["metadata", "--root", "/definitely/not/here"], "dataset root /definitely/not/here does not exist"),
        (["metadata", "--root", "."], "is not an IDRiD folder"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    code, _, stderr = _main(capsys, *args)
    assert code == 2
    assert stderr.strip().count("\n") == 0 and message in stderr
    assert "Traceback" not in stderr


def test_a_user_error_in_a_new_interpreter_is_one_line_and_exit_2() -> None:
    """The one subprocess smoke test of the failure path: the real entry point, its exit status and stderr."""
    result = _run("metadata", "--root", "/definitely/not/here")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: dataset root /definitely/not/here does not exist"


def test_strict_stops_where_lenient_skips(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_idrid(tmp_path / "data")
    image = root / "A. Segmentation" / "1. Original Images" / "a. Training Set" / "IDRiD_02.jpg"
    image.write_bytes(b"garbage")
    code, _, stderr = _main(capsys, "metadata", "--root", str(root), "--out", str(tmp_path / "s.json"), "--strict")
    assert code == 2 and "IDRiD_02.jpg" in stderr
    assert not (tmp_path / "s.json").exists()
    code, stdout, _ = _main(capsys, "metadata", "--root", str(root), "--out", str(tmp_path / "l.json"))
    assert code == 0 and "skipped 1 bad sample" in stdout and "IDRiD_02.jpg" in stdout
