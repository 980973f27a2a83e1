"""The preprocessing cache: hits, invalidation by file and config, concurrent writers, broken entries."""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import signal
import time
from pathlib import Path

import numpy as np

from builders import make_idrid, seg_image, seg_mask
from core.data.cache import PreprocessCache, _decode, _encode, cache_key, compute
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


WRITES, READS = 30, 30  # enough rounds for a torn entry to show (a planted in-place write tears within a few)


def _rewrite(folder: str, image: str, root: str, barrier, done, results) -> None:
    """Write the entry again and again (remove, then a miss writes it), as loader workers of several runs do."""
    cache = PreprocessCache(folder)
    entry = cache.path_for(cache_key(Path(image), _masks(Path(root)), CONFIG))
    barrier.wait()
    for _ in range(WRITES):
        entry.unlink(missing_ok=True)
        cache.get(Path(image), _masks(Path(root)), CONFIG)
    done.set()
    results.put(("writes", cache.misses))


def _read_raw(folder: str, image: str, root: str, barrier, done, results) -> None:
    """Read the entry file directly, not through ``get`` (which would quietly recompute a torn one), for as long as
    the writer writes, and at least READS whole reads; counts are what matter, not how fast a machine is."""
    entry = PreprocessCache(folder).path_for(cache_key(Path(image), _masks(Path(root)), CONFIG))
    whole = torn = 0
    barrier.wait()
    deadline = time.monotonic() + 120  # a bound for a broken writer, never reached by a working one
    while (not done.is_set() or whole < READS) and time.monotonic() < deadline:
        try:
            _decode(entry, CONFIG.width)
            whole += 1
        except FileNotFoundError:
            continue  # between a removal and the next write: the reader recomputes, as it should
        except Exception:  # noqa: BLE001 - any other failure is an entry seen half-written
            torn += 1
    results.put(("reads", (whole, torn)))


def test_a_reader_never_sees_an_entry_half_written(tmp_path: Path) -> None:
    root = make_idrid(tmp_path / "data")
    image = seg_image(root, "IDRiD_01")
    context = mp.get_context("spawn")
    barrier, done, results = context.Barrier(2), context.Event(), context.Queue()
    args = (str(tmp_path / "cache"), str(image), str(root), barrier, done, results)
    workers = [context.Process(target=target, args=args) for target in (_rewrite, _read_raw)]
    for worker in workers:
        worker.start()
    got = dict(results.get(timeout=180) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
    whole, torn = got["reads"]
    assert got["writes"] == WRITES and whole >= READS  # the two really raced
    assert torn == 0
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and not p.name.endswith(".npz")]
    assert leftovers == []  # no temporary files left behind
    expected = compute(image, _masks(root), CONFIG)
    item = PreprocessCache(tmp_path / "cache").get(image, _masks(root), CONFIG)
    np.testing.assert_array_equal(item.image, expected.image)
    np.testing.assert_array_equal(item.masks, expected.masks)


def test_a_write_cut_short_leaves_no_half_entry(tmp_path: Path) -> None:
    """The disk fills while an entry is written: the sample is still returned, and nothing is left at the entry's
    place that a later read would take for a cached sample (nor a stray temporary file)."""
    root = make_idrid(tmp_path / "data")
    cache = PreprocessCache(tmp_path / "cache")
    image, masks = seg_image(root, "IDRiD_01"), _masks(root)
    entry = cache.path_for(cache_key(image, masks, CONFIG))
    assert len(_encode(compute(image, masks, CONFIG))) > 4096
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))  # files stop growing at 4 KB: a full disk
        item = cache.get(image, masks, CONFIG)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert item.masks.shape == (5, 64, 64) and cache.misses == 1
    assert not entry.exists()
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []
    assert cache.get(image, masks, CONFIG) is not None and entry.exists()  # with room again, it is written


def test_two_files_of_one_size_and_time_have_their_own_entries(tmp_path: Path) -> None:
    """Copies of a download keep sizes and times: the key must hold the path too, or two photographs would share
    one cached canvas."""
    root = make_idrid(tmp_path / "data")
    first, second = seg_image(root, "IDRiD_01"), seg_image(root, "IDRiD_02")
    second.write_bytes(first.read_bytes()[:-2] + b"\xff\xd9")  # another file, the same size
    stat = first.stat()
    for path in (first, second):
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert first.stat().st_size == second.stat().st_size and first.stat().st_mtime_ns == second.stat().st_mtime_ns
    assert cache_key(first, None, CONFIG) != cache_key(second, None, CONFIG)
