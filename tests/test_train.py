"""The trainer from the CLI and from Python: run folder contents, resume, DDP, clean failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from builders import FixtureSpec, make_idrid
from core.run.weights import read_weights
from core.run.folder import RunDir
from core.run.logs import read_jsonl

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_idrid(tmp_path_factory.mktemp("tiny"), FixtureSpec(seg={"train": 8, "test": 2},
                                                                    grading={"train": 16, "test": 4}))


def _config(tmp_path: Path, root: Path, **train: object) -> Path:
    config = {
        "name": "tiny",
        "data": {"source": "folder", "roots": [str(root)], "image_size": 64, "samples_per_epoch": 12,
                 "cache_dir": str(tmp_path / "cache"), "augment": "standard"},
        "model": {"decoder_channels": [32, 16, 16, 8], "gate_hidden": 16},
        "train": {"epochs": 2, "batch_size": 4, "lr": 2e-3, "seed": 7, **train},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _cli(*args: str, env: dict | None = None, module: tuple[str, ...] = ("-m", "core")) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *module, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def _main(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """``python -m core`` in this process (no new interpreter: a second each), with what it wrote on stderr."""
    from core.__main__ import main

    capsys.readouterr()
    code = main(list(args))
    return code, capsys.readouterr().err


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_weights(path)[0]


def test_cli_training_writes_a_complete_run(tmp_path: Path, tiny_root: Path) -> None:
    out = tmp_path / "run"
    result = _cli("train", "--config", str(_config(tmp_path, tiny_root)), "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    run = RunDir(out)
    status = json.loads(run.status.read_text())
    assert status["state"] == "finished" and status["step"] == status["steps"] == 6 and status["epoch"] == 2
    history = read_jsonl(run.history)
    assert [h["epoch"] for h in history] == [1, 2]
    for key in ("train/total", "train/gate_acc", "val/total", "val/gate_acc", "val/dr_acc", "val/dme_acc",
                "val/dice_OD", "val/score", "lr", "images_per_s"):
        assert key in history[-1], key
    steps = read_jsonl(run.log)
    assert [s["step"] for s in steps] == list(range(1, 7))
    assert {"total", "gate_acc", "lr", "images_per_s", "misrouted"} <= set(steps[0])
    assert run.weights_file("best").exists() and run.weights_file("last").exists() and run.state.exists()
    assert yaml.safe_load(run.config.read_text())["train"]["seed"] == 7
    assert "epoch 2" in run.console.read_text()
    # the learning rate warms up then decays
    lrs = [s["lr"] for s in steps]
    assert max(lrs) > lrs[-1]


def _same_run(whole: Path, other: Path) -> None:
    """Bit for bit: on the CPU a resumed run repeats the uninterrupted one exactly (RNG, optimizer, scheduler)."""
    a, b = _weights(RunDir(whole).weights_file("last")), _weights(RunDir(other).weights_file("last"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    steps_a, steps_b = read_jsonl(RunDir(whole).log), read_jsonl(RunDir(other).log)
    assert [s["step"] for s in steps_b] == [s["step"] for s in steps_a] == list(range(1, 7))
    assert [s["total"] for s in steps_a] == [s["total"] for s in steps_b]
    history_a, history_b = read_jsonl(RunDir(whole).history), read_jsonl(RunDir(other).history)
    assert [h["epoch"] for h in history_b] == [1, 2]
    assert history_a[-1]["val/total"] == history_b[-1]["val/total"]


@pytest.fixture(scope="module")
def whole_run(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted reference (2 epochs of 3 steps), trained in this process like the runs it is compared to."""
    from core.config import load_config
    from core.train.trainer import Trainer

    folder = tmp_path_factory.mktemp("whole")
    Trainer(load_config(_config(folder, tiny_root)), folder / "run", progress_bar=False).fit()
    return folder / "run"


def test_resume_matches_an_uninterrupted_run(tmp_path: Path, tiny_root: Path, whole_run: Path) -> None:
    from core.config import load_config
    from core.train.trainer import Trainer

    cut = tmp_path / "cut"
    Trainer(load_config(_config(tmp_path, tiny_root, max_steps=4)), cut, progress_bar=False).fit()
    assert json.loads(RunDir(cut).status.read_text())["step"] == 4  # stopped inside epoch 2
    resumed = load_config(RunDir(cut).config, ["train.max_steps=null"])
    Trainer(resumed, cut, resume=True, progress_bar=False).fit()
    _same_run(whole_run, cut)


def test_cli_resume_continues_the_run_from_its_own_config(tmp_path: Path, tiny_root: Path, whole_run: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    from core.__main__ import main

    cut = tmp_path / "cut"
    assert main(["train", "--config", str(_config(tmp_path, tiny_root, max_steps=4)), "--out", str(cut)]) == 0
    (tmp_path / "config.yaml").unlink()  # resume reads the run's own config.yaml, not the file it started from
    assert main(["train", "--out", str(cut), "--resume", "train.max_steps=null"]) == 0
    assert json.loads(RunDir(cut).status.read_text())["state"] == "finished"
    _same_run(whole_run, cut)
    assert main(["train", "--resume"]) == 2 and "--resume needs --out" in capsys.readouterr().err


def test_best_weights_are_the_best_epoch_by_the_chosen_metric(tmp_path: Path, tiny_root: Path) -> None:
    from core.config import load_config
    from core.run.weights import read_weights
    from core.train.trainer import Trainer

    for metric, pick in (("val/score", max), ("val/total", min)):
        out = tmp_path / metric.replace("/", "_")
        Trainer(load_config(_config(tmp_path, tiny_root, epochs=4, best_metric=metric)), out,
                progress_bar=False).fit()
        history = read_jsonl(RunDir(out).history)
        values = [h[metric] for h in history]
        assert len(set(values)) > 1, values  # otherwise any epoch would do
        best_epoch = history[values.index(pick(values))]["epoch"]
        status = json.loads(RunDir(out).status.read_text())
        assert status["best_epoch"] == best_epoch and status["best"] == pick(values), (metric, values)
        header = read_weights(RunDir(out).weights_file("best"))[1]
        assert int(header["epoch"]) + 1 == best_epoch  # the file holds that epoch's weights


def test_checkpoint_every_saves_resumable_state_mid_epoch(tmp_path: Path, tiny_root: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import core.train.trainer as trainer_module
    from core.config import load_config

    saved: list[int] = []
    real_save = trainer_module.save_state

    def recording_save(path: Path, **state) -> None:
        saved.append(state["progress"]["step"])
        real_save(path, **state)

    monkeypatch.setattr(trainer_module, "save_state", recording_save)
    out = tmp_path / "run"
    trainer_module.Trainer(load_config(_config(tmp_path, tiny_root, checkpoint_every=2)), out, progress_bar=False).fit()
    assert saved == [2, 3, 4, 6, 6]  # every 2 steps, at each epoch's end (3 and 6: 6 twice, it ends both)
    saved.clear()
    trainer_module.Trainer(load_config(_config(tmp_path, tiny_root)), tmp_path / "plain", progress_bar=False).fit()
    assert saved == [3, 6]  # without it: at epoch ends only


def test_max_minutes_stops_cleanly_and_the_run_resumes(tmp_path: Path, tiny_root: Path) -> None:
    from core.config import load_config
    from core.train.trainer import Trainer

    out = tmp_path / "run"
    Trainer(load_config(_config(tmp_path, tiny_root, max_minutes=1e-6)), out, progress_bar=False).fit()
    status = json.loads(RunDir(out).status.read_text())
    assert status["stop_reason"] == "max_minutes" and status["step"] == 1  # the budget is checked after each step
    history = read_jsonl(RunDir(out).history)
    assert len(history) == 1 and history[0]["partial"] is True and "val/total" in history[0]
    assert RunDir(out).weights_file("best").exists() and RunDir(out).state.exists()
    Trainer(load_config(RunDir(out).config, ["train.max_minutes=null"]), out, resume=True, progress_bar=False).fit()
    status = json.loads(RunDir(out).status.read_text())
    assert status["state"] == "finished" and status["step"] == 6 and status["stop_reason"] is None


@pytest.mark.parametrize("elapsed, done, total, pace, minutes, reach", [
    (120.0, 100, 1000, 2.0, 25, 790),  # 120 s + 900 x 2 s = 32 min > 25: (1500 - 120) / 2 = 690 more steps
    (0.0, 0, 60, 60.0, 30, 30),
])
def test_budget_shortfall_says_where_the_budget_cuts_the_schedule(elapsed: float, done: int, total: int,
                                                                 pace: float, minutes: float, reach: int) -> None:
    from core.train.schedule import budget_shortfall

    warning = budget_shortfall(elapsed, done, total, pace, minutes)
    assert warning is not None and f"near step {reach}," in warning and f"train.max_minutes {minutes:g}" in warning


@pytest.mark.parametrize("elapsed, done, total, pace, minutes", [
    (120.0, 100, 1000, 1.5, 25),  # 120 + 1350 s = 24.5 min: it fits
    (120.0, 100, 1000, 2.0, None),  # no budget
    (120.0, 1000, 1000, 2.0, 1),  # done
])
def test_budget_shortfall_is_silent_when_the_schedule_fits(elapsed: float, done: int, total: int, pace: float,
                                                           minutes: float | None) -> None:
    from core.train.schedule import budget_shortfall

    assert budget_shortfall(elapsed, done, total, pace, minutes) is None


def test_the_trainer_warns_once_after_its_second_epoch_when_the_budget_will_cut_it(
        tmp_path: Path, tiny_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real forecast, asked with a budget of almost nothing (the run's own, 600 minutes, never stops it)."""
    from core.config import load_config
    from core.train import schedule, trainer

    calls = []

    def forecast(elapsed: float, done: int, total: int, pace: float, minutes: float | None) -> str | None:
        calls.append((done, total, minutes))
        return schedule.budget_shortfall(elapsed, done, total, pace, 1e-6)

    monkeypatch.setattr(trainer, "budget_shortfall", forecast)
    out = tmp_path / "run"
    trainer.Trainer(load_config(_config(tmp_path, tiny_root, epochs=3, max_minutes=600)), out,
                    progress_bar=False).fit()
    assert calls == [(6, 9, 600)]  # once, after epoch 2 of 3 steps each: epoch 1 also built the cache
    status = json.loads(RunDir(out).status.read_text())
    assert status["state"] == "finished" and "the schedule of 9 steps" in status["budget_warning"]
    assert status["budget_warning"] in RunDir(out).console.read_text()


def test_sigterm_stops_with_a_resumable_run(tmp_path: Path, tiny_root: Path) -> None:
    """What the Train page's Stop does to the training process: it ends at the next step, saves and says so."""
    import signal
    import time

    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "core", "train", "--config",
                                str(_config(tmp_path, tiny_root, epochs=200)), "--out", str(out)],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if RunDir(out).status.exists() and json.loads(RunDir(out).status.read_text()).get("step", 0) >= 2:
                break
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        stderr = process.communicate(timeout=120)[1]
    finally:
        process.kill()
    assert process.returncode == 0, stderr[-2000:]
    status = json.loads(RunDir(out).status.read_text())
    assert status["state"] == "stopped" and status["stop_reason"] == "stopped" and status["step"] < 600
    stopped_at = status["step"]
    from core.__main__ import main
    assert main(["train", "--out", str(out), "--resume", f"train.max_steps={stopped_at + 2}"]) == 0
    steps = [s["step"] for s in read_jsonl(RunDir(out).log)]
    assert steps == list(range(1, stopped_at + 3))  # no step lost, none repeated
    assert json.loads(RunDir(out).status.read_text())["step"] == stopped_at + 2


@pytest.mark.slow
def test_two_process_ddp_agrees_on_weights(tmp_path: Path, tiny_root: Path) -> None:
    out = tmp_path / "ddp"
    result = _cli("--standalone", "--nproc_per_node", "2", "-m", "core", "train",
                  "--config", str(_config(tmp_path, tiny_root, epochs=1, max_steps=3)), "--out", str(out),
                  module=("-m", "torch.distributed.run"))
    assert result.returncode == 0, result.stderr[-3000:]
    log = RunDir(out).console.read_text()
    assert "2 process(es)" in log and "weights identical on all 2 ranks" in log
    status = json.loads(RunDir(out).status.read_text())
    assert status["state"] == "finished" and status["step"] == 2  # 12 samples / 2 ranks / batch 4 -> 2 steps


def test_segmentation_only_dataset_trains_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_idrid(tmp_path / "seg", FixtureSpec(seg={"train": 6}, grading={}))
    out = tmp_path / "run"
    code, stderr = _main(capsys, "train", "--config", str(_config(tmp_path, root, epochs=1)), "--out", str(out))
    assert code == 0, stderr[-2000:]
    assert "the gate and the other expert are not trained" in stderr
    history = read_jsonl(RunDir(out).history)
    assert "val/dice_OD" in history[-1] and "val/gate_acc" not in history[-1]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.lrr=1"], "unknown config key train.'lrr'; did you mean 'lr'?"),
        (["train.epochs=zero"], "train.epochs must be an integer"),
        (["model.backbone=resnet50"], "unknown backbone 'resnet50'"),
        (["train.route=random"], "train.route must be one of"),
        (["data.image_size=100"], "must be a multiple of 32"),
    ],
)
def test_bad_config_fails_with_one_line(tmp_path: Path, tiny_root: Path, overrides: list[str], message: str,
                                        capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bad"
    code, stderr = _main(capsys, "train", "--config", str(_config(tmp_path, tiny_root)), "--out", str(out), *overrides)
    assert code == 2, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in stderr  # one line says it


def test_unreadable_dataset_fails_clearly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, stderr = _main(capsys, "train", "--config", str(_config(tmp_path, tmp_path / "missing")),
                         "--out", str(tmp_path / "r"))
    assert code == 2 and "does not exist" in stderr
    status = json.loads((tmp_path / "r" / "status.json").read_text())
    assert status["state"] == "failed" and "does not exist" in status["error"]


def test_nan_loss_fails_clearly(tmp_path: Path, tiny_root: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "nan"
    code, stderr = _main(capsys, "train", "--config", str(_config(tmp_path, tiny_root)), "--out", str(out),
                         "train.lr=1e30", "train.grad_clip=0")
    assert code == 2, stderr[-2000:]
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "failed" and "loss became nan" in status["error"].lower()


def test_refuses_to_overwrite_a_trained_run(tmp_path: Path, tiny_root: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    config = str(_config(tmp_path, tiny_root, epochs=1, max_steps=1))
    assert _main(capsys, "train", "--config", config, "--out", str(out))[0] == 0
    code, stderr = _main(capsys, "train", "--config", config, "--out", str(out))
    assert code == 2 and "already holds a trained run" in stderr
