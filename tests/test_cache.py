"""The preprocessing cache: hits, invalidation by file and config, concurrent writers, broken entries."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import numpy as np

from builders import make_idrid, seg_image, seg_mask
from core.data.cache import PreprocessCache, cache_key, compute
from core.data.layout import LESIONS
from core.data.preprocess import PreprocessConfig

CONFIG = PreprocessConfig(64, 64)


def _masks(root: Path, image_id: str = "IDRiD_01") -> dict[str, Path | None]:
    return {code: seg_mask(root, image_id, code) for code in LESIONS}


def test_second_read_is_a_hit_with_identical_content(tmp_path: Path) -> None:
    root = make_idrid(tmp_path / "data")
    cache = PreprocessCache(tmp_path / "cache")
    image, masks = seg_image(root, "IDRiD_01"), _masks(root)
    first = cache.get(image, masks, CONFIG)
    second = cache.get(image, masks, CONFIG)
    assert (cache.misses, cache.hits) == (1, 1)
    np.testing.assert_array_equal(first.image, second.image)
    np.testing.assert_array_equal(first.masks, second.masks)
    assert first.geometry == second.geometry and second.masks.shape == (5, 64, 64) and second.masks.any()


def test_key_follows_file_size_mtime_and_config(tmp_path: Path) -> None:
    root = make_idrid(tmp_path / "data")
    image, masks = seg_image(root, "IDRiD_01"), _masks(root)
    key = cache_key(image, masks, CONFIG)
    assert key == cache_key(image, masks, CONFIG)
    assert key != cache_key(image, masks, PreprocessConfig(96, 64))
    assert key != cache_key(image, masks, PreprocessConfig(64, 64, clahe="green"))
    assert key != cache_key(image, None, CONFIG)
    stat = masks["EX"].stat()
    os.utime(masks["EX"], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert key != cache_key(image, masks, CONFIG)


def test_grading_sample_has_no_masks(tmp_path: Path) -> None:
    root = make_idrid(tmp_path / "data")
    cache = PreprocessCache(tmp_path / "cache")
    image = root / "B. Disease Grading" / "1. Original Images" / "a. Training Set" / "IDRiD_001.jpg"
    assert cache.get(image, None, CONFIG).masks is None
    assert cache.get(image, None, CONFIG).masks is None and cache.hits == 1


def test_broken_entry_is_recomputed(tmp_path: Path) -> None:
    root = make_idrid(tmp_path / "data")
    cache = PreprocessCache(tmp_path / "cache")
    image, masks = seg_image(root, "IDRiD_01"), _masks(root)
    cache.get(image, masks, CONFIG)
    entry = cache.path_for(cache_key(image, masks, CONFIG))
    entry.write_bytes(b"half a file")
    item = cache.get(image, masks, CONFIG)
    assert cache.misses == 2 and item.masks.shape == (5, 64, 64)
    assert PreprocessCache(tmp_path / "cache").get(image, masks, CONFIG) is not None


def _fill(args: tuple[str, str, str]) -> int:
    folder, image, root = args
    cache = PreprocessCache(folder)
    for _ in range(20):
        # remove and refill so that both workers keep racing on the same entry
        entry = cache.path_for(cache_key(Path(image), _masks(Path(root)), CONFIG))
        entry.unlink(missing_ok=True)
        cache.get(Path(image), _masks(Path(root)), CONFIG)
    return cache.misses


def test_two_workers_writing_one_entry_leave_it_readable(tmp_path: Path) -> None:
    root = make_idrid(tmp_path / "data")
    image = seg_image(root, "IDRiD_01")
    jobs = [(str(tmp_path / "cache"), str(image), str(root))] * 2
    with mp.get_context("spawn").Pool(2) as pool:
        assert all(m > 0 for m in pool.map(_fill, jobs))
    entry_folder = tmp_path / "cache"
    leftovers = [p for p in entry_folder.rglob("*") if p.is_file() and not p.name.endswith(".npz")]
    assert leftovers == []  # no temporary files left behind
    expected = compute(image, _masks(root), CONFIG)
    item = PreprocessCache(entry_folder).get(image, _masks(root), CONFIG)
    np.testing.assert_array_equal(item.image, expected.image)
    np.testing.assert_array_equal(item.masks, expected.masks)
