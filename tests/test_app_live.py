"""The sidebar while a run trains: its label does not go stale, and a line under it follows the trainer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.config import Config
from core.run.folder import RunDir
from core.run.status import write_status
from studio_helpers import start


@pytest.fixture
def live_trainer():
    """A process whose command line is a trainer's (``-m core train``), as ``core.run.processes`` checks."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "-m", "core", "train"])
    yield process
    process.kill()
    process.wait()


def test_a_training_run_reads_training_and_its_live_line_follows_the_status(tmp_path: Path, live_trainer,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "checkpoints"
    run = RunDir(root / "mine")
    run.path.mkdir(parents=True)
    run.config.write_text(Config(name="mine").to_yaml())
    write_status(run, state="pending", pid=live_trainer.pid, epoch=0, epochs=2, step=0, steps=None)
    monkeypatch.setenv("IDRID_STUDIO_RUNS", str(root))
    at = start()
    picker = at.selectbox(key="run_choice")
    assert picker.value == "mine"
    assert picker.format_func("mine") == "mine · training"  # neither "pending" nor "running": both go stale
    captions = [c.value for c in at.sidebar.caption]
    assert any("**mine** pending" in c and "preparing data and model" in c for c in captions), captions
    write_status(run, state="running", step=7, steps=20, epoch=0, eta_s=65.0)
    at.run()
    captions = [c.value for c in at.sidebar.caption]
    assert any("**mine** running" in c and "step 7/20" in c and "ETA 1:05" in c for c in captions), captions
    live_trainer.kill()
    live_trainer.wait()
    at.run()
    assert at.selectbox(key="run_choice").format_func("mine") == "mine · interrupted"
    assert not any("**mine** running" in c.value for c in at.sidebar.caption)


def test_predict_defaults_to_the_real_model_even_when_the_sidebar_shows_a_run_of_ones_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a user trained a run, every session's sidebar opened on it and real photographs went to that one-epoch
    model with no choice; now the real model is the default and the user's run one click away."""
    from studio_helpers import copy_demo, copy_real

    root = tmp_path / "checkpoints"
    copy_real(root)
    copy_demo(root, tmp_path / "synthetic")
    mine = copy_demo(root, tmp_path / "synthetic", name="mine")
    write_status(RunDir(mine), state="finished", step=4, steps=4, epoch=1, epochs=1)
    monkeypatch.setenv("IDRID_STUDIO_RUNS", str(root))
    at = start("predict")
    assert at.selectbox(key="run_choice").value == "mine"  # the sidebar keeps the user's newest run
    model = at.button_group(key="predict_model")
    assert model.value == "idrid"
    assert model.options == ["Real IDRiD model (idrid)", "Synthetic demo (demo)", "Your run (mine)"]
    model.set_value("mine").run()
    assert not at.exception and at.button_group(key="predict_model").value == "mine"
