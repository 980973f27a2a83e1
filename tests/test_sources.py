"""Where a run's samples come from: the synthetic default (generated once, atomically), folders, metadata."""

from __future__ import annotations

from pathlib import Path

import pytest

from builders import FixtureSpec, make_idrid
from core.config import DataConfig, SynthConfig
from core.data.metadata import write_metadata
from core.data.sources import describe, ensure_synthetic, resolve_metadata
from core.errors import DataError


def test_synthetic_is_generated_once_and_regenerated_when_settings_change(tmp_path: Path) -> None:
    config = SynthConfig(out=str(tmp_path / "synthetic"), n_seg=3, n_cls=10, width=128, seed=0)
    root = ensure_synthetic(config, progress=False)
    image = next(root.rglob("*.jpg"))
    stamp = image.stat().st_mtime_ns
    assert ensure_synthetic(config, progress=False) == root and image.stat().st_mtime_ns == stamp
    changed = SynthConfig(out=config.out, n_seg=3, n_cls=10, width=128, seed=1)
    ensure_synthetic(changed, progress=False)
    assert next(root.rglob("*.jpg")).stat().st_mtime_ns != stamp
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic"]  # no staging folder left behind


def test_resolve_each_source(tmp_path: Path) -> None:
    synthetic = resolve_metadata(DataConfig(synthetic=SynthConfig(out=str(tmp_path / "s"), n_seg=3, n_cls=10,
                                                                  width=128)), progress=False)
    assert synthetic.tasks_present == {"segmentation", "classification"}
    root = make_idrid(tmp_path / "real", FixtureSpec(seg={"train": 5}, grading={}))
    folder = resolve_metadata(DataConfig(source="folder", roots=[str(root)]))
    assert "no classification samples to train on" in describe(folder)
    path = write_metadata(folder.raw, tmp_path / "m.json")
    assert len(resolve_metadata(DataConfig(source="metadata", metadata=str(path))).samples) == 5
    with pytest.raises(DataError, match="does not exist"):
        resolve_metadata(DataConfig(source="folder", roots=[str(tmp_path / "nowhere")]))
