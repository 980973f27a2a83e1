"""The run catalogue (core.catalogue: listing run folders, dead pids), the supervisor (core.runs: launching training
detached, finding it again, stopping it) and the first start (core.bootstrap)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from builders import FixtureSpec, make_idrid
from core import bootstrap, catalogue, runs
from core.config import Config, config_from_dict
from core.errors import ConfigError, DataError, StudioError
from core.run import processes
from core.run.folder import RunDir
from core.run.status import read_status, write_status
from studio_helpers import copy_demo

def tiny_config(data_root: Path, cache: Path, **train) -> Config:
    return config_from_dict({
        "name": "tiny",
        "data": {"source": "folder", "roots": [str(data_root)], "image_size": 64, "cache_dir": str(cache),
                 "augment": "none"},
        "model": {"decoder_channels": [16, 16, 8, 8], "gate_hidden": 16},
        "train": {"epochs": 1, "batch_size": 4, "max_steps": 2, "weights_dtype": "float16", "threads": 1, **train},
    })


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_idrid(tmp_path_factory.mktemp("runs-data"), FixtureSpec(seg={"train": 6, "test": 2},
                                                                          grading={"train": 8, "test": 2}))


def wait_for(predicate, timeout: float, what: str, path: Path | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    log = catalogue.read_tail(path / catalogue.LAUNCHER_LOG, 30) if path else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{log}")


@pytest.mark.slow
def test_launch_runs_detached_and_is_found_again(tmp_path: Path, dataset: Path) -> None:
    root = tmp_path / "checkpoints"
    info = runs.launch(tiny_config(dataset, tmp_path / "cache"), root=root, name="tiny run")
    assert info.name == "tiny-run" and info.state in ("pending", "running") and info.active
    pid = info.status["pid"]
    assert os.getsid(pid) == pid  # its own session: a closed tab or a stopped app does not take it down
    saved = yaml.safe_load(info.run.config.read_text())
    assert saved["name"] == "tiny-run" and saved["data"]["roots"] == [str(dataset)]

    processes._children.clear()  # as a freshly started app would: nothing but the folder to go by
    found = {r.name: r for r in catalogue.list_runs(root)}
    assert found["tiny-run"].state in ("pending", "running") and found["tiny-run"].alive

    done = wait_for(lambda: (r := catalogue.run_info(info.path)).state == "finished" and r, 180, "the run to finish",
                    info.path)
    assert done.has_weights and not done.alive
    assert done.progress()["fraction"] == 1.0
    assert "finished at epoch" in catalogue.log_tail(info.path)
    # a second launch with the same name gets its own folder
    second = runs._claim_folder(root, "tiny run")
    assert second.name == "tiny-run-2"


@pytest.mark.slow
def test_stop_ends_a_running_trainer_cleanly(tmp_path: Path, dataset: Path) -> None:
    root = tmp_path / "checkpoints"
    config = tiny_config(dataset, tmp_path / "cache", epochs=500, max_steps=None)
    info = runs.launch(config, root=root, name="long")
    run = info.run
    def stepping() -> bool:
        status = read_status(run) or {}
        return status.get("state") == "running" and status.get("step", 0) >= 1

    wait_for(stepping, 180, "the run to take a step", info.path)
    processes._children.clear()
    stopped = runs.stop(info.path, wait=60)
    assert stopped.state == "stopped" and not stopped.alive
    status = read_status(run)
    assert status["state"] == "stopped" and status["stop_reason"] == "stopped"  # the trainer's own clean stop
    assert run.state.exists() and run.weights_file("last").exists()
    with pytest.raises(StudioError, match="not running"):
        runs.stop(info.path)


def _fake_run(root: Path, name: str, **status) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    RunDir(folder).config.write_text(Config(name=name).to_yaml())
    write_status(RunDir(folder), **status)
    return folder


def test_dead_or_foreign_pid_is_interrupted_and_never_signalled(tmp_path: Path) -> None:
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    dead = _fake_run(tmp_path, "dead", state="running", pid=ended.pid, step=3, steps=10)
    foreign = _fake_run(tmp_path, "foreign", state="running", pid=os.getpid(), step=3, steps=10)
    (dead / catalogue.LAUNCHER_LOG).write_text("Traceback (most recent call last):\nRuntimeError: out of memory\n")
    listed = {r.name: r for r in catalogue.list_runs(tmp_path)}
    assert listed["dead"].state == "interrupted" and listed["dead"].error == "RuntimeError: out of memory"
    assert listed["foreign"].state == "interrupted"  # pytest is alive, but it is not our trainer
    with pytest.raises(StudioError, match="not running"):
        runs.stop(foreign)  # and this process is still here to say so
    assert not processes.pid_alive(ended.pid) and processes.pid_alive(os.getpid())
    assert not processes.is_trainer(os.getpid())
    assert not processes.pid_alive(None) and not processes.pid_alive("12")


def test_zombie_child_counts_as_dead(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    stat = Path(f"/proc/{child.pid}/stat")
    if not stat.exists():
        child.wait()
        pytest.skip("no /proc on this system")
    wait_for(lambda: stat.read_text().rsplit(")", 1)[1].split()[0] == "Z", 30, "the child to exit")
    assert not processes.pid_alive(child.pid)  # exited, not reaped: a zombie is not a running trainer
    child.wait()


def test_stop_marker_turns_a_killed_pending_run_into_stopped(tmp_path: Path) -> None:
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    folder = _fake_run(tmp_path, "early", state="pending", pid=ended.pid)
    (folder / catalogue.STOP_MARKER).write_text("{}")
    assert catalogue.run_info(folder).state == "stopped"


def test_listing_half_written_and_foreign_folders(tmp_path: Path) -> None:
    half = tmp_path / "half"
    half.mkdir()
    RunDir(half).config.write_text(Config(name="half").to_yaml())
    broken = tmp_path / "broken"
    broken.mkdir()
    RunDir(broken).config.write_text("data: [unclosed\n")
    RunDir(broken).status.write_text("{not json")
    odd = tmp_path / "odd"
    odd.mkdir()
    RunDir(odd).status.write_text('{"state": "running", "pid": "12", "step": "a", "steps": -1, "eta_s": "x"}')
    listed_odd = catalogue.run_info(odd)
    assert listed_odd.state == "interrupted" and listed_odd.progress()["fraction"] == 0.0
    RunDir(odd).status.write_bytes(b"[1, 2]")
    assert catalogue.run_info(odd).state == "no status"
    RunDir(odd).status.write_bytes(b"\xff\xfe\x00garbage")
    assert catalogue.run_info(odd).state == "no status"
    shutil.rmtree(odd)
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    listed = {r.name: r for r in catalogue.list_runs(tmp_path)}
    assert set(listed) == {"half", "broken"}
    assert listed["half"].state == "no status" and not listed["half"].has_weights
    assert listed["broken"].state == "no status" and "not readable YAML" in listed["broken"].error
    assert catalogue.list_runs(tmp_path / "missing") == []
    with pytest.raises(ConfigError, match="does not exist"):
        catalogue.open_run(tmp_path / "missing")
    with pytest.raises(ConfigError, match="not a run folder"):
        catalogue.open_run(tmp_path / "not-a-run")


def test_launch_refuses_bad_data_and_config_without_creating_a_folder(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    config = config_from_dict({"data": {"source": "folder", "roots": [str(tmp_path / "nowhere")]}})
    with pytest.raises(DataError, match="does not exist"):
        runs.launch(config, root=root)
    bad = Config()
    bad.train.epochs = 0
    with pytest.raises(ConfigError, match="epochs"):
        runs.launch(bad, root=root)
    metadata = config_from_dict({"data": {"source": "metadata", "metadata": str(tmp_path / "none.json")}})
    with pytest.raises(DataError, match="metadata file"):
        runs.launch(metadata, root=root)
    assert not root.exists() or not any(root.iterdir())


def test_first_start_generates_data_then_evaluates(tmp_path: Path) -> None:
    demo = copy_demo(tmp_path / "checkpoints", synthetic=tmp_path / "synthetic")
    assert bootstrap.first_start_steps(demo) == ["data", "evaluate"]
    assert bootstrap.first_start(demo) == ["data", "evaluate"]
    summary = json.loads(RunDir(demo).summary("test").read_text())
    assert summary["split"] == "test" and summary["n"] > 0
    assert (tmp_path / "synthetic" / "A. Segmentation").is_dir()
    assert bootstrap.first_start_steps(demo) == [] and bootstrap.first_start(demo) == []
    info = catalogue.run_info(demo)
    assert info.is_demo and info.synthetic and info.evaluated == ("test",) and info.state == "finished"


def test_synthetic_ready_agrees_with_ensure_synthetic(tmp_path: Path) -> None:
    from core.config import SynthConfig
    from core.data import sources
    from core.data.sources import ensure_synthetic

    config = SynthConfig(out=str(tmp_path / "synthetic"), n_seg=2, n_cls=4, width=256)
    assert not sources.synthetic_ready(config)
    ensure_synthetic(config, progress=False)
    assert sources.synthetic_ready(config)
    assert not sources.synthetic_ready(SynthConfig(out=config.out, n_seg=3, n_cls=4, width=256))


def test_progress_text_and_format() -> None:
    info = catalogue.RunInfo("x", Path("x"), "running", {"step": 5, "steps": 20, "epoch": 1, "epochs": 4, "eta_s": 75},
                        alive=True)
    progress = info.progress()
    assert progress["fraction"] == 0.25 and progress["text"] == "epoch 2/4 · step 5/20 · ETA 1:15"
    assert catalogue.format_seconds(3725) == "1:02:05"
    assert runs.slug(" my run / 2 ") == "my-run-2" and runs.slug("///") == "run"
