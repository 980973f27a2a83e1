"""Shared fixtures: the real IDRiD folders and small generated datasets.

The real files are read through the ``real_idrid`` / ``real_grading`` fixtures only, and every test that uses them
carries the ``real`` marker (collection stops otherwise). Without the folders such a test is skipped on a
developer's machine and fails under ``CI=true``: CI that silently skipped the real-data tests would pass while
testing nothing of what users feed the model.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


REAL_FIXTURES = ("real_idrid", "real_grading")


def _shared() -> Path:
    """``$IDRID_SHARED`` when set (and only it: set it to a missing folder to test without the real files), else
    ``../shared`` beside the checkout, else the workplace's ``/work/shared``."""
    if os.environ.get("IDRID_SHARED"):
        return Path(os.environ["IDRID_SHARED"])
    for candidate in (ROOT.parent / "shared", Path("/work/shared")):
        if (candidate / "idrid").is_dir():
            return candidate
    return ROOT.parent / "shared"


SHARED = _shared()
REAL_IDRID = SHARED / "idrid"
REAL_GRADING = SHARED / "idrid-grading"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _require(folder: Path, what: str) -> Path:
    if folder.is_dir():
        return folder.parent
    message = f"{what} not found at {folder} (set IDRID_SHARED to the folder holding idrid/ and idrid-grading/)"
    if in_ci():
        pytest.fail(f"{message}: under CI=true the real-data tests must run, not skip", pytrace=False)
    pytest.skip(message)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that reads the real files must say so with ``@pytest.mark.real`` (so ``-m real`` selects them)."""
    unmarked = [item.nodeid for item in items
                if set(REAL_FIXTURES) & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker("real")]
    if unmarked:
        raise pytest.UsageError("tests that read ../shared lack @pytest.mark.real: " + ", ".join(unmarked))


@pytest.fixture(scope="session")
def real_idrid() -> Path:
    _require(REAL_IDRID / "A. Segmentation", "real IDRiD segmentation files")
    return REAL_IDRID


@pytest.fixture(scope="session")
def real_grading() -> Path:
    _require(REAL_GRADING / "B. Disease Grading", "real IDRiD grading images")
    return REAL_GRADING


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the preprocessing cache of every test out of the user's home."""
    monkeypatch.setenv("IDRID_STUDIO_CACHE", str(tmp_path_factory.getbasetemp() / "preprocess-cache"))


@pytest.fixture(scope="session")
def tiny_run_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained for two steps on a tiny fixture: enough to exercise every path, not to be accurate.

    Never handed to a test as it is: ``tiny_run`` gives each test its own copy, so no test's evaluation or damage
    is seen by the next (results would depend on the order)."""
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


def copy_run(master: Path, destination: Path) -> Path:
    """A private copy of a trained run (a few hundred KB): evaluation writes into the run folder."""
    shutil.copytree(master, destination)
    return destination


@pytest.fixture
def tiny_run(tiny_run_master: Path, tmp_path: Path) -> Path:
    return copy_run(tiny_run_master, tmp_path / "tiny-run")


@pytest.fixture(scope="module")
def tiny_run_module(tiny_run_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One copy shared by a module whose tests read one evaluation of it (and do not change it)."""
    return copy_run(tiny_run_master, tmp_path_factory.mktemp("tiny-run-module") / "run")
