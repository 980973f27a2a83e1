"""The healthy fundus: field of view, background, illumination, optic disc, macula and vessel tree.

Every constant is quoted at IDRiD's native 4288x2848 frame (or as a fraction of it) and was measured on the real
segmentation training half in ``../shared/idrid`` (see ``docs/synthetic.md``); the drawing happens directly at the
target width, so generation stays fast.

Images are built as float32 BGR in [0, 1]; :func:`calibrate_colour` maps the finished image onto colour
statistics drawn from the real images' distribution, so the "camera" varies from image to image like IDRiD's.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from core.data.synth.records import Geometry, height_for

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
# Fovea: about 2.5 disc diameters temporal to the disc centre and slightly below it.
FOVEA_DISC_DIAMETERS = (2.3, 2.7)
FOVEA_BELOW_DISC_DIAMETERS = (0.05, 0.35)

# Colour inside the field of view: per-image RGB means then RGB standard deviations (0-255), their mean over the
# 54 real training images and the Cholesky factor of their covariance. Sampling from it gives each synthetic image
# a "camera exposure" distributed like the real ones (inter-image SD of the means: R 23, G 14, B 20).
COLOUR_MEAN = np.array([167.5, 81.1, 23.2, 27.2, 20.7, 8.9])
COLOUR_CHOLESKY = np.array(
    [
        [23.285, 0.0, 0.0, 0.0, 0.0, 0.0],
        [9.667, 10.137, 0.0, 0.0, 0.0, 0.0],
        [1.798, 15.118, 13.977, 0.0, 0.0, 0.0],
        [-0.569, -0.500, 0.690, 4.505, 0.0, 0.0],
        [0.045, 1.345, 1.023, 3.478, 2.649, 0.0],
        [0.329, 4.317, 4.561, 1.324, 0.962, 1.692],
    ]
)
COLOUR_LOW = np.array([70.0, 25.0, 1.0, 10.0, 6.0, 1.5])
# Real per-image ratios of mean G and B to mean R: G/R 0.32-0.61 (median 0.50), B/R 0.01-0.46.
GREEN_RED_RANGE = (0.33, 0.58)
BLUE_RED_MAX = 0.45
COLOUR_HIGH = np.array([235.0, 140.0, 110.0, 50.0, 45.0, 40.0])

# Vessel calibre at 4288 wide (px): main veins ~28, arteries ~20.
VEIN_WIDTH = 28.0
ARTERY_WIDTH = 20.0
# Darkening of B, G, R where a vessel lies (veins are darker and bluer than arteries).
VEIN_DARK = np.array([0.45, 0.55, 0.25], dtype=np.float32)
ARTERY_DARK = np.array([0.30, 0.40, 0.12], dtype=np.float32)

BACKGROUND_BGR = np.array([0.10, 0.33, 0.80], dtype=np.float32)


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
    """Flash fall-off: bright near an off-centre hot spot, darker towards the rim, with a slight tilt."""
    h, w = geometry.height, geometry.width
    sh, sw = max(8, h // 8), max(8, w // 8)
    ys, xs = np.mgrid[0:sh, 0:sw].astype(np.float32)
    xs = (xs + 0.5) * w / sw
    ys = (ys + 0.5) * h / sh
    cx = geometry.fov_x + rng.normal(0, 0.12) * geometry.fov_r
    cy = geometry.fov_y + rng.normal(0, 0.10) * geometry.fov_r
    r = np.hypot(xs - cx, ys - cy) / geometry.fov_r
    fall = 1.0 - rng.uniform(0.25, 0.5) * np.clip(r, 0, 1.4) ** rng.uniform(1.8, 3.0)
    tilt = 1.0 + rng.uniform(-0.08, 0.08) * (xs - geometry.fov_x) / geometry.fov_r + rng.uniform(-0.06, 0.06) * (ys - geometry.fov_y) / geometry.fov_r
    small = (fall * tilt).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def background(rng: np.random.Generator, geometry: Geometry, light: np.ndarray) -> np.ndarray:
    """Orange-red retina with choroidal mottling, lit by ``light``."""
    shape = (geometry.height, geometry.width)
    mottle = 1.0 + 0.025 * _smooth_noise(rng, shape, 24) + 0.012 * _smooth_noise(rng, shape, 90)
    tint = BACKGROUND_BGR * np.array([rng.uniform(0.8, 1.25), rng.uniform(0.9, 1.1), 1.0], np.float32)
    img = (light * mottle)[..., None] * tint
    # A slightly independent red layer, so the channels do not move in lockstep.
    img[..., 2] *= 1.0 + 0.015 * _smooth_noise(rng, shape, 40)
    return img.astype(np.float32)


def _gaussian_spot(geometry: Geometry, x: float, y: float, sigma: float) -> tuple[np.ndarray, tuple[slice, slice]]:
    """exp(-d^2 / 2 sigma^2) around (x, y), restricted to a 3.5-sigma window (returned with its slices)."""
    r = 3.5 * sigma
    x0, x1 = max(0, int(x - r)), min(geometry.width, int(x + r) + 1)
    y0, y1 = max(0, int(y - r)), min(geometry.height, int(y + r) + 1)
    ys, xs = np.ogrid[y0:y1, x0:x1]
    spot = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)).astype(np.float32)
    return spot, (slice(y0, y1), slice(x0, x1))


def paint_macula(rng: np.random.Generator, img: np.ndarray, geometry: Geometry) -> None:
    """A darker, browner macula with a darker foveal pit."""
    dd = geometry.disc_diameter
    spot, win = _gaussian_spot(geometry, geometry.fovea_x, geometry.fovea_y, 0.55 * dd)
    depth = rng.uniform(0.18, 0.32)
    img[win] *= 1.0 - depth * spot[..., None] * np.array([0.9, 1.2, 0.75], np.float32)
    pit, win = _gaussian_spot(geometry, geometry.fovea_x, geometry.fovea_y, 0.12 * dd)
    img[win] *= 1.0 - 0.25 * pit[..., None] * np.array([0.8, 1.0, 0.6], np.float32)


def disc_shape(rng: np.random.Generator, geometry: Geometry) -> tuple[float, float, float]:
    """The disc's ellipse semi-axes (x, y) and tilt in degrees: a little taller than wide, like real discs."""
    r = geometry.disc_diameter / 2
    return r * rng.uniform(0.93, 1.0), r * rng.uniform(1.0, 1.08), rng.uniform(-12, 12)


def _window(geometry: Geometry, x: float, y: float, r: float) -> tuple[slice, slice, float, float]:
    """Slices of the square window of half-size ``r`` around (x, y), and (x, y) in window coordinates."""
    x0, x1 = max(0, int(x - r)), min(geometry.width, int(x + r) + 1)
    y0, y1 = max(0, int(y - r)), min(geometry.height, int(y + r) + 1)
    return slice(y0, y1), slice(x0, x1), x - x0, y - y0


def paint_disc(rng: np.random.Generator, img: np.ndarray, geometry: Geometry, light: np.ndarray) -> np.ndarray:
    """Bright yellowish disc with a paler cup and a faint halo; returns its hard mask (uint8 0/1)."""
    h, w = geometry.height, geometry.width
    dd = geometry.disc_diameter
    ax, ay, angle = disc_shape(rng, geometry)
    shift = 2
    f = 1 << shift
    ys, xs, wx, wy = _window(geometry, geometry.disc_x, geometry.disc_y, 1.2 * dd)
    view = img[ys, xs]
    local = float(light[int(np.clip(geometry.disc_y, 0, h - 1)), int(np.clip(geometry.disc_x, 0, w - 1))])
    gain = max(local, 0.3) ** 0.3

    halo, win = _gaussian_spot(geometry, geometry.disc_x, geometry.disc_y, 0.45 * dd)
    img[win] *= 1.0 + 0.12 * halo[..., None]

    mask_win = np.zeros(view.shape[:2], np.uint8)
    centre = (round(wx * f), round(wy * f))
    cv2.ellipse(mask_win, centre, (round(ax * f), round(ay * f)), angle, 0, 360, 1, -1, cv2.LINE_8, shift)
    rim = cv2.GaussianBlur(mask_win.astype(np.float32), (0, 0), max(0.6, 0.04 * dd))
    # Paler on the temporal side, as real discs are.
    ramp = np.linspace(-1, 1, view.shape[1], dtype=np.float32)[None, :] * geometry.temporal_sign
    alpha = rim * rng.uniform(0.65, 0.85) * (1 + 0.12 * ramp)
    rim_colour = np.array([0.30, 0.64, 1.0], np.float32) * rng.uniform(0.9, 1.05) * gain
    view[:] = view * (1 - alpha[..., None]) + rim_colour * alpha[..., None]

    cup = np.zeros(view.shape[:2], np.float32)
    k = rng.uniform(0.3, 0.5)
    cup_centre = (round((wx + geometry.temporal_sign * rng.uniform(0, 0.12) * dd) * f), round(wy * f))
    cv2.ellipse(cup, cup_centre, (round(ax * k * f), round(ay * k * f)), angle, 0, 360, 1.0, -1, cv2.LINE_AA, shift)
    cup = cv2.GaussianBlur(cup, (0, 0), max(0.8, 0.08 * dd)) * rng.uniform(0.5, 0.75)
    cup_colour = np.array([0.48, 0.80, 1.0], np.float32) * gain
    view[:] = view * (1 - cup[..., None]) + cup_colour * cup[..., None]

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
    wobble = 0.05 * dd * np.interp(t, np.linspace(0, t[-1], 9), rng.normal(0, 1, 9))
    x = cx - s * (a + wobble) * np.cos(t)
    y = geometry.disc_y + (-1 if upper else 1) * (b + wobble) * np.sin(t)
    return np.stack([x, y], axis=1)


def vessel_tree(rng: np.random.Generator, geometry: Geometry) -> list[tuple[np.ndarray, float, str]]:
    """Vessels as (points, width in px at this size, 'v' vein or 'a' artery), main trunks first."""
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
        pts = _walk(rng, geometry.disc_x, geometry.disc_y, heading, int(3.5 * dd / step), step, 0.008)
        kind = "v" if rng.random() < 0.5 else "a"
        trunks.append((_clip_path(pts, geometry, avoid), (VEIN_WIDTH if kind == "v" else ARTERY_WIDTH) * scale * 0.65, kind))

    vessels = list(trunks)
    frontier = list(trunks)
    for spacing in (0.9, 1.2, 1.6, 2.2):  # disc diameters between branches, by generation
        children = []
        for pts, width, kind in frontier:
            if len(pts) < 6 or width * 0.55 < 0.7:
                continue
            seg = np.diff(pts, axis=0)
            length = float(np.hypot(seg[:, 0], seg[:, 1]).sum())
            n_branches = rng.poisson(length / (spacing * dd))
            for _ in range(n_branches):
                i = int(rng.integers(2, len(pts) - 2))
                dx, dy = pts[i + 1] - pts[i - 1]
                heading = math.atan2(dy, dx) + rng.choice((-1, 1)) * rng.uniform(0.35, 1.25)
                child_width = width * rng.uniform(0.4, 0.6)
                steps = int(rng.uniform(1.0, 3.5) * dd * math.sqrt(child_width / (ARTERY_WIDTH * scale)) / step) + 4
                path = _clip_path(_walk(rng, pts[i, 0], pts[i, 1], heading, steps, step, 0.018), geometry, avoid)
                if len(path) >= 3:
                    children.append((path, child_width, kind))
        vessels.extend(children)
        frontier = children
    return vessels


def draw_paths(layer: np.ndarray, paths: list[tuple[np.ndarray, float]], taper: float = 0.4, chunk: int = 8) -> None:
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
    """Darken the image along the vessel tree, veins more than arteries."""
    h, w = geometry.height, geometry.width
    sigma = max(0.5, 1.2 * geometry.scale * 4)
    tree = vessel_tree(rng, geometry)
    layers = np.zeros((h, w, 2), np.float32)  # arteries, veins
    for channel, kind in enumerate("av"):
        layer = np.zeros((h, w), np.float32)
        draw_paths(layer, [(p, wd) for p, wd, k in tree if k == kind])
        layers[..., channel] = layer
    layers = cv2.GaussianBlur(layers, (0, 0), sigma)
    artery, vein = ARTERY_DARK * rng.uniform(0.85, 1.1), VEIN_DARK * rng.uniform(0.85, 1.1)
    # Transmission through both kinds, (1 - a * dark_a) * (1 - v * dark_v), linearised: they rarely overlap.
    matrix = np.zeros((3, 3), np.float32)
    matrix[:, 0], matrix[:, 1], matrix[:, 2] = -artery, -vein, 1.0
    ones = np.dstack([layers, np.ones((h, w), np.float32)])
    np.multiply(img, np.maximum(cv2.transform(ones, matrix), 0.05), out=img)


def calibrate_colour(rng: np.random.Generator, img: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """Map each channel affinely so that, inside the field of view, its mean and SD match a draw from the real
    images' colour distribution; returns BGR float in 0-255 (unclipped)."""
    for _ in range(20):  # the Gaussian fit allows olive casts (high G/R, low B) that no real image has
        z = np.clip(rng.standard_normal(6), -2.0, 2.0)
        target = np.clip(COLOUR_MEAN + COLOUR_CHOLESKY @ z, COLOUR_LOW, COLOUR_HIGH)
        if GREEN_RED_RANGE[0] <= target[1] / target[0] <= GREEN_RED_RANGE[1] and target[2] / target[0] <= BLUE_RED_MAX:
            break
    mean_rgb, std_rgb = target[:3], target[3:]
    inside = (fov > 0.5).astype(np.uint8)
    m, s = (v.ravel() for v in cv2.meanStdDev(img, mask=inside))  # BGR order
    gain = std_rgb[::-1] / (s + 1e-6)
    matrix = np.zeros((3, 4), np.float32)
    matrix[:, :3] = np.diag(gain)
    matrix[:, 3] = mean_rgb[::-1] - m * gain
    return cv2.transform(img, matrix)
