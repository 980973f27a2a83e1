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
from core.train.checkpoint import read_weights
from core.train.run_dir import RunDir, read_jsonl

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


def test_resume_matches_an_uninterrupted_run(tmp_path: Path, tiny_root: Path) -> None:
    from core.config import load_config
    from core.train.trainer import Trainer

    whole = tmp_path / "whole"
    Trainer(load_config(_config(tmp_path, tiny_root)), whole, progress_bar=False).fit()

    cut = tmp_path / "cut"
    Trainer(load_config(_config(tmp_path, tiny_root, max_steps=4)), cut, progress_bar=False).fit()
    assert json.loads(RunDir(cut).status.read_text())["step"] == 4  # stopped inside epoch 2
    resumed = load_config(RunDir(cut).config, ["train.max_steps=null"])
    Trainer(resumed, cut, resume=True, progress_bar=False).fit()

    a, b = _weights(RunDir(whole).weights_file("last")), _weights(RunDir(cut).weights_file("last"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)
    steps_a, steps_b = read_jsonl(RunDir(whole).log), read_jsonl(RunDir(cut).log)
    assert [s["step"] for s in steps_b] == list(range(1, 7))
    for x, y in zip(steps_a, steps_b):
        assert x["total"] == pytest.approx(y["total"], rel=1e-4)
    final_a, final_b = read_jsonl(RunDir(whole).history)[-1], read_jsonl(RunDir(cut).history)[-1]
    assert [h["epoch"] for h in read_jsonl(RunDir(cut).history)] == [1, 2]
    assert final_a["val/total"] == pytest.approx(final_b["val/total"], rel=1e-4)


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


def test_segmentation_only_dataset_trains_and_says_so(tmp_path: Path) -> None:
    root = make_idrid(tmp_path / "seg", FixtureSpec(seg={"train": 6}, grading={}))
    out = tmp_path / "run"
    result = _cli("train", "--config", str(_config(tmp_path, root, epochs=1)), "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "the gate and the other expert are not trained" in result.stderr
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
def test_bad_config_fails_with_one_line(tmp_path: Path, tiny_root: Path, overrides: list[str], message: str) -> None:
    out = tmp_path / "bad"
    result = _cli("train", "--config", str(_config(tmp_path, tiny_root)), "--out", str(out), *overrides)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and "Traceback" not in result.stderr


def test_unreadable_dataset_fails_clearly(tmp_path: Path) -> None:
    result = _cli("train", "--config", str(_config(tmp_path, tmp_path / "missing")), "--out", str(tmp_path / "r"))
    assert result.returncode == 2 and "does not exist" in result.stderr
    status = json.loads((tmp_path / "r" / "status.json").read_text())
    assert status["state"] == "failed" and "does not exist" in status["error"]


def test_nan_loss_fails_clearly(tmp_path: Path, tiny_root: Path) -> None:
    out = tmp_path / "nan"
    result = _cli("train", "--config", str(_config(tmp_path, tiny_root)), "--out", str(out), "train.lr=1e30",
                  "train.grad_clip=0")
    assert result.returncode == 2, result.stderr[-2000:]
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "failed" and "loss became nan" in status["error"].lower()


def test_refuses_to_overwrite_a_trained_run(tmp_path: Path, tiny_root: Path) -> None:
    out = tmp_path / "run"
    config = str(_config(tmp_path, tiny_root, epochs=1, max_steps=1))
    assert _cli("train", "--config", config, "--out", str(out)).returncode == 0
    again = _cli("train", "--config", config, "--out", str(out))
    assert again.returncode == 2 and "already holds a trained run" in again.stderr
