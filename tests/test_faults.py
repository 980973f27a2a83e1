"""Faults outside the program's control: a trainer killed outright, and workers that would re-run the app.

SIGTERM (the Train page's Stop) is tested in test_train.py; SIGKILL gives the trainer no chance to save or say
anything, as an out-of-memory kill or a pulled plug would not.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from builders import FixtureSpec, make_idrid
from core import catalogue
from core.run.folder import RunDir
from core.run.logs import read_jsonl
from core.run.state import load_state
from core.run.weights import read_weights

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path, root: Path) -> Path:
    config = {
        "name": "killed",
        "data": {"source": "folder", "roots": [str(root)], "image_size": 64, "samples_per_epoch": 400,
                 "cache_dir": str(tmp_path / "cache")},
        "model": {"decoder_channels": [32, 16, 16, 8], "gate_hidden": 16},
        "train": {"epochs": 1, "batch_size": 4, "seed": 3, "checkpoint_every": 2, "log_every": 1},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_a_trainer_killed_mid_epoch_leaves_a_readable_interrupted_run_that_resumes(tmp_path: Path) -> None:
    root = make_idrid(tmp_path / "data", FixtureSpec(seg={"train": 6}, grading={"train": 10}))
    out = tmp_path / "run"
    run = RunDir(out)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "core", "train", "--config", str(_config(tmp_path, root)),
                                "--out", str(out)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=env)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not (run.state.exists() and len(read_jsonl(run.log)) >= 5):
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL
    status = json.loads(run.status.read_text())  # whole: written atomically, never torn by the kill
    assert status["state"] == "running" and status["step"] < 100  # killed mid-epoch: the file says nothing else
    info = catalogue.run_info(out)
    assert info.state == "interrupted" and not info.alive and "ended without saying why" in info.error
    saved = load_state(run.state)  # the last mid-epoch state loads
    logged = [r["step"] for r in read_jsonl(run.log)]  # a line torn by the kill is dropped, the rest read
    assert logged == list(range(1, len(logged) + 1)) and logged[-1] >= 5
    if run.has_weights:
        read_weights(run.weights_file("last" if run.weights_file("last").exists() else "best"))
    resumed = subprocess.run([sys.executable, "-m", "core", "train", "--out", str(out), "--resume",
                              f"train.max_steps={logged[-1] + 3}"], cwd=ROOT, capture_output=True, text=True,
                             timeout=300, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    steps = [r["step"] for r in read_jsonl(run.log)]
    assert steps == list(range(1, logged[-1] + 4))  # steps after the saved state run again, once; none lost
    final = json.loads(run.status.read_text())
    assert final["step"] == logged[-1] + 3 and final["state"] in ("finished", "stopped")
    assert catalogue.run_info(out).state == final["state"]
    assert saved  # the state it resumed from was there before the resume


def test_synthetic_workers_do_not_run_the_callers_script(tmp_path: Path) -> None:
    """Spawned workers import the parent's main script first; under ``streamlit run`` that is the app, which then
    printed 110 lines of bare-mode warnings on the first start. A script stands in for the app here: each import
    of it leaves a line in a file."""
    marker = tmp_path / "imports.txt"
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent(f"""
        from pathlib import Path
        with open({str(marker)!r}, "a") as handle:
            handle.write(__name__ + "\\n")
        if __name__ == "__main__":
            from core.data.synth.generate import generate_dataset
            generate_dataset(Path({str(tmp_path / "synth")!r}), n_seg=2, n_cls=2, width=256, seed=0,
                             workers=2, progress=False)
    """))
    result = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "synth" / "synth.json").exists()
    assert marker.read_text().split() == ["__main__"]  # not once more per worker as "__mp_main__"
