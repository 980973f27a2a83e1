"""Shared fixtures: the real IDRiD folders (skipped when absent) and small generated datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
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
