"""Shared fixtures: the real IDRiD folders (skipped when absent) and small generated datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

import os

ROOT = Path(__file__).resolve().parents[1]


def _shared() -> Path:
    """``$IDRID_SHARED``, else ``../shared`` beside the checkout, else the workplace's ``/work/shared``."""
    for candidate in (os.environ.get("IDRID_SHARED"), ROOT.parent / "shared", "/work/shared"):
        if candidate and (Path(candidate) / "idrid").is_dir():
            return Path(candidate)
    return ROOT.parent / "shared"


SHARED = _shared()
REAL_IDRID = SHARED / "idrid"
REAL_GRADING = SHARED / "idrid-grading"


@pytest.fixture(scope="session")
def real_idrid() -> Path:
    if not (REAL_IDRID / "A. Segmentation").is_dir():
        pytest.skip(f"real IDRiD files not found at {REAL_IDRID}")
    return REAL_IDRID


@pytest.fixture(scope="session")
def real_grading() -> Path:
    if not (REAL_GRADING / "B. Disease Grading").is_dir():
        pytest.skip(f"real IDRiD grading images not found at {REAL_GRADING}")
    return REAL_GRADING


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the preprocessing cache of every test out of the user's home."""
    monkeypatch.setenv("IDRID_STUDIO_CACHE", str(tmp_path_factory.getbasetemp() / "preprocess-cache"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained for two steps on a tiny fixture: enough to exercise every path, not to be accurate."""
    from builders import FixtureSpec, make_idrid
    from core.config import config_from_dict
    from core.train.trainer import Trainer

    base = tmp_path_factory.mktemp("tiny-run")
    root = make_idrid(base / "data", FixtureSpec(seg={"train": 6, "test": 4}, grading={"train": 10, "test": 6}))
    config = config_from_dict({
        "name": "tiny", "data": {"source": "folder", "roots": [str(root)], "image_size": 64,
                                 "cache_dir": str(base / "cache")},
        "model": {"decoder_channels": [32, 16, 16, 8], "gate_hidden": 16, "pooling": "multiscale"},
        "train": {"epochs": 1, "batch_size": 4, "max_steps": 2, "weights_dtype": "float16"},
    })
    Trainer(config, base / "run", progress_bar=False).fit()
    return base / "run"
