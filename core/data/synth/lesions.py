"""Lesions: where they go, how big they are, and how they look and are masked.

Sizes and counts come from the connected components of the real training masks (4288 wide, pixels):
  MA  area median 235 (p10 100, p90 552), 35 per image (9-102): tiny dark red dots;
  HE  area median 1485 (p10 428, p90 8778), 22 per image (4-53): dark red blots and flame shapes;
  EX  area median 218 (p10 63, p90 1344), 74 per image (18-382), in clusters and rings: many small bright
      yellow flecks with crisp edges and varying brightness, the bigger ones granular clumps;
  SE  area median 8489 (p10 3127, p90 26286), 4 per image (1-8): pale fluffy cotton-wool spots.
Areas are drawn from log-normals fitted to those quantiles and scaled by (width / 4288)^2; every lesion keeps at
least a one-pixel radius so that it survives at small widths. Lesions are painted on the colour-calibrated image as
per-channel ratios to the local background (see ``MA_DARK`` ... ``SE_RATIO``). Neovascularisation (NV) has no IDRiD mask: it is
drawn as tangles of fine tortuous vessels on or near the disc and only drives the DR grade.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from core.data.synth.canvas import draw_paths, inside_fov
from core.data.synth.grading import QUADRANTS, exudate_distance_to_fovea
from core.data.synth.records import Geometry, Lesion

# (median area at 4288 wide in px^2, log-normal sigma, cap)
# The MA median sits off the measured component median: drawn MAs are rasterised at least a pixel wide. Exudate
# deposits are drawn near the real component median (small flecks, the bigger ones as clumps of flecks) but about
# twice as many as real components per image (median 160 in the segmentation half), because drawn flecks merge
# into confluent plaques less often than real ones; with that the area fractions match (docs/synthetic.md).
MA_AREA = (170.0, 0.67, 2000.0)
HE_AREA = (1485.0, 1.18, 60000.0)
EX_AREA = (200.0, 1.25, 30000.0)
SE_AREA = (9500.0, 0.83, 55000.0)
# Exudate deposits above this area (at 4288) are drawn as clumps of smaller flecks rather than one polygon.
EX_CLUMP_AREA = 1000.0
# Now and then a large blot haemorrhage, the real half's heavy tail (one real image has 15 % of its area in HE).
LARGE_HE_AREA = (60000.0, 0.8, 400000.0)

# Darkening (B, G, R: share of the background lost) of red lesions and the ratios (B, G, R) to the background of
# bright ones, at full opacity. Red lesions darken green and blue much more than red (dark red, not brown or
# black); exudates are bright yellow (red and green well up), cotton-wool spots paler and whiter. Measured on the
# real training half against a local median background (darkest tenth of MA/HE pixels, brightest tenth of
# EX/SE): MA R 0.93 G 0.78 B 0.73, HE 0.90 0.71 0.80, EX 1.21 1.67 0.88, SE 1.10 1.47 1.39 (all blurred towards 1
# by the quarter-size decoding and by masks drawn generously around the lesions).
MA_DARK = np.array([0.30, 0.33, 0.08], np.float32)
HE_DARK = np.array([0.28, 0.40, 0.11], np.float32)
NV_DARK = np.array([0.32, 0.42, 0.10], np.float32)
EX_RATIO = np.array([1.6, 2.8, 1.5], np.float32)
SE_RATIO = np.array([1.7, 1.45, 1.15], np.float32)

SHIFT = 2
F = 1 << SHIFT


def _lognormal(rng: np.random.Generator, median: float, sigma: float, cap: float, size: int | None = None):
    return np.minimum(median * np.exp(sigma * rng.standard_normal(size)), cap)


def lesion_count(rng: np.random.Generator, median: float, sigma: float, low: int, high: int) -> int:
    """A log-normal count, clipped to [low, high]."""
    return int(np.clip(round(median * math.exp(sigma * rng.standard_normal())), low, high))


# --- placement ---------------------------------------------------------------------------------------------------


def _allowed(geometry: Geometry, xs: np.ndarray, ys: np.ndarray, margin: float, avoid_disc: float) -> np.ndarray:
    off_disc = np.hypot(xs - geometry.disc_x, ys - geometry.disc_y) > avoid_disc * geometry.disc_diameter
    return inside_fov(geometry, xs, ys, margin) & off_disc


def place(
    rng: np.random.Generator,
    geometry: Geometry,
    n: int,
    around: tuple[float, float] | None = None,
    spread: float = 0.0,
    margin: float = 0.06,
    avoid_disc: float = 0.7,
    where=None,
) -> np.ndarray:
    """``n`` points inside the field of view and off the disc: Gaussian around ``around`` (SD ``spread`` px) or
    uniform; ``where(xs, ys)`` may restrict them further. Rejection-sampled in vectorised batches."""
    out: list[np.ndarray] = []
    got = 0
    for _ in range(200):
        if got >= n:
            break
        k = max(16, 3 * (n - got))
        if around is None:
            xs = rng.uniform(geometry.fov_x - geometry.fov_r, geometry.fov_x + geometry.fov_r, k)
            ys = rng.uniform(0, geometry.height, k)
        else:
            xs = around[0] + rng.normal(0, spread, k)
            ys = around[1] + rng.normal(0, spread, k)
        ok = _allowed(geometry, xs, ys, margin, avoid_disc)
        if where is not None:
            ok &= where(xs, ys)
        pts = np.stack([xs[ok], ys[ok]], axis=1)
        out.append(pts)
        got += len(pts)
    pts = np.concatenate(out)[:n] if out else np.zeros((0, 2))
    return pts


def _mixture(rng: np.random.Generator, geometry: Geometry, n: int, near: float, spread_dd: float) -> np.ndarray:
    """Points of which about ``near`` cluster around the fovea (posterior pole), the rest anywhere."""
    k = int(rng.binomial(n, near))
    fovea = (geometry.fovea_x, geometry.fovea_y)
    a = place(rng, geometry, k, fovea, spread_dd * geometry.disc_diameter)
    b = place(rng, geometry, n - k)
    return np.concatenate([a, b]) if len(a) or len(b) else np.zeros((0, 2))


# --- single lesions ----------------------------------------------------------------------------------------------


def microaneurysm(rng: np.random.Generator, geometry: Geometry, x: float, y: float) -> Lesion:
    area = float(_lognormal(rng, *MA_AREA)) * geometry.scale**2
    r = max(1.0, math.sqrt(area / math.pi))
    return Lesion("MA", float(x), float(y), r, ((float(x), float(y), r),))


def _ellipses_extent(x: float, y: float, ellipses: tuple) -> float:
    return max(math.hypot(cx - x, cy - y) + max(ax, ay) for cx, cy, ax, ay, _ in ellipses)


def haemorrhage(rng: np.random.Generator, geometry: Geometry, x: float, y: float, size: tuple = HE_AREA) -> Lesion:
    """A blot (one to three overlapping ellipses) or, one time in three, a flame along the nerve fibres."""
    area = float(_lognormal(rng, *size)) * geometry.scale**2
    x, y = float(x), float(y)
    if rng.random() < 0.2:
        # Flame: a streak along the nerve fibres (radial from the disc), broad at one end and frayed at the other.
        ratio = rng.uniform(2.5, 4.0)
        ax = max(1.5, math.sqrt(0.7 * area * ratio / math.pi))
        ay = max(0.8, ax / ratio)
        angle = math.atan2(y - geometry.disc_y, x - geometry.disc_x) + rng.normal(0, 0.15)
        ellipses = [(x, y, ax, ay, math.degrees(angle))]
        for step in (0.9, 1.6):
            tilt = angle + rng.normal(0, 0.12)
            ellipses.append((x + step * ax * math.cos(tilt), y + step * ax * math.sin(tilt), 0.6 * ax, max(0.8, ay * (1.1 - 0.4 * step)), math.degrees(tilt)))
        # Feathered: thin strands fanning out along the fibres from both ends.
        for end in (-1.0, 1.0):
            for _ in range(int(rng.integers(2, 4))):
                tilt = angle + rng.normal(0, 0.18)
                reach = end * rng.uniform(0.8, 1.9) * ax
                ellipses.append((x + reach * math.cos(tilt), y + reach * math.sin(tilt), rng.uniform(0.5, 0.9) * ax,
                                 max(0.6, ay * rng.uniform(0.15, 0.3)), math.degrees(tilt)))
        ellipses = tuple(ellipses)
    else:
        # Irregular blot: a core plus lobes of random size and direction, so no two look like the same bean.
        k = int(rng.integers(2, 6))
        r0 = math.sqrt(0.6 * area / math.pi)
        stretch = rng.uniform(1.0, 1.3)
        ellipses = [(x, y, max(1.0, r0 * stretch), max(1.0, r0 / stretch), rng.uniform(0, 180))]
        shares = rng.dirichlet(np.ones(k - 1)) * 0.4 * area
        for share in shares:
            rr = math.sqrt(share / math.pi)
            a = rng.uniform(0, 2 * math.pi)
            d = rng.uniform(0.5, 1.0) * r0
            lobe = rng.uniform(1.0, 1.6)
            ellipses.append((x + d * math.cos(a), y + d * math.sin(a), max(1.0, rr * lobe), max(1.0, rr / lobe), rng.uniform(0, 180)))
        ellipses = tuple(ellipses)
    return Lesion("HE", x, y, _ellipses_extent(x, y, ellipses), ellipses)


def hard_exudate(rng: np.random.Generator, geometry: Geometry, x: float, y: float, area: float) -> Lesion:
    """A sharp-edged fleck of about ``area`` px (at this size): a small, roundish irregular polygon, or, for the
    bigger deposits, a clump of two to four overlapping ones (a granular plaque). ``parts`` holds the polygons."""
    x, y = float(x), float(y)
    k = 1 if area < EX_CLUMP_AREA * geometry.scale**2 else int(rng.integers(2, 5))
    shares = rng.dirichlet(np.full(k, 2.0)) * area * (1.0 if k == 1 else 1.2)  # clumps overlap a little
    spread = 0.55 * math.sqrt(area / math.pi) if k > 1 else 0.0
    polygons, extent = [], 0.0
    for share in shares:
        cx, cy = (x + rng.normal(0, spread), y + rng.normal(0, spread)) if k > 1 else (x, y)
        r0 = max(0.8, math.sqrt(share / math.pi) / 0.95)
        n = int(rng.integers(8, 13))
        angles = np.sort(rng.uniform(0, 2 * math.pi, n))
        radii = r0 * rng.uniform(0.8, 1.15, n)
        px, py = cx + radii * np.cos(angles), cy + radii * np.sin(angles)
        polygons.append(tuple(zip(px.tolist(), py.tolist())))
        extent = max(extent, float(np.hypot(px - x, py - y).max()))
    return Lesion("EX", x, y, extent + 0.5, tuple(polygons))


def soft_exudate(rng: np.random.Generator, geometry: Geometry, x: float, y: float) -> Lesion:
    """A cotton-wool spot: a few overlapping ellipses, painted soft-edged."""
    area = float(_lognormal(rng, *SE_AREA)) * geometry.scale**2
    x, y = float(x), float(y)
    k = int(rng.integers(3, 7))
    r0 = math.sqrt(area / math.pi)
    ellipses = [(x, y, max(1.5, 0.75 * r0 * rng.uniform(1.0, 1.5)), max(1.0, 0.75 * r0 * rng.uniform(0.6, 1.0)), rng.uniform(0, 180))]
    for _ in range(k - 1):
        a = rng.uniform(0, 2 * math.pi)
        d = rng.uniform(0.2, 0.6) * r0
        rr = r0 * rng.uniform(0.3, 0.55)
        ellipses.append((x + d * math.cos(a), y + d * math.sin(a), max(1.0, rr * 1.2), max(1.0, rr / 1.2), rng.uniform(0, 180)))
    ellipses = tuple(ellipses)
    return Lesion("SE", x, y, _ellipses_extent(x, y, ellipses), ellipses)


def neovascular_tuft(rng: np.random.Generator, geometry: Geometry, x: float, y: float) -> Lesion:
    """Fine, tortuous, looping new vessels within a fraction of a disc diameter of (x, y)."""
    dd = geometry.disc_diameter
    radius = rng.uniform(0.3, 0.7) * dd
    step = max(0.8, 0.012 * dd)
    curves = []
    for _ in range(int(rng.integers(10, 24))):
        sx, sy = x + rng.normal(0, 0.35 * radius), y + rng.normal(0, 0.35 * radius)
        n = int(rng.integers(20, 60))
        turn = np.cumsum(rng.normal(0, 0.35, n))
        angles = rng.uniform(0, 2 * math.pi) + np.cumsum(turn * 0.5)
        px = sx + np.cumsum(step * np.cos(angles))
        py = sy + np.cumsum(step * np.sin(angles))
        keep = (np.hypot(px - x, py - y) < 1.3 * radius) & inside_fov(geometry, px, py, 0.02)
        stop = int(np.argmin(keep)) if not keep.all() else n
        if stop >= 3:
            curves.append(np.stack([px[:stop], py[:stop]], axis=1))
    if not curves:
        curves.append(np.array([[x - step, y], [x + step, y], [x + step, y + step]]))
    extent = max(float(np.hypot(c[:, 0] - x, c[:, 1] - y).max()) for c in curves)
    return Lesion("NV", float(x), float(y), extent, tuple(curves))


# --- groups ------------------------------------------------------------------------------------------------------


def microaneurysms(rng: np.random.Generator, geometry: Geometry, n: int) -> list[Lesion]:
    return [microaneurysm(rng, geometry, x, y) for x, y in _mixture(rng, geometry, n, 0.6, 1.6)]


def haemorrhages(rng: np.random.Generator, geometry: Geometry, n: int, large: float = 0.0) -> list[Lesion]:
    """``n`` haemorrhages, the first of them large with probability ``large``."""
    pts = _mixture(rng, geometry, n, 0.5, 2.0)
    big = rng.random() < large
    return [haemorrhage(rng, geometry, x, y, LARGE_HE_AREA if big and i == 0 else HE_AREA) for i, (x, y) in enumerate(pts)]


def haemorrhages_in_quadrants(rng: np.random.Generator, geometry: Geometry, per_quadrant: list[int]) -> list[Lesion]:
    """Haemorrhages spread over the four quadrants about the fovea (the severe-NPDR pattern); smaller than average,
    as the many blots of severe NPDR are."""
    lesions = []
    for name, n in zip(QUADRANTS, per_quadrant):
        def in_quadrant(xs, ys, name=name):
            superior = ys <= geometry.fovea_y
            temporal = (xs - geometry.fovea_x) * geometry.temporal_sign >= 0
            return (superior == name.startswith("supero")) & (temporal == name.endswith("temporal"))

        for x, y in place(rng, geometry, n, margin=0.05, where=in_quadrant):
            lesions.append(haemorrhage(rng, geometry, x, y, (700.0, HE_AREA[1], HE_AREA[2])))
    return lesions


def soft_exudates(rng: np.random.Generator, geometry: Geometry, n: int) -> list[Lesion]:
    mid = ((geometry.disc_x + geometry.fovea_x) / 2, (geometry.disc_y + geometry.fovea_y) / 2)
    pts = place(rng, geometry, n, mid, 1.6 * geometry.disc_diameter, avoid_disc=0.9)
    return [soft_exudate(rng, geometry, x, y) for x, y in pts]


def neovascularisation(rng: np.random.Generator, geometry: Geometry) -> list[Lesion]:
    """One to three tufts: on the disc (NVD) or along the arcades (NVE)."""
    dd = geometry.disc_diameter
    tufts = []
    for _ in range(int(rng.integers(1, 4))):
        if rng.random() < 0.5:
            x, y = geometry.disc_x + rng.normal(0, 0.25 * dd), geometry.disc_y + rng.normal(0, 0.25 * dd)
        else:
            x = geometry.disc_x + geometry.temporal_sign * rng.uniform(0.5, 2.5) * dd
            y = geometry.disc_y + rng.choice((-1, 1)) * rng.uniform(1.4, 2.2) * dd
            if not inside_fov(geometry, x, y, 0.08):
                x, y = geometry.disc_x, geometry.disc_y
        tufts.append(neovascular_tuft(rng, geometry, x, y))
    return tufts


def _cluster_points(rng: np.random.Generator, geometry: Geometry, centre: tuple[float, float], n: int) -> np.ndarray:
    """Deposit positions of one exudate cluster: a circinate ring (partial or whole) or a plaque."""
    dd = geometry.disc_diameter
    cx, cy = centre
    if rng.random() < 0.45:
        ring = rng.uniform(0.35, 0.85) * dd
        start, span = rng.uniform(0, 2 * math.pi), rng.uniform(math.pi, 2 * math.pi)
        theta = start + span * rng.random(n)
        rr = ring * (1 + rng.normal(0, 0.1, n))
        xs, ys = cx + rr * np.cos(theta), cy + rr * np.sin(theta)
    else:
        sd = rng.uniform(0.12, 0.4) * dd
        xs, ys = cx + rng.normal(0, sd, n), cy + rng.normal(0, sd, n)
    ok = _allowed(geometry, xs, ys, 0.04, 0.7)
    return np.stack([xs[ok], ys[ok]], axis=1)


def hard_exudates(rng: np.random.Generator, geometry: Geometry, total: int, dme: int | None = None) -> list[Lesion]:
    """About ``total`` deposits in clusters. ``dme`` steers where they go: 2 puts a cluster on the macula, 1 keeps
    every deposit beyond one disc diameter (plus a margin) of the fovea, None lets the macula attract one cluster
    more often than not, as in the real segmentation half."""
    dd = geometry.disc_diameter
    fovea = (geometry.fovea_x, geometry.fovea_y)
    n_clusters = int(min(7, 1 + rng.poisson(total / 120)))
    sizes = np.maximum(1, np.round(rng.dirichlet(np.ones(n_clusters)) * total)).astype(int)
    scale2 = geometry.scale**2
    lesions: list[Lesion] = []
    for i, n in enumerate(sizes):
        if i == 0 and (dme == 2 or (dme is None and rng.random() < 0.6)):
            spread = 0.35 if dme == 2 else 1.0
            centre = tuple(place(rng, geometry, 1, fovea, spread * dd, avoid_disc=1.0)[0])
        elif dme == 1:
            far = place(rng, geometry, 1, where=lambda xs, ys: np.hypot(xs - fovea[0], ys - fovea[1]) > 2.0 * dd)
            centre = tuple(far[0])
        else:
            centre = tuple(place(rng, geometry, 1, avoid_disc=1.0)[0])
        pts = _cluster_points(rng, geometry, centre, int(n))
        areas = _lognormal(rng, *EX_AREA, size=len(pts)) * scale2
        for (x, y), area in zip(pts, areas):
            lesions.append(hard_exudate(rng, geometry, x, y, float(area)))
    if dme == 1:
        lesions = [e for e in lesions if exudate_distance_to_fovea(e, geometry) > 1.15 * dd]
    return lesions


# --- painting ----------------------------------------------------------------------------------------------------


def _ellipse(layer: np.ndarray, part: tuple, value: float, line: int) -> None:
    cx, cy, ax, ay, angle = part
    cv2.ellipse(layer, (round(cx * F), round(cy * F)), (max(1, round(ax * F)), max(1, round(ay * F))), float(angle), 0, 360, value, -1, line, SHIFT)


def _draw(kind: str, lesion: Lesion, mask: np.ndarray, alpha: np.ndarray, value: float) -> None:
    """Hard shape into the mask, anti-aliased shape of strength ``value`` into the painting layer."""
    if kind == "MA":
        x, y, r = lesion.parts[0]
        centre, radius = (round(x * F), round(y * F)), max(F, round(r * F))
        cv2.circle(mask, centre, radius, 1, -1, cv2.LINE_8, SHIFT)
        cv2.circle(alpha, centre, radius, value, -1, cv2.LINE_AA, SHIFT)
    elif kind in ("HE", "SE"):
        for part in lesion.parts:
            _ellipse(mask, part, 1, cv2.LINE_8)
            _ellipse(alpha, part, value, cv2.LINE_AA)
    elif kind == "EX":
        for polygon in lesion.parts:
            pts = np.round(np.array(polygon) * F).astype(np.int32)
            cv2.fillPoly(mask, [pts], 1, cv2.LINE_8, SHIFT)
            cv2.fillPoly(alpha, [pts], value, cv2.LINE_AA, SHIFT)


def _darken(img: np.ndarray, alpha: np.ndarray, dark: np.ndarray) -> None:
    """Multiply by (1 - alpha * dark), touching only the pixels a lesion reaches (lesions cover a few per cent)."""
    ys, xs = np.nonzero(alpha > 1e-3)
    a = np.minimum(alpha[ys, xs], 1.0)[:, None]
    img[ys, xs] *= 1.0 - a * dark


def _brighten(img: np.ndarray, alpha: np.ndarray, ratio: np.ndarray) -> None:
    """Multiply by 1 + alpha * (ratio - 1): towards ``ratio`` times the local background where alpha is 1."""
    ys, xs = np.nonzero(alpha > 1e-3)
    a = np.minimum(alpha[ys, xs], 1.0)[:, None]
    img[ys, xs] *= 1.0 + a * (ratio - 1.0)


def paint_lesions(rng: np.random.Generator, img: np.ndarray, geometry: Geometry, lesions: list[Lesion], fov: np.ndarray) -> dict[str, np.ndarray]:
    """Paint ``lesions`` onto ``img`` (float BGR 0-255, in place); return the mask (uint8 0/1) of each lesion kind drawn,
    clipped to the field of view ``fov`` (bool)."""
    h, w = geometry.height, geometry.width
    masks: dict[str, np.ndarray] = {}
    # Haemorrhage edges: a crisp-ish core plus a wide soft fringe, so blots fade into the retina.
    soft, fringe = max(0.5, 4.0 * geometry.scale), max(0.8, 14.0 * geometry.scale)
    sharp = max(0.4, 0.6 * geometry.width / 1024)  # exudates: crisp edges
    for kind, strength, blur in (("HE", (0.6, 1.0), soft), ("MA", (0.7, 1.0), 0.55), ("EX", (0.45, 1.0), sharp)):
        chosen = [les for les in lesions if les.kind == kind]
        if not chosen:
            continue
        mask = np.zeros((h, w), np.uint8)
        alpha = np.zeros((h, w), np.float32)
        for lesion, value in zip(chosen, rng.uniform(*strength, len(chosen))):
            _draw(kind, lesion, mask, alpha, float(value))
        if kind == "HE":
            # The wide fringe is blurred at half size (the same to the eye, a quarter of the work).
            half = cv2.resize(alpha, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)
            half = cv2.resize(cv2.GaussianBlur(half, (0, 0), fringe / 2), (w, h), interpolation=cv2.INTER_LINEAR)
            alpha = 0.6 * cv2.GaussianBlur(alpha, (0, 0), soft) + 0.4 * half
        else:
            alpha = cv2.GaussianBlur(alpha, (0, 0), blur)
        if kind == "EX":
            _brighten(img, alpha, 1.0 + (EX_RATIO - 1.0) * rng.uniform(0.85, 1.1))
        else:
            _darken(img, alpha, (HE_DARK if kind == "HE" else MA_DARK) * rng.uniform(0.9, 1.1))
        masks[kind] = mask
    chosen = [les for les in lesions if les.kind == "SE"]
    if chosen:
        mask = np.zeros((h, w), np.uint8)
        alpha = np.zeros((h, w), np.float32)
        for lesion in chosen:
            _draw("SE", lesion, mask, alpha, 1.0)
        # Fluffy: a blur of about a third of a typical spot's radius, then a soft cap on opacity.
        sigma = max(1.0, 0.3 * float(np.median([les.r for les in chosen])))
        alpha = cv2.GaussianBlur(alpha, (0, 0), sigma) * rng.uniform(0.5, 0.7)
        _brighten(img, alpha, SE_RATIO)
        masks["SE"] = mask
    tufts = [les for les in lesions if les.kind == "NV"]
    if tufts:
        layer = np.zeros((h, w), np.float32)
        width = max(1.0, 4.0 * geometry.scale)
        draw_paths(layer, [(curve, width) for tuft in tufts for curve in tuft.parts], taper=0.8)
        _darken(img, cv2.GaussianBlur(layer, (0, 0), 0.5) * 0.9, NV_DARK)
    for kind in masks:
        masks[kind] &= fov.astype(np.uint8)
    return masks
