"""The healthy fundus: field of view, background, illumination, optic disc, macula and vessel tree.

Every constant is quoted at IDRiD's native 4288x2848 frame (or as a fraction of it) and was measured on the real
segmentation training half in ``../shared/idrid`` (see ``docs/synthetic.md``); the drawing happens directly at the
target width, so generation stays fast.

The lit background is built as float32 BGR in [0, 1]; :func:`calibrate_colour` maps it onto colour statistics
drawn from the real images' distribution (so the "camera" varies from image to image like IDRiD's), giving BGR in
0-255. Macula, disc, vessels and lesions are then painted on that as per-channel ratios to the local background,
taken from the real photographs (a vessel keeps ~0.94 of the surrounding red and ~0.75 of its green), so they
keep their colour whatever the image's exposure.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from core.data.synth.records import Geometry, height_for
from core.vocabulary import FOVEA_BELOW_DISC_DIAMETERS_RANGE, FOVEA_DISC_DIAMETERS_RANGE

# Field of view, as fractions of the width (real: x 0.064-0.863, centre 0.464, full height, clipped top/bottom).
FOV_CENTRE_X = 0.4636
FOV_RADIUS = 0.3995
# The IDRiD camera's two small tabs on the right edge of the field of view: (top, bottom) as fractions of the
# height and the outer edge's distance right of the field's centre as a fraction of the width (measured at 4288:
# y 455-565 out to x 3490, y 580-790 out to x 3545).
FOV_TABS = ((0.160, 0.198, 0.3504), (0.204, 0.277, 0.3631))

# Optic disc at 4288 wide: diameter 387-652 px (median 528), centre x ~1083 (left eye) or ~2908 (right), y ~1387.
DISC_DIAMETER_MEDIAN = 528.0
DISC_DIAMETER_SD = 55.0
DISC_DIAMETER_RANGE = (387.0, 652.0)
DISC_X = {"left": 1083 / 4288, "right": 2908 / 4288}
DISC_Y = 1387 / 2848
# Fovea: about 2.5 disc diameters temporal to the disc centre and slightly below it (ranges in core.vocabulary,
# beside the single position the implied-DME read-out uses).
FOVEA_DISC_DIAMETERS = FOVEA_DISC_DIAMETERS_RANGE
FOVEA_BELOW_DISC_DIAMETERS = FOVEA_BELOW_DISC_DIAMETERS_RANGE

# Colour inside the field of view: per-image RGB means then RGB standard deviations (0-255) of the 54 real
# training images (measured by ``measure.image_stats``). Each synthetic image takes one real image's values,
# jittered by COLOUR_JITTER of the real spread (the Cholesky factor of their covariance), so the "camera
# exposure" varies like the real ones, keeping how brightness, hue and saturation go together in them (a Gaussian
# fitted to the rows would also produce dark images with a yellow hue, which read brown).
REAL_COLOUR = np.array(
    [
        (184.7, 88.4, 39.5, 30.3, 24.4, 17.5), (131.6, 41.7, 1.2, 22.7, 14.2, 2.4), (177.2, 89.0, 29.7, 22.5, 20.7, 11.3),
        (127.2, 51.8, 7.4, 39.8, 27.8, 9.5), (167.5, 93.7, 51.9, 29.1, 26.1, 19.5), (157.8, 95.6, 72.7, 41.9, 35.0, 31.3),
        (159.1, 74.1, 8.8, 26.1, 18.5, 5.5), (196.4, 105.9, 28.0, 25.1, 19.9, 12.8), (151.6, 63.7, 4.0, 27.4, 18.6, 2.8),
        (161.0, 81.8, 7.7, 32.9, 30.4, 3.9), (114.5, 39.6, 1.2, 26.4, 14.2, 1.8), (143.3, 67.5, 11.0, 40.2, 31.2, 11.3),
        (205.5, 87.2, 12.9, 28.6, 23.6, 5.2), (203.2, 82.6, 10.1, 24.8, 19.5, 5.1), (218.6, 86.1, 9.5, 30.1, 17.6, 3.8),
        (220.1, 88.7, 10.2, 30.6, 15.5, 3.8), (149.8, 69.1, 14.7, 36.9, 24.6, 5.3), (173.5, 79.9, 19.1, 26.1, 23.8, 9.0),
        (191.7, 92.4, 9.7, 26.0, 23.5, 5.8), (197.1, 81.1, 6.0, 32.7, 24.5, 4.9), (188.9, 79.1, 6.8, 27.1, 19.5, 4.7),
        (162.4, 89.1, 22.9, 27.9, 22.9, 10.8), (154.7, 89.2, 70.3, 29.2, 24.9, 21.5), (157.0, 89.5, 64.3, 22.9, 22.1, 20.2),
        (141.2, 55.5, 1.8, 27.2, 17.7, 2.0), (170.8, 97.5, 25.9, 22.5, 18.5, 7.7), (171.9, 88.6, 19.0, 26.2, 18.5, 6.5),
        (147.9, 79.3, 23.9, 24.8, 21.6, 10.0), (184.9, 91.8, 21.3, 20.9, 19.1, 7.5), (164.1, 75.4, 6.0, 23.3, 16.9, 3.3),
        (153.0, 81.8, 21.6, 25.8, 19.3, 9.6), (161.7, 71.6, 5.9, 21.4, 13.9, 3.4), (145.7, 73.2, 11.6, 27.2, 22.9, 5.7),
        (179.2, 84.6, 13.8, 27.4, 14.3, 3.7), (151.3, 65.3, 11.6, 20.9, 9.2, 4.3), (150.3, 75.0, 12.5, 27.1, 19.5, 4.2),
        (150.4, 74.0, 12.2, 23.2, 15.9, 4.7), (160.8, 83.6, 54.8, 26.8, 19.5, 14.7), (144.7, 70.5, 15.7, 30.5, 24.4, 7.5),
        (212.2, 88.6, 16.3, 27.8, 22.7, 7.7), (182.1, 84.2, 10.0, 25.8, 18.9, 3.8), (174.7, 87.3, 14.7, 26.5, 15.4, 4.2),
        (182.0, 97.3, 22.9, 23.0, 17.1, 4.8), (148.0, 77.7, 20.9, 28.7, 20.6, 7.4), (143.5, 77.7, 32.3, 29.1, 19.0, 10.9),
        (193.4, 95.7, 65.1, 25.7, 24.7, 23.0), (165.8, 68.8, 4.2, 28.6, 24.8, 4.0), (150.5, 76.8, 15.9, 24.6, 18.9, 6.9),
        (166.9, 91.8, 21.6, 24.0, 21.0, 6.9), (135.8, 75.5, 41.7, 25.3, 16.9, 9.8), (183.6, 99.3, 69.8, 27.0, 25.6, 26.0),
        (166.7, 86.8, 61.4, 23.1, 21.4, 21.7), (194.1, 112.5, 69.1, 22.4, 19.1, 15.8), (172.4, 85.4, 12.6, 21.2, 16.2, 4.8),
    ]
)
COLOUR_CHOLESKY = np.linalg.cholesky(np.cov(REAL_COLOUR.T, bias=True))  # inter-image SD of the means: R 23, G 14, B 20
COLOUR_JITTER = 0.25
# A jittered draw must stay within the real ranges (redrawn otherwise): per-image ratios of mean G and B to mean
# R (real G/R 0.32-0.61, B/R 0.01-0.46) and the hue of the mean colour (OpenCV scale, real 6.7-14.8).
GREEN_RED_RANGE = (0.31, 0.62)
BLUE_RED_MAX = 0.47
MEAN_HUE_RANGE = (6.5, 15.0)
COLOUR_LOW = np.array([70.0, 25.0, 1.0, 10.0, 6.0, 1.5])
# Bounds of the per-channel power in :func:`calibrate_colour`.
POWER_RANGE = (0.3, 3.0)
# How steeply green follows red across the illumination in the calibrated image (d log G / d log R): real
# photographs, median 1.37 at the scale of the illumination (p10-p90 0.96-1.67). With it the median hue climbs with
# brightness as in the real photographs (OpenCV hue by V band <10, 10-25, 25-50, 50-75, 75-90, >90 %: real 10.8,
# 11.1, 11.4, 11.9, 12.6, 13.3; synthetic 10.5, 11.1, 11.6, 12.1, 12.5, 13.0; before, a flat 12.0 ... 11.7), and
# green's SD comes out as real (20.9 against 20.7).
GREEN_SLOPE = 1.4
# Typical ratio (B, G, R) of the finished image's mean to that of its background alone, and of its red SD to the
# background's (the disc, vessels and lesions painted on it darken it a little and add spread): the background
# is calibrated to the target divided by these, so that the finished image lands on the target.
STRUCTURE_MEAN = np.array([1.03, 0.99, 1.0])
STRUCTURE_SPREAD = 1.15
COLOUR_HIGH = np.array([235.0, 140.0, 110.0, 50.0, 45.0, 40.0])

# Disc rim and cup tones at full opacity (the rim is painted at 0.65-0.85, the cup at 0.6-0.85 on top of it): red
# and blue as ratios to what they are painted on, green as a share of the new red (G/R), nudged by the image's
# own G/R (a yellower image has a yellower disc). Real discs are orange-pink with red near clipping, not yellow:
# inside the OD mask the median R and B are about 1.5 and 2.6 times the background's and G/R about 0.55 (hue 13.7,
# saturation 204); in the brightest (cup) part G/R is about 0.73.
DISC_RIM = {"red": 1.7, "blue": 3.2, "green_red": 0.58}
DISC_CUP = {"red": 1.1, "blue": 1.5, "green_red": 0.76}
TYPICAL_GREEN_RED = 0.48

# Vessel calibre at 4288 wide (px): main veins ~26 where they leave the disc, arteries ~18; every vessel tapers to
# VESSEL_TAPER of its starting width, and a branch starts at 0.45-0.7 of its parent's width where it leaves it.
VEIN_WIDTH = 26.0
ARTERY_WIDTH = 18.0
VESSEL_TAPER = 0.3
# Darkening of B, G, R at a vessel's axis (share of the background lost): red barely drops, green and blue do, so
# vessels read darker red, not brown (real vessel pixels keep ~0.94 of the surrounding red, ~0.75 of the green and
# ~0.8 of the blue).
VEIN_DARK = np.array([0.26, 0.33, 0.07], dtype=np.float32)
ARTERY_DARK = np.array([0.18, 0.23, 0.04], dtype=np.float32)
# Central light reflex along the widest vessels: share of the darkening lifted on the axis.
REFLEX = 0.45
REFLEX_MIN_WIDTH = 14.0  # at 4288; narrower vessels show none

BACKGROUND_BGR = np.array([0.10, 0.33, 0.80], dtype=np.float32)
# Blue in the calibrated image: d log B / d log R across the illumination = a + b * B/R, clipped to [lo, hi].
# Real photographs with little blue barely follow the light in blue (median slope 0.88 over all images), the pink
# ones (B/R ~0.4) as steeply as green (1.58); letting blue's whole spread ride on the light would make bright areas
# bluish and dim ones olive.
BLUE_SLOPE = (0.9, 2.5, 0.9, 1.8)
# Amplitude of the broad patches in which green and blue run higher or lower than red.
HUE_PATCHES = 0.07


def sample_geometry(rng: np.random.Generator, width: int) -> Geometry:
    """Draw one eye: side, field of view, disc and fovea, all at the target width."""
    height = height_for(width)
    eye = "left" if rng.random() < 0.5 else "right"
    scale = width / 4288
    diameter = float(np.clip(rng.normal(DISC_DIAMETER_MEDIAN, DISC_DIAMETER_SD), *DISC_DIAMETER_RANGE)) * scale
    disc_x = (DISC_X[eye] + rng.normal(0, 0.012)) * width
    disc_y = (DISC_Y + rng.normal(0, 0.025)) * height
    sign = 1 if eye == "left" else -1
    fovea_x = disc_x + sign * rng.uniform(*FOVEA_DISC_DIAMETERS) * diameter
    fovea_y = disc_y + rng.uniform(*FOVEA_BELOW_DISC_DIAMETERS) * diameter
    return Geometry(
        width=width,
        height=height,
        fov_x=(FOV_CENTRE_X + rng.normal(0, 0.0015)) * width,
        fov_y=height / 2 + rng.normal(0, 0.003) * height,
        fov_r=(FOV_RADIUS + rng.normal(0, 0.0015)) * width,
        eye=eye,
        disc_x=disc_x,
        disc_y=disc_y,
        disc_diameter=diameter,
        fovea_x=fovea_x,
        fovea_y=fovea_y,
    )


def inside_fov(geometry: Geometry, x: np.ndarray | float, y: np.ndarray | float, margin: float = 0.0):
    """Whether points lie inside the circular field of view shrunk by ``margin`` (a fraction of its radius)
    and inside the image (the circle is clipped at top and bottom)."""
    r = np.hypot(np.asarray(x) - geometry.fov_x, np.asarray(y) - geometry.fov_y)
    edge = geometry.height * margin * 0.5
    return (r < geometry.fov_r * (1 - margin)) & (np.asarray(y) > edge) & (np.asarray(y) < geometry.height - 1 - edge)


def fov_alpha(geometry: Geometry) -> np.ndarray:
    """Anti-aliased field-of-view matte (float32, 1 inside), with the camera's tabs on the right edge."""
    h, w = geometry.height, geometry.width
    matte = np.zeros((h, w), np.uint8)
    shift = 4
    f = 1 << shift
    cv2.circle(matte, (round(geometry.fov_x * f), round(geometry.fov_y * f)), round(geometry.fov_r * f), 255, -1, cv2.LINE_AA, shift)
    def rim_x(y: float) -> float:
        return geometry.fov_x + math.sqrt(max(geometry.fov_r**2 - (y - geometry.fov_y) ** 2, 0.0))

    for y0, y1, out in FOV_TABS:
        # A tooth: leaves the circle at its top with a slanted edge, runs down vertically, steps back in.
        ya, yb = y0 * h, y1 * h
        x1 = geometry.fov_x + out * w
        top = rim_x(ya)
        pts = [[top - 0.01 * w, ya], [top, ya], [x1 - 0.004 * w, ya + 0.3 * (yb - ya)], [x1, ya + 0.45 * (yb - ya)],
               [x1, yb], [rim_x(yb) - 0.01 * w, yb]]
        cv2.fillPoly(matte, [(np.array(pts) * f).round().astype(np.int32)], 255, cv2.LINE_AA, shift)
    # Soften like an optical edge seen through a downscale (the real edge spans a few pixels at 1024).
    return cv2.GaussianBlur(matte.astype(np.float32) / 255.0, (0, 0), max(0.5, 0.7 * w / 1024))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Unit-variance-ish smooth noise: a coarse random grid upsampled bicubically."""
    h, w = shape
    gh, gw = max(2, round(cells * h / w)), cells
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def illumination(rng: np.random.Generator, geometry: Geometry) -> np.ndarray:
    """Flash fall-off: a broad glow around an off-centre hot spot, darker towards the rim, with a slight tilt."""
    h, w = geometry.height, geometry.width
    sh, sw = max(8, h // 8), max(8, w // 8)
    ys, xs = np.mgrid[0:sh, 0:sw].astype(np.float32)
    xs = (xs + 0.5) * w / sw
    ys = (ys + 0.5) * h / sh
    cx = geometry.fov_x + rng.normal(0, 0.12) * geometry.fov_r
    cy = geometry.fov_y + rng.normal(0, 0.10) * geometry.fov_r
    r = np.hypot(xs - cx, ys - cy) / geometry.fov_r
    fall = 1.0 - rng.uniform(0.25, 0.45) * np.clip(r, 0, 1.4) ** rng.uniform(1.4, 2.4)
    # The flash's broad glow: real photographs have a bright tail (the lit centre), not just a dark rim.
    fall += rng.uniform(0.12, 0.25) * np.exp(-(r**2) / (2 * rng.uniform(0.3, 0.45) ** 2))
    tilt = 1.0 + rng.uniform(-0.08, 0.08) * (xs - geometry.fov_x) / geometry.fov_r + rng.uniform(-0.06, 0.06) * (ys - geometry.fov_y) / geometry.fov_r
    small = (fall * tilt).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def blue_slope(target: np.ndarray) -> float:
    """How steeply blue follows red across the illumination (d log B / d log R) in an image calibrated to
    ``target``: barely when the image has little blue, about as steeply as green in the pink ones."""
    return float(np.clip(BLUE_SLOPE[0] + BLUE_SLOPE[1] * target[2] / target[0], *BLUE_SLOPE[2:]))


def background(rng: np.random.Generator, geometry: Geometry, light: np.ndarray) -> np.ndarray:
    """Orange-red retina with choroidal mottling, lit by ``light`` (float BGR, before :func:`calibrate_colour`,
    which makes green fall off faster than red: the dim rim redder, the lit centre yellower)."""
    shape = (geometry.height, geometry.width)
    mottle = 1.0 + 0.015 * _smooth_noise(rng, shape, 24) + 0.012 * _smooth_noise(rng, shape, 90)
    tint = BACKGROUND_BGR * np.array([rng.uniform(0.8, 1.25), rng.uniform(0.9, 1.1), 1.0], np.float32)
    lit = np.maximum(light * mottle, 0.02)  # the fall-off goes negative well outside the field of view
    img = lit[..., None] * tint
    # A slightly independent red layer, so the channels do not move in lockstep, and broad patches where green
    # and blue run higher or lower: real retinas are yellower in places and redder in others.
    img[..., 2] *= 1.0 + 0.015 * _smooth_noise(rng, shape, 40)
    patches = HUE_PATCHES * _smooth_noise(rng, shape, 5)
    img[..., 1] *= 1.0 + patches
    img[..., 0] *= 1.0 + 0.5 * patches
    return img


def _gaussian_spot(geometry: Geometry, x: float, y: float, sigma: float) -> tuple[np.ndarray, tuple[slice, slice]]:
    """exp(-d^2 / 2 sigma^2) around (x, y), restricted to a 3.5-sigma window (returned with its slices)."""
    r = 3.5 * sigma
    x0, x1 = max(0, int(x - r)), min(geometry.width, int(x + r) + 1)
    y0, y1 = max(0, int(y - r)), min(geometry.height, int(y + r) + 1)
    ys, xs = np.ogrid[y0:y1, x0:x1]
    spot = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)).astype(np.float32)
    return spot, (slice(y0, y1), slice(x0, x1))


def paint_macula(rng: np.random.Generator, img: np.ndarray, geometry: Geometry) -> None:
    """A darker, redder-brown macula with a darker foveal pit."""
    dd = geometry.disc_diameter
    spot, win = _gaussian_spot(geometry, geometry.fovea_x, geometry.fovea_y, 0.55 * dd)
    depth = rng.uniform(0.18, 0.32)
    img[win] *= 1.0 - depth * spot[..., None] * np.array([1.0, 1.0, 0.7], np.float32)
    pit, win = _gaussian_spot(geometry, geometry.fovea_x, geometry.fovea_y, 0.12 * dd)
    img[win] *= 1.0 - 0.25 * pit[..., None] * np.array([0.9, 0.9, 0.6], np.float32)


def disc_shape(rng: np.random.Generator, geometry: Geometry) -> tuple[float, float, float]:
    """The disc's ellipse semi-axes (x, y) and tilt in degrees: a little taller than wide, like real discs."""
    r = geometry.disc_diameter / 2
    return r * rng.uniform(0.93, 1.0), r * rng.uniform(1.0, 1.08), rng.uniform(-12, 12)


def _window(geometry: Geometry, x: float, y: float, r: float) -> tuple[slice, slice, float, float]:
    """Slices of the square window of half-size ``r`` around (x, y), and (x, y) in window coordinates."""
    x0, x1 = max(0, int(x - r)), min(geometry.width, int(x + r) + 1)
    y0, y1 = max(0, int(y - r)), min(geometry.height, int(y + r) + 1)
    return slice(y0, y1), slice(x0, x1), x - x0, y - y0


def _tone(view: np.ndarray, alpha: np.ndarray, tone: dict[str, float], strength: float) -> None:
    """Blend ``view`` (BGR 0-255, in place) by ``alpha`` towards a disc tone (see ``DISC_RIM``)."""
    b, g, r = view[..., 0], view[..., 1], view[..., 2]
    red = np.minimum(r * tone["red"] * strength, 255.0)
    green_red = tone["green_red"] * np.power(np.clip(g / np.maximum(r, 1.0) / TYPICAL_GREEN_RED, 0.5, 2.0), 0.3)
    target = np.stack([b * tone["blue"] * strength, red * green_red, red], axis=-1)
    view += alpha[..., None] * (target - view)


def paint_disc(rng: np.random.Generator, img: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Pale orange-pink disc with a paler cup and a faint halo; returns its hard mask (uint8 0/1)."""
    h, w = geometry.height, geometry.width
    dd = geometry.disc_diameter
    ax, ay, angle = disc_shape(rng, geometry)
    shift = 2
    f = 1 << shift
    ys, xs, wx, wy = _window(geometry, geometry.disc_x, geometry.disc_y, 1.2 * dd)
    view = img[ys, xs]

    halo, win = _gaussian_spot(geometry, geometry.disc_x, geometry.disc_y, 0.45 * dd)
    img[win] *= 1.0 + 0.12 * halo[..., None]

    mask_win = np.zeros(view.shape[:2], np.uint8)
    centre = (round(wx * f), round(wy * f))
    cv2.ellipse(mask_win, centre, (round(ax * f), round(ay * f)), angle, 0, 360, 1, -1, cv2.LINE_8, shift)
    rim = cv2.GaussianBlur(mask_win.astype(np.float32), (0, 0), max(0.6, 0.04 * dd))
    # Paler on the temporal side, as real discs are.
    ramp = np.linspace(-1, 1, view.shape[1], dtype=np.float32)[None, :] * geometry.temporal_sign
    alpha = rim * rng.uniform(0.65, 0.85) * (1 + 0.12 * ramp)
    _tone(view, alpha, DISC_RIM, rng.uniform(0.9, 1.08))

    cup = np.zeros(view.shape[:2], np.float32)
    k = rng.uniform(0.3, 0.5)
    cup_centre = (round((wx + geometry.temporal_sign * rng.uniform(0, 0.12) * dd) * f), round(wy * f))
    cv2.ellipse(cup, cup_centre, (round(ax * k * f), round(ay * k * f)), angle, 0, 360, 1.0, -1, cv2.LINE_AA, shift)
    cup = cv2.GaussianBlur(cup, (0, 0), max(0.8, 0.08 * dd)) * rng.uniform(0.6, 0.85)
    _tone(view, cup, DISC_CUP, 1.0)

    mask = np.zeros((h, w), np.uint8)
    mask[ys, xs] = mask_win
    return mask


# --- vessels -----------------------------------------------------------------------------------------------------


def _walk(rng: np.random.Generator, x: float, y: float, heading: float, steps: int, step: float, wiggle: float) -> np.ndarray:
    """A smooth random walk: the turning rate is an AR(1) process, so paths bend without kinks."""
    turn = np.empty(steps, np.float64)
    noise = rng.normal(0, wiggle, steps)
    acc = 0.0
    for i in range(steps):  # short loop (a few hundred steps); keeps the turning smooth
        acc = 0.8 * acc + noise[i]
        turn[i] = acc
    angles = heading + np.cumsum(turn)
    pts = np.empty((steps + 1, 2))
    pts[0] = (x, y)
    pts[1:, 0] = x + np.cumsum(step * np.cos(angles))
    pts[1:, 1] = y + np.cumsum(step * np.sin(angles))
    return pts


def _clip_path(pts: np.ndarray, geometry: Geometry, avoid_fovea: float) -> np.ndarray:
    """The path up to where it leaves the field of view or enters the foveal avascular zone."""
    r = np.hypot(pts[:, 0] - geometry.fov_x, pts[:, 1] - geometry.fov_y)
    near_fovea = np.hypot(pts[:, 0] - geometry.fovea_x, pts[:, 1] - geometry.fovea_y) < avoid_fovea
    bad = (r > geometry.fov_r * 1.02) | near_fovea | (pts[:, 1] < -5) | (pts[:, 1] > geometry.height + 5)
    stop = int(np.argmax(bad)) if bad.any() else len(pts)
    return pts[:stop]


def _arcade(rng: np.random.Generator, geometry: Geometry, upper: bool, spread: float) -> np.ndarray:
    """A temporal arcade: leaves the disc vertically and curves around the macula towards the temporal rim."""
    dd = geometry.disc_diameter
    s = geometry.temporal_sign
    a = rng.uniform(4.0, 5.0) * dd
    b = (rng.uniform(1.7, 2.2) + spread) * dd
    cx = geometry.disc_x + s * a
    t = np.linspace(0.0, 1.9, 240) ** 1.15
    # Gentle bends along the whole arcade, plus a finer waviness.
    wobble = 0.05 * dd * np.interp(t, np.linspace(0, t[-1], 9), rng.normal(0, 1, 9))
    wobble += 0.025 * dd * np.interp(t, np.linspace(0, t[-1], 30), rng.normal(0, 1, 30))
    x = cx - s * (a + wobble) * np.cos(t)
    y = geometry.disc_y + (-1 if upper else 1) * (b + wobble) * np.sin(t)
    return np.stack([x, y], axis=1)


def vessel_tree(rng: np.random.Generator, geometry: Geometry) -> list[tuple[np.ndarray, float, str]]:
    """Vessels as (points, starting width in px at this size, 'v' vein or 'a' artery), main trunks first. Each
    vessel tapers to ``VESSEL_TAPER`` of its starting width (see :func:`draw_paths`)."""
    dd = geometry.disc_diameter
    scale = geometry.scale
    step = max(1.5, 0.004 * geometry.width)
    avoid = 0.45 * dd
    trunks: list[tuple[np.ndarray, float, str]] = []
    for upper in (True, False):
        for kind, width, spread in (("v", VEIN_WIDTH, 0.15), ("a", ARTERY_WIDTH, -0.1)):
            pts = _clip_path(_arcade(rng, geometry, upper, spread + rng.normal(0, 0.08)), geometry, avoid)
            trunks.append((pts, width * scale * rng.uniform(0.9, 1.1), kind))
    nasal = math.pi if geometry.temporal_sign > 0 else 0.0
    for offset in rng.uniform(-1.2, 1.2, rng.integers(3, 6)):
        heading = nasal + offset
        pts = _walk(rng, geometry.disc_x, geometry.disc_y, heading, int(3.5 * dd / step), step, 0.012)
        kind = "v" if rng.random() < 0.5 else "a"
        trunks.append((_clip_path(pts, geometry, avoid), (VEIN_WIDTH if kind == "v" else ARTERY_WIDTH) * scale * 0.7, kind))

    vessels = list(trunks)
    frontier = list(trunks)
    # Disc diameters between branches and how tortuous the branches are, by generation.
    for spacing, wiggle in ((0.7, 0.022), (0.9, 0.03), (1.2, 0.038), (1.6, 0.045)):
        children = []
        for pts, width, kind in frontier:
            if len(pts) < 6 or width * 0.45 < 0.6:
                continue
            seg = np.diff(pts, axis=0)
            length = float(np.hypot(seg[:, 0], seg[:, 1]).sum())
            n_branches = rng.poisson(length / (spacing * dd))
            for _ in range(n_branches):
                i = int(rng.integers(2, len(pts) - 2))
                dx, dy = pts[i + 1] - pts[i - 1]
                heading = math.atan2(dy, dx) + rng.choice((-1, 1)) * rng.uniform(0.35, 1.25)
                local = width * (1 - (1 - VESSEL_TAPER) * i / len(pts))
                child_width = local * rng.uniform(0.45, 0.7)
                steps = int(rng.uniform(1.0, 3.5) * dd * math.sqrt(child_width / (ARTERY_WIDTH * scale)) / step) + 4
                path = _clip_path(_walk(rng, pts[i, 0], pts[i, 1], heading, steps, step, wiggle), geometry, avoid)
                if len(path) >= 3:
                    children.append((path, child_width, kind))
        vessels.extend(children)
        frontier = children
    return vessels


def draw_paths(layer: np.ndarray, paths: list[tuple[np.ndarray, float]], taper: float = VESSEL_TAPER, chunk: int = 6) -> None:
    """Draw tapering polylines into a float layer: width shrinks to ``taper`` of its start along each path;
    paths thinner than a pixel are drawn one pixel wide but fainter, so fine vessels fade rather than vanish."""
    shift = 2
    f = 1 << shift
    for pts, width in paths:
        if len(pts) < 2:
            continue
        ipts = np.round(pts * f).astype(np.int32)
        n = len(ipts)
        for start in range(0, n - 1, chunk):
            seg = ipts[start : min(n, start + chunk + 1)]
            wid = width * (1 - (1 - taper) * start / n)
            thickness = max(1, int(round(wid)))
            value = float(min(1.0, wid))
            cv2.polylines(layer, [seg], False, value, thickness, cv2.LINE_AA, shift)


def paint_vessels(rng: np.random.Generator, img: np.ndarray, geometry: Geometry) -> None:
    """Darken the image along the vessel tree in the red direction (green and blue drop, red barely), veins
    more than arteries, with a faint central reflex on the widest ones."""
    h, w = geometry.height, geometry.width
    sigma = max(0.5, 1.0 * geometry.scale * 4)
    tree = vessel_tree(rng, geometry)
    layers = np.zeros((h, w, 3), np.float32)  # arteries, veins, reflex
    for channel, kind in enumerate("av"):
        layer = np.zeros((h, w), np.float32)
        draw_paths(layer, [(p, wd) for p, wd, k in tree if k == kind])
        layers[..., channel] = layer
    reflex = np.zeros((h, w), np.float32)
    wide = REFLEX_MIN_WIDTH * geometry.scale
    draw_paths(reflex, [(p[: int(0.6 * len(p))], 0.28 * wd) for p, wd, _ in tree if wd >= wide], taper=0.6)
    layers[..., 2] = reflex
    layers = cv2.GaussianBlur(layers, (0, 0), sigma)
    artery, vein = ARTERY_DARK * rng.uniform(0.85, 1.15), VEIN_DARK * rng.uniform(0.85, 1.15)
    # Transmission through both kinds, (1 - a * dark_a) * (1 - v * dark_v), linearised: they rarely overlap.
    # The reflex gives back part of the (mostly venous) darkening on the axis.
    matrix = np.zeros((3, 4), np.float32)  # the last column is a constant term
    matrix[:, 0], matrix[:, 1], matrix[:, 2], matrix[:, 3] = -artery, -vein, REFLEX * 0.5 * (artery + vein), 1.0
    np.multiply(img, np.maximum(cv2.transform(layers, matrix), 0.05), out=img)


def _mean_hue(rgb: np.ndarray) -> float:
    """OpenCV hue (0-180 scale) of an orange-red colour (R largest, B smallest)."""
    r, g, b = rgb
    return 30.0 * (g - b) / max(r - b, 1e-6)


def colour_target(rng: np.random.Generator) -> np.ndarray:
    """(mean R, G, B, SD R, G, B) for one image: a real image's colour statistics, jittered; redrawn (rarely)
    unless G/R, B/R and the hue of the mean colour stay in the real ranges."""
    for _ in range(30):
        row = REAL_COLOUR[rng.integers(len(REAL_COLOUR))]
        z = np.clip(rng.standard_normal(6), -2.0, 2.0)
        target = np.clip(row + COLOUR_JITTER * (COLOUR_CHOLESKY @ z), COLOUR_LOW, COLOUR_HIGH)
        r, g, b = target[:3]
        if (GREEN_RED_RANGE[0] <= g / r <= GREEN_RED_RANGE[1] and b / r <= BLUE_RED_MAX
                and MEAN_HUE_RANGE[0] <= _mean_hue(target[:3]) <= MEAN_HUE_RANGE[1]):
            break
    return target


def calibrate_colour(img: np.ndarray, fov: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Map the lit background, channel by channel, onto ``target`` (a draw from the real images' colour
    distribution, :func:`colour_target`) less what the disc, vessels and lesions painted on it afterwards typically
    add; returns BGR float in 0-255 (unclipped).

    Red: a power law (sets its relative spread, keeps black black) and a small affine correction to the exact mean
    and SD. Green and blue: a power law that makes them follow red across the light as steeply as real photographs
    do (d log G / d log R about 1.4, :func:`blue_slope` for blue), then a gain to the mean; their spread follows
    from that slope and the painted structure. (A per-channel stretch to each SD would need large offsets, and an
    offset darkens dim pixels faster in one channel than another: vessels and the rim turn brown or olive.)"""
    mean_bgr = target[2::-1] / STRUCTURE_MEAN
    red_spread = target[3] / target[0] / STRUCTURE_SPREAD  # relative spread (SD / mean) wanted for red
    inside = (fov > 0.5).astype(np.uint8)
    m, s = (v.ravel() for v in cv2.meanStdDev(img, mask=inside))
    red = float(np.clip(red_spread / (s[2] / max(m[2], 1e-6)), *POWER_RANGE))
    slopes = np.array([blue_slope(target), GREEN_SLOPE, 1.0])
    power = np.clip(slopes * red, *POWER_RANGE)
    out = cv2.log(np.maximum(img, 1e-4))
    out = cv2.exp(cv2.multiply(out, tuple(float(p) for p in power) + (0.0,)))
    m, s = (v.ravel() for v in cv2.meanStdDev(out, mask=inside))
    gain = mean_bgr / np.maximum(m, 1e-6)
    offset = np.zeros(3)
    gain[2] = target[3] / STRUCTURE_SPREAD / (s[2] + 1e-6)
    offset[2] = mean_bgr[2] - m[2] * gain[2]
    matrix = np.zeros((3, 4), np.float32)
    matrix[:, :3] = np.diag(gain)
    matrix[:, 3] = offset
    return cv2.transform(out, matrix)
