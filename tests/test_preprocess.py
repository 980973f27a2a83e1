"""Field-of-view crop, resize, CLAHE, lesion-preserving mask reduction and the geometry that maps back."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from builders import fundus
from core.data.idrid import read_idrid
from core.data.imageio import read_mask
from core.config import config_from_dict
from core.data.cache import cache_key
from core.data.preprocess import (Geometry, PreprocessConfig, apply_clahe, canvas_preprocess, decode_for_canvas,
                                  fov_box, plan_geometry, preprocess_image, reduce_mask)
from core.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def real_record(real_idrid: Path):  # noqa: ANN201
    index = read_idrid(real_idrid)
    return next(r for r in index.segmentation if r.id == "IDRiD_01")


@pytest.mark.real
def test_fov_box_on_a_real_photograph(real_record) -> None:
    rgb, original = decode_for_canvas(real_record.image, (4288, 2848))
    x0, y0, x1, y1 = fov_box(rgb)
    assert original == (4288, 2848)
    assert 200 < x0 < 400 and 3600 < x1 < 3800  # the field of view is not centred: about x 280-3700
    assert y0 == 0 and y1 == 2848  # clipped at top and bottom


@pytest.mark.real
def test_reduced_jpeg_decode_keeps_geometry_in_original_pixels(real_record) -> None:
    config = PreprocessConfig(512, 512, clahe="none")
    small, original = decode_for_canvas(real_record.image, config.size)
    full, _ = decode_for_canvas(real_record.image, (4288, 2848))
    assert small.shape[1] < full.shape[1] and original == (4288, 2848)
    canvas_small, geo_small = preprocess_image(small, original, config)
    canvas_full, geo_full = preprocess_image(full, original, config)
    assert all(abs(a - b) <= 8 for a, b in zip(geo_small.crop, geo_full.crop))
    assert np.abs(canvas_small.astype(int) - canvas_full.astype(int)).mean() < 4


def _components(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return [tuple(stats[i, :4]) for i in range(1, count)]


def _survivors(reduced: np.ndarray, components, geometry: Geometry) -> int:
    x0, y0, _, _ = geometry.crop
    scale = geometry.content[0] / (geometry.crop[2] - geometry.crop[0])
    ox, oy = geometry.offset
    alive = 0
    for x, y, w, h in components:
        a0, b0 = int((x - x0) * scale) + ox, int((y - y0) * scale) + oy
        a1, b1 = int(np.ceil((x + w - x0) * scale)) + ox, int(np.ceil((y + h - y0) * scale)) + oy
        alive += bool(reduced[b0 : b1 + 1, a0 : a1 + 1].any())
    return alive


def _nearest(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    x0, y0, x1, y1 = geometry.crop
    out = np.zeros((geometry.canvas[1], geometry.canvas[0]), bool)
    ox, oy = geometry.offset
    out[oy : oy + geometry.content[1], ox : ox + geometry.content[0]] = cv2.resize(
        mask[y0:y1, x0:x1].astype(np.uint8), geometry.content, interpolation=cv2.INTER_NEAREST) > 0
    return out


@pytest.mark.real
def test_every_real_microaneurysm_survives_reduction(real_idrid: Path) -> None:
    records = read_idrid(real_idrid).segmentation[:10]
    total, lost, lost_naive = 0, {1024: 0, 512: 0}, 0
    for record in records:
        mask = read_mask(record.masks["MA"])
        components = _components(mask)
        total += len(components)
        for width in lost:
            geometry = plan_geometry((4288, 2848), (280, 0, 3720, 2848), (width, width))
            lost[width] += len(components) - _survivors(reduce_mask(mask, geometry), components, geometry)
        geometry = plan_geometry((4288, 2848), (280, 0, 3720, 2848), (256, 256))
        lost_naive += len(components) - _survivors(_nearest(mask, geometry), components, geometry)
    assert total > 300  # ten real masks hold a few hundred microaneurysms
    assert lost == {1024: 0, 512: 0}
    # nearest-neighbour reduction loses some: the area-then-threshold rule is what keeps them
    assert lost_naive > 0


def test_a_ten_pixel_lesion_survives_at_1024_wide() -> None:
    mask = np.zeros((2848, 4288), bool)
    mask[1400:1402, 2001:2006] = True  # 10 pixels
    geometry = plan_geometry((4288, 2848), (0, 0, 4288, 2848), (1024, 680))
    reduced = reduce_mask(mask, geometry)
    assert 1 <= reduced.sum() <= 4
    ys, xs = np.nonzero(reduced)
    assert abs(xs.mean() - 2003 * 1024 / 4288) <= 1.5 and abs(ys.mean() - 1401 * 680 / 2848 - geometry.offset[1]) <= 1.5


def test_geometry_round_trip_places_content_back() -> None:
    rgb = fundus(400, 266)
    config = PreprocessConfig(128, 128, clahe="none")
    canvas, geometry = preprocess_image(rgb, (400, 266), config)
    assert canvas.shape == (128, 128, 3)
    assert geometry.offset[0] == 0 or geometry.offset[1] == 0
    back = geometry.canvas_to_original(canvas[..., 0])
    assert back.shape == (266, 400)
    lit = rgb[..., 0] > 25
    assert (back[lit] > 0).mean() > 0.97 and (back[~lit] > 60).mean() < 0.05
    assert Geometry.from_dict(geometry.to_dict()) == geometry


def test_clahe_modes_touch_the_channels_they_say() -> None:
    rgb = fundus(128, 96, seed=3)
    green = apply_clahe(rgb, PreprocessConfig(clahe="green"))
    np.testing.assert_array_equal(green[..., [0, 2]], rgb[..., [0, 2]])
    assert not np.array_equal(green[..., 1], rgb[..., 1])
    lum = apply_clahe(rgb, PreprocessConfig(clahe="luminance"))
    assert lum.shape == rgb.shape and not np.array_equal(lum, rgb)
    assert apply_clahe(rgb, PreprocessConfig(clahe="none")) is rgb
    both = apply_clahe(rgb, PreprocessConfig(clahe="luminance+green"))
    np.testing.assert_array_equal(both[..., [0, 2]], lum[..., [0, 2]])  # red and blue as luminance CLAHE left them
    expected = apply_clahe(np.ascontiguousarray(lum), PreprocessConfig(clahe="green"))[..., 1]
    np.testing.assert_array_equal(both[..., 1], expected)  # green equalised once more on top
    original = rgb.copy()
    for mode in ("green", "luminance", "luminance+green"):
        apply_clahe(rgb, PreprocessConfig(clahe=mode))
    np.testing.assert_array_equal(rgb, original)  # the input is never written to


def test_green_input_is_the_equalised_green_channel_in_all_three(tmp_path: Path) -> None:
    rgb = fundus(160, 120, seed=5)
    colour, geometry = preprocess_image(rgb, (160, 120), PreprocessConfig(96, 96, clahe="luminance+green"))
    grey, same = preprocess_image(rgb, (160, 120), PreprocessConfig(96, 96, clahe="luminance+green",
                                                                     channels="green"))
    assert same == geometry and grey.shape == colour.shape == (96, 96, 3)
    for channel in range(3):  # green after both CLAHE passes, red and blue dropped
        np.testing.assert_array_equal(grey[..., channel], colour[..., 1])
    assert not np.array_equal(colour[..., 0], colour[..., 1])
    image = tmp_path / "a.png"
    image.write_bytes(b"png")
    assert cache_key(image, None, PreprocessConfig(channels="green")) != cache_key(image, None, PreprocessConfig())


def test_a_run_preprocesses_as_its_data_settings_say() -> None:
    data = config_from_dict({"data": {"image_size": 96, "clahe": "green", "channels": "green"}}).data
    assert canvas_preprocess(data) == PreprocessConfig(96, 96, clahe="green", channels="green")
    assert canvas_preprocess(data, 192).size == (192, 192) and canvas_preprocess(data, 192).channels == "green"
    assert canvas_preprocess(config_from_dict({}).data).channels == "rgb"
    with pytest.raises(ConfigError, match="data.channels"):
        config_from_dict({"data": {"channels": "grey"}})
    with pytest.raises(ConfigError, match="channels 'blue'"):
        PreprocessConfig(channels="blue")


def test_bad_config_and_tiny_images_are_refused() -> None:
    with pytest.raises(ConfigError, match="clahe 'blue'"):
        PreprocessConfig(clahe="blue")
    with pytest.raises(ConfigError, match="too small"):
        PreprocessConfig(8, 8)
    with pytest.raises(DataError, match="1x1 pixels"):
        preprocess_image(np.zeros((1, 1, 3), np.uint8), (1, 1), PreprocessConfig())


def test_no_border_means_no_crop() -> None:
    rgb = np.full((60, 80, 3), 120, np.uint8)
    assert fov_box(rgb) == (0, 0, 80, 60)
    assert fov_box(np.zeros((60, 80, 3), np.uint8)) == (0, 0, 80, 60)


def test_luminance_clahe_equalises_cielab_lightness_of_rgb_and_keeps_the_colour() -> None:
    """The decoded pixels are RGB: read as BGR, 'lightness' would weigh blue as red and shift every hue."""
    rgb = fundus(256, 192, seed=3)
    out = apply_clahe(rgb, PreprocessConfig(clahe="luminance"))
    fov = rgb.max(axis=2) > 25
    lab_in = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(int)
    lab_out = cv2.cvtColor(out, cv2.COLOR_RGB2LAB).astype(int)
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    expected_l = clahe.apply(np.ascontiguousarray(lab_in[..., 0].astype(np.uint8))).astype(int)
    assert np.abs(lab_out[..., 0] - expected_l)[fov].mean() < 0.5  # lightness is CLAHE of the input's L*
    assert np.abs(lab_out[..., 0] - lab_in[..., 0])[fov].mean() > 5  # ... which did change it
    for channel in (1, 2):  # a* and b*: the colour is the input's, to the rounding of two conversions
        assert np.abs(lab_out[..., channel] - lab_in[..., channel])[fov].mean() < 0.5, channel


def test_a_canvas_point_maps_back_onto_the_original_pixels() -> None:
    """The Predict page marks the disc and fovea with this: a point of the content must land where it came from."""
    rgb = fundus(300, 200, seed=2)
    _, geometry = preprocess_image(rgb, (300, 200), PreprocessConfig(64, 64))
    x0, y0, x1, y1 = geometry.crop
    ox, oy = geometry.offset
    assert geometry.point_to_original(ox, oy) == pytest.approx((x0, y0))
    end = geometry.point_to_original(ox + geometry.content[0], oy + geometry.content[1])
    assert end == pytest.approx((x1, y1))
    middle = geometry.point_to_original(ox + geometry.content[0] / 2, oy + geometry.content[1] / 4)
    assert middle == pytest.approx(((x0 + x1) / 2, y0 + (y1 - y0) / 4))
